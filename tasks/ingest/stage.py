"""Ingest: the landing files of many dates -> one typed bronze partition per date.

Reads   raw/interactions/dt=D/*.{csv,jsonl,ndjson,json,parquet}[.gz]
Writes  bronze/interactions/dt=D/part-0.parquet  (schemas.interactions.BRONZE)
        bronze/interactions/dt=D/_files.json     (content hash of every source file)

Every physical line of a text file becomes exactly one bronze row, so `source_line` is the
line an operator sees in an editor (header = line 1). Lines are found with numpy on the
decompressed buffer and sliced zero-copy into an Arrow array; CSV fields are split by
Polars, JSONL objects by DuckDB's JSON functions. A line that cannot be parsed is kept with
`parse_error` set and its text in `extra` (`{"_raw_line": ...}`), so validation
quarantines it visibly. Blank lines are not events and are skipped. A file that cannot be
read completely (truncated gzip, broken Parquet) contributes no rows and is reported.

Batches: `ingest_dates` reads the changed dates of a batch in chunks of about
`_CHUNK_BYTES` of text: the files of a chunk are parsed together (one Polars/DuckDB pass
per format, not per file), so thousands of small dates cost little more than one big
one, while one big date is parsed file by file and written row group by row group, so
memory stays bounded by the largest file, not by the day.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import itertools
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.interactions import BRONZE, DEFAULT_EVENT_TYPE, RAW_COLUMNS
from tasks.config import Settings
from tasks.lake.dates import parse_date
from tasks.lake.storage import Lake

RAW_TABLE = "raw/interactions"
BRONZE_TABLE = "bronze/interactions"
MANIFEST = "_files.json"
MANIFEST_VERSION = 1
TEXT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
# Text bytes parsed together; gzip'd payloads count ~6x their size (typical ratio).
_CHUNK_BYTES = 64 << 20
# Lines typed together: bounds the memory of the string work on a big file.
_SLICE = 250_000
# Bronze columns every reader returns (ingested_at is added once, when writing).
_COLS = [f.name for f in BRONZE if f.name != "ingested_at"]
_UTC = pl.Datetime("us", "UTC")
_TEXT = ("user_id", "item_id", "ts_raw", "event_type", "value_raw")
# Parquet writer options: dictionaries only where values repeat, min/max only where a
# reader can prune with them; zstd level 1 (a partition is rewritten whole on change).
_DICT_COLS = ("user_id", "item_id", "event_type", "source_file", "parse_error", "reason")
_STATS_COLS = ("ts", "source_line", "ingested_at")
_ROW_GROUP = 1 << 20


class UnreadableFile(Exception):
    """A landing file that cannot be read completely; it contributes no rows."""


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
    """The landing files of one date: name -> payload, and their content hashes."""

    day: dt.date
    payloads: dict[str, bytes]
    hashes: dict[str, str]

    @property
    def weight(self) -> int:
        return sum(_weight(n, p) for n, p in self.payloads.items())


def ingest_date(lake: Lake, date: str | dt.date, settings: Settings) -> IngestResult:
    """Ingest every landing file of `date` into one bronze partition (idempotent).

    The single-date case of `ingest_dates`.
    """
    return ingest_dates(lake, [date], settings)[0]


def ingest_dates(
    lake: Lake, dates: Iterable[str | dt.date], settings: Settings
) -> list[IngestResult]:
    """Ingest the landing files of each date into its bronze partition (idempotent).

    A date whose file names and content hashes match the manifest of its bronze partition
    is skipped; any other date is re-ingested whole and its partition replaced atomically.
    Changed dates are parsed together in chunks (see the module docstring). Returns one
    result per distinct date, in date order. `settings` is accepted for a uniform stage
    signature (ingest has no tunables yet).
    """
    del settings
    days = sorted({parse_date(d) for d in dates})
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
        if weight >= _CHUNK_BYTES:
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
    folder = lake.path(RAW_TABLE)
    if not lake.fs.exists(folder):
        return []
    weight: dict[dt.date, int] = {}
    for path, info in lake.fs.find(folder, detail=True).items():
        parent, name = path.rsplit("/", 2)[-2:]
        if not parent.startswith("dt=") or name.startswith((".", "_")):
            continue
        day = parse_date(parent[3:])
        if start <= day <= end:
            weight[day] = weight.get(day, 0) + int(info["size"]) * (
                6 if name.lower().endswith(".gz") else 1
            )
    chunks: list[list[dt.date]] = []
    size = 0
    for day in sorted(weight):
        if not chunks or len(chunks[-1]) >= max_dates or size + weight[day] > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(day)
        size += weight[day]
    return chunks


def manifest_path(lake: Lake, day: dt.date) -> str:
    """Lake-relative path of a date's bronze manifest (`_files.json`)."""
    return f"{lake.relpath(lake.path(BRONZE_TABLE, dt=day))}/{MANIFEST}"


def _load_landing(lake: Lake, day: dt.date) -> _Landing:
    paths = lake.files(RAW_TABLE, dt=day)
    payloads = {lake.relpath(p): lake.fs.cat_file(p) for p in paths}
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in payloads.items()}
    return _Landing(day, payloads, hashes)


def _unchanged(lake: Lake, landing: _Landing) -> IngestResult | None:
    """The skipped result when the manifest matches the landing files, else None."""
    old = lake.read_json(manifest_path(lake, landing.day))
    if (
        old is None
        or old.get("version") != MANIFEST_VERSION
        or old.get("files") != landing.hashes
        or not lake.exists(BRONZE_TABLE, dt=landing.day)
    ):
        return None
    return IngestResult(
        date=landing.day,
        files=len(landing.hashes),
        rows=int(old["rows"]),
        skipped=True,
        corrupt_files=[tuple(x) for x in old["corrupt_files"]],
        unknown_columns=old["unknown_columns"],
        bronze_path=lake.partition_file(BRONZE_TABLE, dt=landing.day),
    )


def _ingest_landings(
    lake: Lake, landings: list[_Landing], ingested_at: dt.datetime
) -> dict[dt.date, IngestResult]:
    """Parse the files of these dates chunk by chunk and write one partition per date."""
    writers = {x.day: _PartitionWriter(ingested_at) for x in landings}
    corrupt: dict[dt.date, list[tuple[str, str]]] = {x.day: [] for x in landings}
    unknown: dict[dt.date, dict[str, list[str]]] = {x.day: {} for x in landings}
    files = deque((x.day, name, data) for x in landings for name, data in x.payloads.items())
    order = [(day, name) for day, name, _ in files]
    for x in landings:  # from here on a payload lives only until its chunk is parsed
        x.payloads = {}
    bad: dict[str, str] = {}
    extra: dict[str, list[str]] = {}
    for chunk in _chunks(files):
        for frame in _read_files(chunk, bad, extra):
            days = frame["_day"].unique()
            if days.len() == 1:  # the usual case for a big file: no copy
                writers[days[0]].write(frame)
                continue
            for (day,), part in frame.partition_by("_day", as_dict=True).items():
                writers[day].write(part)
    for day, name in order:  # reported in file order
        if name in bad:
            corrupt[day].append((name, bad[name]))
        if name in extra:
            unknown[day][name] = extra[name]
    out = {}
    for x in landings:
        rows, payload = writers.pop(x.day).finish()
        target = lake.partition_file(BRONZE_TABLE, dt=x.day)
        lake.write_bytes(lake.relpath(target), payload)
        lake.write_json(
            manifest_path(lake, x.day),
            {
                "version": MANIFEST_VERSION,
                "files": x.hashes,
                "rows": rows,
                "corrupt_files": corrupt[x.day],
                "unknown_columns": unknown[x.day],
            },
        )
        out[x.day] = IngestResult(
            x.day, len(x.hashes), rows, False, corrupt[x.day], unknown[x.day], target
        )
    return out


class _PartitionWriter:
    """One bronze partition written row group by row group into memory (zstd Parquet)."""

    def __init__(self, ingested_at: dt.datetime) -> None:
        self._buf = io.BytesIO()
        self._writer = pq.ParquetWriter(self._buf, BRONZE, **_write_options(BRONZE))
        self._stamp = pa.scalar(ingested_at, BRONZE.field("ingested_at").type)
        self.rows = 0

    def write(self, frame: pl.DataFrame) -> None:
        table = frame.select(_COLS).to_arrow()
        table = table.append_column("ingested_at", pa.repeat(self._stamp, table.num_rows))
        self._writer.write_table(table.cast(BRONZE), row_group_size=_ROW_GROUP)
        self.rows += table.num_rows

    def finish(self) -> tuple[int, bytes]:
        self._writer.close()
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages
        return self.rows, self._buf.getvalue()


def write_frame(
    lake: Lake,
    table: str,
    frame: pl.DataFrame | Iterable[pl.DataFrame],
    schema: pa.Schema,
    **partition: object,
) -> str:
    """Atomically write (or replace) one partition of `table` from a frame (or consecutive
    pieces of one), cast to `schema`. A small frame goes through `Lake.write_partition`;
    a big one is cast and written row group by row group (no whole-table Arrow copy),
    then put in place atomically by the Lake."""
    pieces = iter([frame] if isinstance(frame, pl.DataFrame) else frame)
    first = next(pieces)
    second = next(pieces, None)
    if second is None and first.height <= _ROW_GROUP:  # small: no streaming writer needed
        return lake.write_partition(table, first, schema, **partition)
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, schema, **_write_options(schema)) as writer:
        for piece in itertools.chain([first, second], pieces):
            for offset in range(0, max(piece.height, 1), _ROW_GROUP):
                part = piece.slice(offset, _ROW_GROUP).select(schema.names).to_arrow()
                writer.write_table(part.cast(schema))
    target = lake.partition_file(table, **partition)
    lake.write_bytes(lake.relpath(target), buf.getvalue())
    pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages
    return target


def _write_options(schema: pa.Schema) -> dict[str, object]:
    return {
        "compression": "zstd",
        "compression_level": 1,
        "use_dictionary": [c for c in _DICT_COLS if c in schema.names],
        "write_statistics": [c for c in _STATS_COLS if c in schema.names],
    }


def _weight(name: str, payload: bytes) -> int:
    return len(payload) * (6 if name.lower().endswith(".gz") else 1)


def _chunks(
    files: deque[tuple[dt.date, str, bytes]],
) -> Iterator[list[tuple[dt.date, str, bytes]]]:
    """Consecutive files of about _CHUNK_BYTES of text each (a bigger file goes alone).

    Files are taken off `files`, so a parsed chunk's payloads can be freed.
    """
    chunk: list[tuple[dt.date, str, bytes]] = []
    size = 0
    while files:
        item = files.popleft()
        w = _weight(item[1], item[2])
        if chunk and size + w > _CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += w
    if chunk:
        yield chunk


# ---- files -> typed bronze rows ---------------------------------------------------------
def _read_files(
    files: list[tuple[dt.date, str, bytes]],
    corrupt: dict[str, str],
    unknown: dict[str, list[str]],
) -> Iterator[pl.DataFrame]:
    """Typed bronze rows (with `_day`) of these files, in pieces of at most _SLICE lines.

    Lines of all CSV files sharing a header are split together, all JSONL lines in one
    DuckDB query per piece; a Parquet file is typed on its own (its schema is its own).
    Unreadable files go to `corrupt` (name -> reason), unknown columns to `unknown`.
    """
    csv_groups: dict[tuple[str, ...], list[tuple[pa.Array, int, dict]]] = {}
    jsonl: list[tuple[pa.Array, int, dict]] = []
    for day, name, payload in files:
        tag = {"source_file": pl.lit(name), "_day": pl.lit(day)}
        try:
            data, kind = _open(name, payload)
            if kind == "parquet":
                frame, extra = _read_parquet(data)
                yield _finish(frame.with_columns(**tag))
            elif kind == "csv":
                names, lines, invalid = _csv_lines(data)
                if len(lines):
                    csv_groups.setdefault(names, []).append((lines, 2, tag))
                extra = [c for c in names if c not in RAW_COLUMNS]
            else:
                lines, invalid = _split_lines(data)
                jsonl.append((lines, 1, tag))
                extra = []
        except UnreadableFile as exc:
            corrupt[name] = str(exc)
            continue
        if kind != "parquet" and invalid.height:
            yield _finish(_bad_lines(invalid, "invalid_encoding").with_columns(**tag))
        if extra:
            unknown[name] = extra
    for names, parts in csv_groups.items():
        for piece in _pieces(parts):
            yield _finish(_type_text(_parse_csv(piece, list(names))))
    keys: dict[str, set[str]] = {}
    for piece in _pieces(jsonl):
        parsed, piece_keys = _parse_jsonl(piece)
        for name, k in piece_keys.items():
            keys.setdefault(name, set()).update(k)
        yield _finish(_type_text(parsed))
    unknown.update({name: sorted(k) for name, k in keys.items()})


def _pieces(parts: list[tuple[pa.Array, int, dict]]) -> Iterator[pl.DataFrame]:
    """Line frames of at most ~_SLICE lines, from (Arrow lines, first line number, tags).

    Small files are gathered into one frame; a big file is cut into zero-copy slices, so
    the string work of one piece, not of the whole file, is in memory at once.
    """
    frames, size = [], 0
    for text, first, tag in parts:
        for offset in range(0, len(text), _SLICE):
            piece = text.slice(offset, _SLICE)
            frames.append(_line_frame(piece, first + offset, tag))
            size += len(piece)
            if size >= _SLICE:
                yield pl.concat(frames)
                frames, size = [], 0
    if frames:
        yield pl.concat(frames)


def _finish(frame: pl.DataFrame) -> pl.DataFrame:
    """Every bronze column in order (nulls where a reader had none), default event type."""
    empty = pl.DataFrame(schema={**_SCHEMA, "_day": pl.Date})
    frame = pl.concat([empty, frame], how="diagonal_relaxed").select(*_COLS, "_day")
    # Missing event type means the default, but only on lines that were readable.
    event = pl.col("event_type")
    return frame.with_columns(
        event_type=pl.when(
            (event.is_null() | (event.str.strip_chars() == "")) & pl.col("parse_error").is_null()
        )
        .then(pl.lit(DEFAULT_EVENT_TYPE))
        .otherwise(event)
    )


_SCHEMA = {
    **dict.fromkeys(_COLS, pl.String),
    "ts": _UTC,
    "value": pl.Float64,
    "source_line": pl.Int64,
}


def _open(name: str, payload: bytes) -> tuple[bytes, str]:
    """(decompressed bytes, kind) where kind is csv, jsonl or parquet."""
    base = name.rsplit("/", 1)[-1].lower()
    if base.endswith(".gz"):
        try:
            payload = gzip.decompress(payload)
        except EOFError:  # the stream stops before its end marker: a cut-off upload
            raise UnreadableFile("truncated_gzip") from None
        except (OSError, zlib.error):
            raise UnreadableFile("invalid_gzip") from None
        base = base[:-3]
    suffix = "." + base.rsplit(".", 1)[-1] if "." in base else ""
    if suffix == ".parquet":
        return payload, "parquet"
    if suffix in TEXT_FORMATS:
        return payload, TEXT_FORMATS[suffix]
    raise UnreadableFile("unsupported_format")


def _split_lines(data: bytes) -> tuple[pa.Array, pl.DataFrame]:
    """(every line as Arrow text, null where invalid; invalid lines as (source_line, text)).

    Newline offsets come from numpy and the lines are a zero-copy Arrow view of `data`.
    Only lines holding a byte >= 0x80 can be invalid UTF-8, so only those are checked
    (DuckDB `try(decode())`); an invalid line gets a null text and, in `extra`, a lossy
    copy with every non-ASCII byte shown as '?'.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    starts = np.concatenate(([0], _where(arr, lambda a: a == 10) + 1)).astype(np.int64)
    if starts[-1] == len(data):  # the usual trailing newline opens no line
        starts = starts[:-1]
    n = len(starts)
    offsets = pa.py_buffer(np.append(starts, len(data)).astype(np.int64))
    raw = pa.Array.from_buffers(pa.large_binary(), n, [None, offsets, pa.py_buffer(data)])
    high = _where(arr, lambda a: a >= 0x80)
    bad = np.empty(0, np.int64)
    if high.size:
        suspect = np.unique(np.searchsorted(starts, high, side="right") - 1)
        bad = suspect[_invalid_utf8(raw.take(pa.array(suspect)))]
    valid = None
    if bad.size:
        mask = np.ones(n, dtype=bool)
        mask[bad] = False
        valid = pa.py_buffer(np.packbits(mask, bitorder="little"))
    text = pa.Array.from_buffers(pa.large_string(), n, [valid, offsets, pa.py_buffer(data)])
    invalid = pl.DataFrame({"source_line": bad + 1, "text": _lossy(raw.take(pa.array(bad)))})
    return text, invalid


def _line_frame(text: pa.Array, first: int, tag: dict[str, pl.Expr]) -> pl.DataFrame:
    """Readable non-blank lines of an Arrow slice as (source_line, text, tags).

    `first` is the line number of the slice's first line; terminators are stripped.
    """
    frame = pl.DataFrame(
        {
            "source_line": pl.int_range(first, first + len(text), eager=True, dtype=pl.Int64),
            "text": pl.from_arrow(text).str.strip_chars_end("\r\n"),
        }
    )
    return frame.filter(pl.col("text").str.strip_chars() != "").with_columns(**tag)


def _where(arr: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Positions where `test` holds, block by block (no buffer-sized boolean temporary)."""
    block = 1 << 24
    parts = [np.flatnonzero(test(arr[i : i + block])) + i for i in range(0, len(arr), block)]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def _invalid_utf8(lines: pa.Array) -> np.ndarray:
    """Boolean mask of the lines that are not valid UTF-8."""
    con = _duck()
    con.register("suspect", pa.table({"raw": lines}))
    decoded = con.sql("select try(decode(raw)) is null as bad from suspect").to_arrow_table()
    return decoded["bad"].to_numpy(zero_copy_only=False)


def _lossy(lines: pa.Array) -> pl.Series:
    """Readable evidence for the quarantine, not a decode: non-ASCII bytes become '?'."""
    lines = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    if len(lines) == 0:
        return pl.Series(values=[], dtype=pl.String)
    data = np.frombuffer(lines.buffers()[2], dtype=np.uint8).copy()
    data[data >= 0x80] = ord("?")
    text = pa.Array.from_buffers(
        pa.large_string(), len(lines), [None, lines.buffers()[1], pa.py_buffer(data)]
    )
    return pl.from_arrow(text).str.strip_chars_end("\r\n")


def _bad_lines(lines: pl.DataFrame, reason: str) -> pl.DataFrame:
    """Unparseable lines as bronze text rows: parse_error + the line text in `extra`."""
    return lines.select(
        pl.exclude("text"),
        extra=pl.struct(pl.col("text").alias("_raw_line")).struct.json_encode(),
        parse_error=pl.lit(reason),
    )


# ---- CSV --------------------------------------------------------------------------------
def _csv_lines(data: bytes) -> tuple[tuple[str, ...], pa.Array, pl.DataFrame]:
    """(header names, body lines as Arrow text, invalid-UTF-8 body lines) of one CSV file."""
    text, invalid = _split_lines(data)
    if len(text) == 0:  # an empty file: no header, no rows
        return (), text, invalid
    if invalid.height and invalid["source_line"][0] == 1:  # header shown lossily
        header, invalid = invalid["text"][0], invalid.slice(1)
    else:
        header = text[0].as_py().rstrip("\r\n")
    names = [n.strip() for n in next(csv.reader([header.lstrip("\ufeff")]), [])]
    if not any(names):
        raise UnreadableFile("missing_header")
    return tuple(names), text.slice(1), invalid


def _parse_csv(lines: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Body lines (of files sharing `names`) -> text rows; malformed lines flagged."""
    n = len(names)
    quoted = pl.col("text").str.contains('"', literal=True)
    commas = pl.col("text").str.count_matches(",", literal=True)
    lines = lines.with_columns(_q=quoted, _ok=commas == n - 1)
    fields = (
        lines.filter(~pl.col("_q") & pl.col("_ok"))
        .with_columns(pl.col("text").str.split_exact(",", n - 1))
        .select(
            "source_line",
            "source_file",
            "_day",
            *[pl.col("text").struct.field(f"field_{i}").alias(c) for i, c in enumerate(names)],
        )
    )
    meta = ["source_line", "source_file", "_day"]
    malformed = [lines.filter(~pl.col("_q") & ~pl.col("_ok")).select(*meta, "text")]
    q = lines.filter(pl.col("_q"))
    if q.height:
        q_fields, q_bad = _parse_quoted(q.select(*meta, "text"), names)
        fields = pl.concat([fields, q_fields], how="vertical_relaxed")
        malformed.append(q_bad)
    fields = fields.with_columns(pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in names)
    bad = _bad_lines(pl.concat(malformed), "malformed_line")
    return pl.concat([_from_columns(fields, names), bad], how="diagonal_relaxed")


def _parse_quoted(q: pl.DataFrame, names: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lines containing quotes: parsed by Arrow's CSV reader, each prefixed by its row id.

    A line with an odd number of quotes cannot close its quoted field on the same line
    (multi-line values are not supported) and is malformed up front, so Arrow never joins
    two physical lines. Rows Arrow rejects come back through the handler, by row id.
    """
    q = q.with_row_index("_id")
    odd = pl.col("text").str.count_matches('"', literal=True) % 2 == 1
    bad = [q.filter(odd).drop("_id")]
    ok = q.filter(~odd)
    rejected: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:  # called for rejected rows only
        rejected.append(int(row.text.split(",", 1)[0]))
        return "skip"

    body = ok.select(pl.format("{},{}", "_id", "text")).to_series().str.join("\n")
    table = pacsv.read_csv(
        io.BytesIO(body[0].encode()),
        read_options=pacsv.ReadOptions(column_names=["_id", *names], use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={"_id": pa.uint32(), **dict.fromkeys(names, pa.string())},
            strings_can_be_null=False,
        ),
    )
    fields = pl.from_arrow(table)
    if table.num_rows + len(rejected) != ok.height or fields["_id"].n_unique() != table.num_rows:
        # A stray quote inside an unquoted field made Arrow join lines: redo these (rare)
        # lines one by one with the strict csv module so each keeps its own fate.
        fields, rejected = _parse_quoted_strict(ok, names)
    meta = ok.select("_id", "source_line", "source_file", "_day")
    fields = meta.join(fields.cast({"_id": pl.UInt32}), on="_id").drop("_id")
    bad.append(ok.filter(pl.col("_id").is_in(rejected)).drop("_id"))
    return fields, pl.concat(bad)


def _parse_quoted_strict(ok: pl.DataFrame, names: list[str]) -> tuple[pl.DataFrame, list[int]]:
    rows, rejected = [], []
    for row_id, text in ok.select("_id", "text").iter_rows():  # pathological quoting only
        try:
            values = next(csv.reader([text], strict=True))
        except csv.Error:
            values = []
        if len(values) == len(names):
            rows.append([row_id, *values])
        else:
            rejected.append(row_id)
    schema = {"_id": pl.UInt32, **dict.fromkeys(names, pl.String)}
    return pl.DataFrame(rows, schema=schema, orient="row"), rejected


def _from_columns(fields: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Known columns renamed to bronze text columns; unknown ones packed into `extra`."""
    unknown = [c for c in names if c not in RAW_COLUMNS]
    known = {"ts": "ts_raw", "value": "value_raw"}
    present = set(fields.columns)
    return fields.select(
        "source_line",
        "source_file",
        "_day",
        *[
            (pl.col(c).cast(pl.String) if c in present else pl.lit(None, pl.String)).alias(
                known.get(c, c)
            )
            for c in RAW_COLUMNS
        ],
        extra=pl.struct(unknown).struct.json_encode() if unknown else pl.lit(None, pl.String),
        parse_error=pl.lit(None, pl.String),
    )


# ---- JSONL ------------------------------------------------------------------------------
def _parse_jsonl(lines: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """JSON lines -> (text rows, unknown keys per file). One DuckDB pass for all files."""
    keys = ", ".join(f"'{c}'" for c in RAW_COLUMNS)
    drop = "{" + ", ".join(f'"{c}": null' for c in RAW_COLUMNS) + "}"
    paths = ", ".join(f"'$.{c}'" for c in RAW_COLUMNS)
    # One JSON object per line; anything else (broken JSON, arrays, scalars) is malformed.
    # CASE keeps the JSON functions away from invalid lines (they raise on those). A
    # merge-patch with nulls deletes the known keys, leaving the unknown ones for `extra`.
    fields = ", ".join(f"f[{i + 1}] as {c}" for i, c in enumerate(_TEXT))
    # DuckDB keeps insertion order (preserve_insertion_order, on by default), so rows
    # come back aligned with `lines` and need no key to be matched up again.
    query = f"""
        with c as (
            select text, json_valid(text) and ltrim(text)[1] = '{{' as ok from body),
        d as (
            select *, case when ok then list_filter(json_keys(text),
                                                    lambda k: k not in ({keys})) end as unk,
                case when ok then json_extract_string(text, [{paths}]) end as f
            from c)
        select ok, case when len(unk) > 0 then unk end as unk, {fields},
            case when len(unk) > 0 then json_merge_patch(text, '{drop}')::varchar end as extra
        from d"""
    con = _duck()
    con.register("body", lines.select("text").to_arrow())
    parsed = pl.from_arrow(con.sql(query).to_arrow_table())
    con.close()
    if parsed.height != lines.height:
        raise RuntimeError("JSONL parse lost rows")  # cannot happen: a projection only
    parsed = pl.concat(
        [lines.select("source_line", "source_file", "_day"), parsed], how="horizontal"
    )
    good = parsed.filter(pl.col("ok"))
    unknown = (
        good.filter(pl.col("unk").is_not_null())
        .select("source_file", pl.col("unk").explode())
        .unique()
        .sort("source_file", "unk")
        .group_by("source_file", maintain_order=True)
        .agg("unk")
    )
    frame = good.select(
        "source_line",
        "source_file",
        "_day",
        *_TEXT,
        "extra",
        parse_error=pl.lit(None, pl.String),
    )
    bad = _bad_lines(lines.filter(~parsed["ok"]), "malformed_line")
    return pl.concat([frame, bad], how="diagonal_relaxed"), dict(unknown.iter_rows())


# ---- Parquet ----------------------------------------------------------------------------
def _read_parquet(data: bytes) -> tuple[pl.DataFrame, list[str]]:
    """Typed rows of one Parquet file (row numbers from 1) and its unknown columns.

    Typed `ts` (timestamp or epoch seconds) and numeric `value` are taken as they are,
    not printed and parsed back; the raw text columns get their printed form.
    """
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError):
        raise UnreadableFile("invalid_parquet") from None
    frame = pl.from_arrow(table)
    if not isinstance(frame, pl.DataFrame):
        raise UnreadableFile("invalid_parquet")
    names = frame.columns
    unknown = [c for c in names if c not in RAW_COLUMNS]
    text = {
        c: (pl.col(c).cast(pl.String) if c in names else pl.lit(None, pl.String))
        for c in ("user_id", "item_id", "event_type")
    }
    frame = frame.with_row_index("source_line", offset=1).select(
        pl.col("source_line").cast(pl.Int64),
        **text,
        extra=pl.struct(unknown).struct.json_encode() if unknown else pl.lit(None, pl.String),
        parse_error=pl.lit(None, pl.String),
        **_typed_ts(frame.schema.get("ts")),
        **_typed_value(frame.schema.get("value")),
    )
    return _type_text(frame), unknown


def _typed_ts(dtype: pl.DataType | None) -> dict[str, pl.Expr]:
    if dtype is None:
        return {"ts_raw": pl.lit(None, pl.String)}
    ts = pl.col("ts")
    if isinstance(dtype, pl.Datetime):
        ts = ts.dt.replace_time_zone("UTC") if dtype.time_zone is None else ts
        ts = ts.dt.convert_time_zone("UTC").cast(_UTC)
        return {"ts": ts, "ts_raw": ts.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00")}
    if dtype.is_numeric():  # epoch seconds
        micros = (ts.cast(pl.Float64) * 1_000_000).cast(pl.Int64, strict=False)
        return {"ts": micros.cast(_UTC), "ts_raw": ts.cast(pl.String)}
    return {"ts_raw": ts.cast(pl.String)}


def _typed_value(dtype: pl.DataType | None) -> dict[str, pl.Expr]:
    if dtype is None:
        return {"value_raw": pl.lit(None, pl.String)}
    if dtype.is_numeric():
        return {
            "value": pl.col("value").cast(pl.Float64),
            "value_raw": pl.col("value").cast(pl.String),
        }
    return {"value_raw": pl.col("value").cast(pl.String)}


# ---- raw text -> typed ------------------------------------------------------------------
def _type_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Add typed `ts` and `value` (null where the text did not parse) when missing.

    `ts` takes the common `2024-01-01T10:00:00Z` spelling in one fast pass; only the rest
    (other ISO spellings, epoch seconds) goes through the general parser.
    """
    if "value" not in frame.columns:
        value = pl.col("value_raw").str.strip_chars().cast(pl.Float64, strict=False)
        frame = frame.with_columns(value=value)
    if "ts" in frame.columns:
        return frame
    fast = pl.col("ts_raw").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", strict=False, time_unit="us")
    frame = frame.with_columns(ts=fast.dt.replace_time_zone("UTC"))
    todo = frame.select(
        pl.arg_where(pl.col("ts").is_null() & pl.col("ts_raw").is_not_null())
    ).to_series()
    if todo.len():
        slow = frame.select(pl.col("ts_raw").gather(todo)).select(_parse_ts(pl.col("ts_raw")))
        frame = frame.with_columns(frame["ts"].scatter(todo, slow.to_series()))
    return frame


def _parse_ts(raw: pl.Expr) -> pl.Expr:
    """General ts parser: epoch seconds, or ISO-8601 (Z, +hh:mm, +hhmm, naive = UTC,
    space or T, date only = midnight)."""
    s = raw.str.strip_chars()
    epoch = s.str.contains(r"^[+-]?\d+(\.\d+)?$")
    iso = s.str.replace(" ", "T", literal=True).str.replace(r"[zZ]$", "+00:00")
    iso = pl.when(iso.str.len_bytes() == 10).then(iso + "T00:00:00").otherwise(iso)
    iso = pl.when(iso.str.contains(r"[+-]\d\d:?\d\d$")).then(iso).otherwise(iso + "+00:00")
    parsed_iso = pl.coalesce(
        iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us"),
        iso.str.to_datetime("%Y-%m-%dT%H:%M%z", strict=False, time_unit="us"),
    ).dt.convert_time_zone("UTC")
    from_epoch = (s.cast(pl.Float64, strict=False) * 1_000_000).cast(pl.Int64, strict=False)
    return pl.when(epoch).then(from_epoch.cast(_UTC)).otherwise(parsed_iso).alias("ts")


def _duck() -> duckdb.DuckDBPyConnection:
    # No extension installs: JSON and Parquet are built in (FIELD-NOTES); offline-safe.
    return duckdb.connect(config={"autoinstall_known_extensions": False})
