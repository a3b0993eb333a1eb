"""The ingest stage: the landing files of many dates -> one bronze partition per date.

A date is skipped when its bronze stamp (tasks.lake.stamps) was computed from the same
file names and content hashes; any other date is re-ingested whole. Changed dates are
read in chunks of about `CHUNK_BYTES` of text (tasks.ingest.readers parses the files of
a chunk together), and each date's rows go to its own Lake partition writer row group by
row group, so memory stays bounded by the largest file, not by the day.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from schemas import tables
from tasks.config import Settings
from tasks.ingest.readers import READ_COLUMNS, read_files
from tasks.lake.dates import parse_date
from tasks.lake.stamps import fingerprint, unchanged, write_stamp
from tasks.lake.storage import Lake, PartitionWriter

# Part of every bronze fingerprint: bump it when the same files must give other rows.
MANIFEST_VERSION = 1
# Text bytes parsed together; gzip'd payloads count ~6x their size (typical ratio).
CHUNK_BYTES = 64 << 20
_GZIP_RATIO = 6
_INGESTED_AT = tables.BRONZE.schema.field("ingested_at").type


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


@dataclass
class _Landing:
    """The landing files of one date: name -> payload, their content hashes, fingerprint."""

    day: dt.date
    payloads: dict[str, bytes]
    hashes: dict[str, str]

    @property
    def weight(self) -> int:
        return sum(_weight(n, len(p)) for n, p in self.payloads.items())

    @property
    def fingerprint(self) -> str:
        return fingerprint(MANIFEST_VERSION, self.hashes)


def ingest_date(lake: Lake, day: dt.date, settings: Settings) -> IngestResult:
    """Ingest every landing file of `day` into one bronze partition (idempotent).

    The single-date case of `ingest_dates`.
    """
    return ingest_dates(lake, [day], settings)[0]


def ingest_dates(lake: Lake, days: Iterable[dt.date], settings: Settings) -> list[IngestResult]:
    """Ingest the landing files of each date into its bronze partition (idempotent).

    A date whose bronze stamp matches its file names and content hashes is skipped; any
    other date is re-ingested whole and its partition replaced atomically. Changed dates
    are parsed together in chunks (see the module docstring). Returns one result per
    distinct date, in date order. `settings` is accepted for a uniform stage signature
    (ingest has no tunables yet).
    """
    del settings
    days = sorted(set(days))
    results: dict[dt.date, IngestResult] = {}
    pending: list[_Landing] = []
    weight = 0
    ingested_at = dt.datetime.now(dt.UTC)
    for day in days:
        landing = _load_landing(lake, day)
        skipped = _unchanged(lake, landing)
        if skipped is not None:
            results[day] = skipped
            continue
        pending.append(landing)
        weight += landing.weight
        if weight >= CHUNK_BYTES:
            results.update(_ingest_landings(lake, pending, ingested_at))
            pending, weight = [], 0
    if pending:
        results.update(_ingest_landings(lake, pending, ingested_at))
    return [results[d] for d in days]


def plan_chunks(
    lake: Lake, start: dt.date, end: dt.date, max_dates: int, max_bytes: int
) -> list[list[dt.date]]:
    """The dates from start to end that have raw partitions, in consecutive chunks of at
    most `max_dates` dates and about `max_bytes` of landing text (a bigger date goes
    alone). One listing of the raw table, so a range of years with gaps costs little."""
    folder = lake.path(tables.RAW_INTERACTIONS)
    if not lake.fs.exists(folder):
        return []
    weight: dict[dt.date, int] = {}
    for path, info in lake.fs.find(folder, detail=True).items():
        parent, name = path.rsplit("/", 2)[-2:]
        if not parent.startswith("dt=") or name.startswith((".", "_")):
            continue
        day = parse_date(parent[3:])  # a folder name: text at the edge of the lake
        if start <= day <= end:
            weight[day] = weight.get(day, 0) + _weight(name, int(info["size"]))
    chunks: list[list[dt.date]] = []
    size = 0
    for day in sorted(weight):
        if not chunks or len(chunks[-1]) >= max_dates or size + weight[day] > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(day)
        size += weight[day]
    return chunks


def _load_landing(lake: Lake, day: dt.date) -> _Landing:
    paths = lake.files(tables.RAW_INTERACTIONS, dt=day)
    payloads = {lake.relpath(p): lake.fs.cat_file(p) for p in paths}
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in payloads.items()}
    return _Landing(day, payloads, hashes)


def _unchanged(lake: Lake, landing: _Landing) -> IngestResult | None:
    """The skipped result when the bronze stamp matches the landing files, else None."""
    old = unchanged(lake, tables.BRONZE, landing.fingerprint, dt=landing.day)
    if old is None:
        return None
    return IngestResult(
        date=landing.day,
        files=len(landing.hashes),
        rows=int(old["rows"]),
        skipped=True,
        corrupt_files=[tuple(x) for x in old["corrupt_files"]],
        unknown_columns=old["unknown_columns"],
        bronze_path=lake.partition_file(tables.BRONZE, dt=landing.day),
    )


def _ingest_landings(
    lake: Lake, landings: list[_Landing], ingested_at: dt.datetime
) -> dict[dt.date, IngestResult]:
    """Parse the files of these dates chunk by chunk and write one partition per date.

    Each date has its own partition writer for the whole call (a chunk holds rows of many
    dates, and a date's files may span chunks); every partition is put in place when all
    were read, then stamped.
    """
    stamp = pa.scalar(ingested_at, _INGESTED_AT)
    corrupt: dict[dt.date, list[tuple[str, str]]] = {x.day: [] for x in landings}
    unknown: dict[dt.date, dict[str, list[str]]] = {x.day: {} for x in landings}
    files = deque((x.day, name, data) for x in landings for name, data in x.payloads.items())
    order = [(day, name) for day, name, _ in files]
    for x in landings:  # from here on a payload lives only until its chunk is parsed
        x.payloads = {}
    bad: dict[str, str] = {}
    extra: dict[str, list[str]] = {}
    with contextlib.ExitStack() as stack:
        writers = {
            x.day: stack.enter_context(
                lake.partition_writer(tables.BRONZE, tables.BRONZE.schema, dt=x.day)
            )
            for x in landings
        }
        for chunk in _chunks(files):
            for frame in read_files(chunk, bad, extra):
                days = frame["_day"].unique()
                if days.len() == 1:  # the usual case for a big file: no copy
                    _write(writers[days[0]], frame, stamp)
                    continue
                for (day,), part in frame.partition_by("_day", as_dict=True).items():
                    _write(writers[day], part, stamp)
    for day, name in order:  # reported in file order
        if name in bad:
            corrupt[day].append((name, bad[name]))
        if name in extra:
            unknown[day][name] = extra[name]
    out = {}
    for x in landings:
        rows = writers[x.day].rows
        result = {
            "rows": rows,
            "corrupt_files": corrupt[x.day],
            "unknown_columns": unknown[x.day],
            "files": x.hashes,
        }
        write_stamp(lake, tables.BRONZE, x.fingerprint, result, dt=x.day)
        out[x.day] = IngestResult(
            x.day, len(x.hashes), rows, False, corrupt[x.day], unknown[x.day], writers[x.day].path
        )
    return out


def _write(writer: PartitionWriter, frame: pl.DataFrame, stamp: pa.Scalar) -> None:
    """Append typed rows to a bronze partition, with the run's `ingested_at`."""
    table = frame.select(READ_COLUMNS).to_arrow()
    writer.write(table.append_column("ingested_at", pa.repeat(stamp, table.num_rows)))


def _weight(name: str, size: int) -> int:
    """Text bytes a landing file of `size` bytes stands for (gzip'd: _GZIP_RATIO times)."""
    return size * (_GZIP_RATIO if name.lower().endswith(".gz") else 1)


def _chunks(
    files: deque[tuple[dt.date, str, bytes]],
) -> Iterator[list[tuple[dt.date, str, bytes]]]:
    """Consecutive files of about CHUNK_BYTES of text each (a bigger file goes alone).

    Files are taken off `files`, so a parsed chunk's payloads can be freed.
    """
    chunk: list[tuple[dt.date, str, bytes]] = []
    size = 0
    while files:
        item = files.popleft()
        w = _weight(item[1], len(item[2]))
        if chunk and size + w > CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += w
    if chunk:
        yield chunk
