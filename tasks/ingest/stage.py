"""The ingest stage: the landing files of many dates -> one bronze partition per date.

A date is skipped, without reading a file, when its listing (names, sizes and metadata
tokens: mtime on local disks, ETag on object stores) is the one its bronze stamp
(tasks.lake.stamps) recorded; when the listing changed, the files are hashed and a date
whose content hashes are unchanged is still skipped. Any other date is re-ingested whole.
Changed dates are read in chunks of about `CHUNK_BYTES` of text, file by file as streams
(tasks.ingest.readers), and each date's rows go to its own Lake partition writer row
group by row group, so memory follows a piece of lines, not a file or a day. A file that
fails after some of its rows were written makes its date be read again without it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from schemas import tables
from tasks.config import Settings
from tasks.ingest.landed import Landing, file_hashes, list_landing, text_weight
from tasks.ingest.readers import READ_COLUMNS, ReadOptions, ReadReport, read_files
from tasks.lake.stamps import fingerprint, read_stamp, write_stamp
from tasks.lake.storage import Lake, PartitionWriter

# Part of every bronze fingerprint: bump it when the same files must give other rows.
MANIFEST_VERSION = 2
# Text bytes parsed together (gzip'd payloads count ~6x their size: `landed.text_weight`).
CHUNK_BYTES = 64 << 20
_INGESTED_AT = tables.BRONZE.schema.field("ingested_at").type
# The settings bronze depends on (part of its fingerprint).
_READ_SETTINGS = {
    "keep_unknown_columns", "max_file_bytes", "max_compression_ratio", "ratio_check_min_bytes"
}  # fmt: skip


@dataclass(frozen=True)
class IngestResult:
    """What one date's ingest did (rows = bronze rows written, from readable files)."""

    date: dt.date
    files: int
    rows: int
    skipped: bool
    corrupt_files: list[tuple[str, str]] = field(default_factory=list)
    unknown_columns: dict[str, list[str]] = field(default_factory=dict)
    bronze_path: str | None = None


class _Redo(Exception):
    """Aborts a date's partition writer: a file failed after some of its rows were written."""


def ingest_date(lake: Lake, day: dt.date, settings: Settings) -> IngestResult:
    """Ingest every landing file of `day` into one bronze partition (idempotent).

    The single-date case of `ingest_dates`.
    """
    return ingest_dates(lake, [day], settings)[0]


def ingest_dates(lake: Lake, days: Iterable[dt.date], settings: Settings) -> list[IngestResult]:
    """Ingest the landing files of each date into its bronze partition (idempotent).

    A date whose listing, or else whose content hashes, match its bronze stamp is skipped;
    any other date is re-ingested whole and its partition replaced atomically. Changed
    dates are parsed together in chunks (see the module docstring); `settings` bound what
    a file may expand to and say whether unknown columns are kept. Returns one result per
    distinct date, in date order.
    """
    days = sorted(set(days))
    options, config = ReadOptions.of(settings), settings.model_dump(include=_READ_SETTINGS)
    results: dict[dt.date, IngestResult] = {}
    pending: list[Landing] = []
    weight = 0
    ingested_at = pa.scalar(dt.datetime.now(dt.UTC), _INGESTED_AT)
    for day in days:
        landing = list_landing(lake, day)
        skipped = _skip(lake, landing, config, options)
        if skipped is not None:
            results[day] = skipped
            continue
        pending.append(landing)
        weight += landing.weight
        if weight >= CHUNK_BYTES:
            results.update(_ingest_landings(lake, pending, ingested_at, options, config))
            pending, weight = [], 0
    if pending:
        results.update(_ingest_landings(lake, pending, ingested_at, options, config))
    return [results[d] for d in days]


def plan_chunks(
    lake: Lake, start: dt.date, end: dt.date, max_dates: int, max_bytes: int
) -> list[list[dt.date]]:
    """The dates from start to end that have raw partitions, in consecutive chunks of at
    most `max_dates` dates and about `max_bytes` of landing text (a bigger date goes
    alone). One listing of the raw table, so a range of years with gaps costs little;
    folders that are not `dt=YYYY-MM-DD` are left out (`listing.stray_partitions`)."""
    folder = lake.path(tables.RAW_INTERACTIONS)
    if not lake.fs.exists(folder):
        return []
    dates = {f"dt={v}": dt.date.fromisoformat(v) for v in lake.partitions(tables.RAW_INTERACTIONS)}
    weight: dict[dt.date, int] = {}
    for path, info in lake.fs.find(folder, detail=True).items():
        parent, name = path.rsplit("/", 2)[-2:]
        day = dates.get(parent)
        if day is None or name.startswith((".", "_")):
            continue
        if start <= day <= end:
            weight[day] = weight.get(day, 0) + text_weight(name, int(info["size"]))
    chunks: list[list[dt.date]] = []
    size = 0
    for day in sorted(weight):
        if not chunks or len(chunks[-1]) >= max_dates or size + weight[day] > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(day)
        size += weight[day]
    return chunks


def _skip(lake: Lake, landing: Landing, config: dict, options: ReadOptions) -> IngestResult | None:
    """The skipped result when the bronze stamp matches the landing files, else None.

    The listing is compared first (no file read); only when it differs are the files
    hashed (`landing.hashes` is then set for the ingest that may follow).
    """
    stamp = read_stamp(lake, tables.BRONZE, dt=landing.day)
    if not stamp or not lake.exists(tables.BRONZE, dt=landing.day):
        landing.hashes = file_hashes(lake, landing, options)
        return None
    old = stamp.get("result") or {}
    tokens = all(token for _, token in landing.listing.values())
    same = tokens and old.get("listing") == landing.listing
    if same and stamp["fingerprint"] == _fingerprint(old.get("files") or {}, config):
        return _result(lake, landing, old)
    landing.hashes = file_hashes(lake, landing, options)
    key = _fingerprint(landing.hashes, config)
    if stamp["fingerprint"] != key:
        return None
    # Same content under new metadata (touched, copied): remember it, read nothing next time.
    write_stamp(lake, tables.BRONZE, key, {**old, "listing": landing.listing}, dt=landing.day)
    return _result(lake, landing, old)


def _result(lake: Lake, landing: Landing, old: dict) -> IngestResult:
    return IngestResult(
        date=landing.day,
        files=len(landing.files),
        rows=int(old["rows"]),
        skipped=True,
        corrupt_files=[tuple(x) for x in old["corrupt_files"]],
        unknown_columns=old["unknown_columns"],
        bronze_path=lake.partition_file(tables.BRONZE, dt=landing.day),
    )


def _ingest_landings(
    lake: Lake, landings: list[Landing], ingested_at: pa.Scalar, options: ReadOptions,
    config: dict,
) -> dict[dt.date, IngestResult]:  # fmt: skip
    """Read the files of these dates and write one partition per date, then stamp it.

    A date with a file that failed after some of its rows were written (a truncated gzip
    noticed at its end, a bomb noticed after some MB) is read again without that file.
    """
    out: dict[dt.date, IngestResult] = {}
    excluded: dict[str, str] = {}  # name -> reason, files not to be read again
    todo = landings
    while todo:  # each redo excludes one more file, so this ends
        done, todo = _attempt(lake, todo, ingested_at, options, excluded)
        for x, rows, path, report in done:
            names = [f.name for f in x.files]
            bad = {**report.corrupt, **excluded}
            result = {
                "rows": rows,
                "corrupt_files": [(n, bad[n]) for n in names if n in bad],  # in file order
                "unknown_columns": {
                    n: report.unknown[n] for n in names if n in report.unknown and n not in bad
                },
                "files": x.hashes,
                "listing": x.listing,
            }
            key = _fingerprint(x.hashes, config)
            write_stamp(lake, tables.BRONZE, key, result, dt=x.day)
            out[x.day] = IngestResult(
                x.day, len(names), rows, False, result["corrupt_files"],
                result["unknown_columns"], path,
            )  # fmt: skip
    return out


def _attempt(
    lake: Lake, landings: list[Landing], ingested_at: pa.Scalar, options: ReadOptions,
    excluded: dict[str, str],
) -> tuple[list[tuple[Landing, int, str, ReadReport]], list[Landing]]:  # fmt: skip
    """One pass over the files of these dates: (dates written, dates to redo)."""
    report = ReadReport()
    files = [f for x in landings for f in x.files if f.name not in excluded]
    contexts = {
        x.day: lake.partition_writer(tables.BRONZE, tables.BRONZE.schema, dt=x.day)
        for x in landings
    }
    writers = {day: cm.__enter__() for day, cm in contexts.items()}
    try:
        for frame in read_files(lake.fs, files, options, report):
            days = frame["_day"].unique()
            if days.len() == 1:  # the usual case for a big file: no copy
                _write(writers[days[0]], frame, ingested_at)
                continue
            for (day,), part in frame.partition_by("_day", as_dict=True).items():
                _write(writers[day], part, ingested_at)
    except BaseException as exc:  # nothing of this pass is put in place
        for cm in contexts.values():
            cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    done, redo = [], []
    for x in landings:
        late = [f.name for f in x.files if f.name in report.corrupt and f.name in report.yielded]
        if late:
            excluded.update({n: report.corrupt[n] for n in late})
            contexts[x.day].__exit__(_Redo, _Redo(), None)  # the writer drops its rows
            redo.append(x)
            continue
        contexts[x.day].__exit__(None, None, None)  # the partition is put in place
        done.append((x, writers[x.day].rows, writers[x.day].path, report))
    return done, redo


def _write(writer: PartitionWriter, frame: pl.DataFrame, stamp: pa.Scalar) -> None:
    """Append typed rows to a bronze partition, with the run's `ingested_at`."""
    table = frame.select(READ_COLUMNS).to_arrow()
    writer.write(table.append_column("ingested_at", pa.repeat(stamp, table.num_rows)))


def _fingerprint(hashes: dict[str, str], config: dict) -> str:
    return fingerprint(MANIFEST_VERSION, hashes, config)
