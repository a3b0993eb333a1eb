"""Ingest: the landing files of one date -> one typed bronze partition.

Reads   raw/interactions/dt=D/*.{csv,jsonl,ndjson,json,parquet}[.gz]
Writes  bronze/interactions/dt=D/part-0.parquet  (schemas.interactions.BRONZE)
        bronze/interactions/dt=D/_files.json     (content hash of every source file)

Every physical line of a text file becomes exactly one bronze row, so `source_line` is the
line an operator sees in an editor (header = line 1). Lines are found with numpy on the
decompressed buffer and sliced zero-copy into an Arrow array; fields are split column-wise
by Polars (CSV) or DuckDB's JSON functions (JSONL). A line that cannot be parsed is kept
with `parse_error` set and its text in `extra` (`{"_raw_line": ...}`), so validation
quarantines it visibly. Blank lines are not events and are skipped. A file that cannot be
read completely (truncated gzip, broken Parquet) contributes no rows and is reported.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.interactions import BRONZE, DEFAULT_EVENT_TYPE, RAW_COLUMNS
from tasks.config import Settings
from tasks.storage import Lake, parse_date

RAW_TABLE = "raw/interactions"
BRONZE_TABLE = "bronze/interactions"
MANIFEST = "_files.json"
MANIFEST_VERSION = 1
TEXT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
# Raw text columns every reader returns; typing happens once, in `_type_bronze`.
_TEXT_COLS = ("user_id", "item_id", "ts_raw", "event_type", "value_raw", "extra", "parse_error")
_TEXT_SCHEMA = {**dict.fromkeys(_TEXT_COLS, pl.String), "source_line": pl.Int64}


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


def ingest_date(lake: Lake, date: str | dt.date, settings: Settings) -> IngestResult:
    """Ingest every landing file of `date` into one bronze partition (idempotent).

    A date whose file names and content hashes match the manifest of the existing bronze
    partition is skipped; otherwise the date is re-ingested whole and replaced atomically.
    `settings` is accepted for a uniform stage signature (ingest has no tunables yet).
    """
    del settings
    day = parse_date(date)
    paths = lake.files(RAW_TABLE, dt=day)
    payloads = {lake_relative(lake, p): lake.fs.cat_file(p) for p in paths}
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in payloads.items()}
    manifest_path = lake_relative(lake, f"{lake.path(BRONZE_TABLE, dt=day)}/{MANIFEST}")
    old = lake.read_json(manifest_path)
    if (
        old is not None
        and old.get("version") == MANIFEST_VERSION
        and old.get("files") == hashes
        and lake.exists(BRONZE_TABLE, dt=day)
    ):
        return IngestResult(
            date=day,
            files=len(hashes),
            rows=int(old["rows"]),
            skipped=True,
            corrupt_files=[tuple(x) for x in old["corrupt_files"]],
            unknown_columns=old["unknown_columns"],
            bronze_path=lake.partition_file(BRONZE_TABLE, dt=day),
        )

    # Files are independent: two workers keep both cores busy (numpy, zlib, Polars and
    # DuckDB release the GIL on the heavy parts).
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda kv: _read_file(*kv), payloads.items()))
    frames, corrupt, unknown = [], [], {}
    for name, (frame, extra_cols, error) in zip(payloads, outcomes, strict=True):
        if error is not None:
            corrupt.append((name, error))
            continue
        frames.append(frame.with_columns(source_file=pl.lit(name)))
        if extra_cols:
            unknown[name] = extra_cols
    empty = pl.DataFrame(schema={**_TEXT_SCHEMA, "source_file": pl.String})
    raw = pl.concat([empty, *frames], how="vertical") if frames else empty
    bronze = _type_bronze(raw, ingested_at=dt.datetime.now(dt.UTC))
    target = lake.write_partition(BRONZE_TABLE, bronze, dt=day)
    lake.write_json(
        manifest_path,
        {
            "version": MANIFEST_VERSION,
            "files": hashes,
            "rows": bronze.num_rows,
            "corrupt_files": corrupt,
            "unknown_columns": unknown,
        },
    )
    return IngestResult(day, len(hashes), bronze.num_rows, False, corrupt, unknown, target)


# ---- one file -> raw text frame ---------------------------------------------------------
def _read_file(name: str, payload: bytes) -> tuple[pl.DataFrame | None, list[str], str | None]:
    """(text frame, unknown columns, None) or (None, [], reason) for an unreadable file."""
    base = name.rsplit("/", 1)[-1].lower()
    try:
        if base.endswith(".gz"):
            payload = _gunzip(payload)
            base = base[:-3]
        suffix = "." + base.rsplit(".", 1)[-1] if "." in base else ""
        if suffix == ".parquet":
            frame, extra = _read_parquet(payload)
        elif TEXT_FORMATS.get(suffix) == "csv":
            frame, extra = _read_csv(payload)
        elif TEXT_FORMATS.get(suffix) == "jsonl":
            frame, extra = _read_jsonl(payload)
        else:
            return None, [], "unsupported_format"
    except UnreadableFile as exc:
        return None, [], str(exc)
    return frame.select(*_TEXT_COLS, "source_line").cast(_TEXT_SCHEMA), extra, None


def _gunzip(payload: bytes) -> bytes:
    try:
        return gzip.decompress(payload)
    except EOFError:  # the stream stops before its end marker: a cut-off upload
        raise UnreadableFile("truncated_gzip") from None
    except (OSError, zlib.error):
        raise UnreadableFile("invalid_gzip") from None


def _split_lines(data: bytes) -> pl.DataFrame:
    """Physical lines as (source_line, text, bad_utf8); text has no line terminator.

    Newline offsets come from numpy and the lines are a zero-copy Arrow view of `data`.
    Invalid UTF-8 lines get a null text and a lossy copy (non-ASCII bytes as '?').
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    starts = np.concatenate(([0], np.flatnonzero(arr == 10) + 1)).astype(np.int64)
    if starts[-1] == len(data):  # the usual trailing newline opens no line
        starts = starts[:-1]
    offsets = np.append(starts, len(data)).astype(np.int64)
    raw = pa.Array.from_buffers(
        pa.large_binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    try:
        text = raw.cast(pa.large_string())  # validates UTF-8 in one pass
        bad = pa.nulls(len(raw), pa.large_string())
    except pa.ArrowInvalid:
        text, bad = _decode_lossy(raw)
    return pl.DataFrame(
        {
            "source_line": pl.int_range(1, len(starts) + 1, eager=True, dtype=pl.Int64),
            "text": pl.from_arrow(text).str.strip_chars_end("\r\n"),
            "bad_utf8": pl.from_arrow(bad).str.strip_chars_end("\r\n"),
        }
    )


def _decode_lossy(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(valid text or null, lossy text of invalid lines or null), vectorised."""
    con = _duck()
    con.register("lines_tbl", pa.table({"raw": raw}))
    text = con.sql("select try(decode(raw)) as t from lines_tbl").to_arrow_table()["t"]
    text = text.combine_chunks().cast(pa.large_string())
    invalid = pc.and_(pc.is_null(text), pc.is_valid(raw))
    bytes_ = np.frombuffer(raw.buffers()[2], dtype=np.uint8).copy()
    bytes_[bytes_ >= 0x80] = ord("?")  # readable evidence for the quarantine, not a decode
    ascii_ = pa.Array.from_buffers(
        pa.large_string(), len(raw), [None, raw.buffers()[1], pa.py_buffer(bytes_)]
    )
    return text, pc.if_else(invalid, ascii_, pa.nulls(len(raw), pa.large_string()))


def _bad_lines(lines: pl.DataFrame, reason: str) -> pl.DataFrame:
    """Unparseable lines as bronze text rows: parse_error + the line text in `extra`."""
    return lines.select(
        "source_line",
        extra=pl.struct(pl.col("text").alias("_raw_line")).struct.json_encode(),
        parse_error=pl.lit(reason),
    )


def _classify(lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(readable non-blank lines, invalid-encoding rows)."""
    enc = lines.filter(pl.col("bad_utf8").is_not_null())
    readable = lines.filter(pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != ""))
    invalid = _bad_lines(enc.with_columns(text=pl.col("bad_utf8")), "invalid_encoding")
    return readable.select("source_line", "text"), invalid


def _read_csv(data: bytes) -> tuple[pl.DataFrame, list[str]]:
    lines = _split_lines(data)
    if lines.height == 0:
        return pl.DataFrame(schema=_TEXT_SCHEMA), []
    header_text = lines["text"][0] if lines["text"][0] is not None else lines["bad_utf8"][0]
    names = _parse_header(header_text.lstrip("\ufeff"))
    body, invalid = _classify(lines.slice(1))
    n = len(names)
    quoted = pl.col("text").str.contains('"', literal=True)
    plain = body.filter(~quoted).with_columns(parts=pl.col("text").str.split(","))
    ok_plain = plain.filter(pl.col("parts").list.len() == n)
    fields = ok_plain.select(
        "source_line", *[pl.col("parts").list.get(i).alias(c) for i, c in enumerate(names)]
    )
    malformed = [plain.filter(pl.col("parts").list.len() != n).select("source_line", "text")]
    q = body.filter(quoted)
    if q.height:
        q_fields, q_bad = _parse_quoted(q, names)
        fields = pl.concat([fields, q_fields], how="vertical_relaxed")
        malformed.append(q_bad)
    fields = fields.with_columns(pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in names)
    frame, extra = _from_columns(fields, names)
    bad = _bad_lines(pl.concat(malformed), "malformed_line")
    return pl.concat([frame, bad, invalid], how="diagonal_relaxed"), extra


def _parse_header(text: str) -> list[str]:
    names = [n.strip() for n in next(csv.reader([text]), [])]
    if not any(names):
        raise UnreadableFile("missing_header")
    return names


def _parse_quoted(q: pl.DataFrame, names: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lines containing quotes: parsed by Arrow's CSV reader, each prefixed by its number.

    A line with an odd number of quotes cannot close its quoted field on the same line
    (multi-line values are not supported) and is malformed up front, so Arrow never joins
    two physical lines. Rows Arrow rejects come back through the handler, by line number.
    """
    odd = pl.col("text").str.count_matches('"', literal=True) % 2 == 1
    bad = [q.filter(odd).select("source_line", "text")]
    ok = q.filter(~odd)
    rejected: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:  # called for rejected rows only
        rejected.append(int(row.text.split(",", 1)[0]))
        return "skip"

    body = ok.select(pl.format("{},{}", "source_line", "text")).to_series().str.join("\n")
    table = pacsv.read_csv(
        io.BytesIO(body[0].encode()),
        read_options=pacsv.ReadOptions(column_names=["source_line", *names], use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={"source_line": pa.int64(), **dict.fromkeys(names, pa.string())},
            strings_can_be_null=False,
        ),
    )
    fields = pl.from_arrow(table)
    if (
        table.num_rows + len(rejected) != ok.height
        or fields["source_line"].n_unique() != table.num_rows
    ):
        # A stray quote inside an unquoted field made Arrow join lines: redo these (rare)
        # lines one by one with the strict csv module so each keeps its own fate.
        fields, rejected = _parse_quoted_strict(ok, names)
    bad.append(ok.filter(pl.col("source_line").is_in(rejected)).select("source_line", "text"))
    return fields, pl.concat(bad)


def _parse_quoted_strict(ok: pl.DataFrame, names: list[str]) -> tuple[pl.DataFrame, list[int]]:
    rows, rejected = [], []
    for line, text in ok.iter_rows():  # fallback for pathological quoting only
        try:
            values = next(csv.reader([text], strict=True))
        except csv.Error:
            values = []
        if len(values) == len(names):
            rows.append([line, *values])
        else:
            rejected.append(line)
    schema = {"source_line": pl.Int64, **dict.fromkeys(names, pl.String)}
    return pl.DataFrame(rows, schema=schema, orient="row"), rejected


def _from_columns(fields: pl.DataFrame, names: list[str]) -> tuple[pl.DataFrame, list[str]]:
    """Known columns renamed to bronze text columns; unknown ones packed into `extra`."""
    unknown = [c for c in names if c not in RAW_COLUMNS]
    known = {"ts": "ts_raw", "value": "value_raw"}
    frame = fields.select(
        "source_line",
        *[
            (pl.col(c).cast(pl.String) if c in fields.columns else pl.lit(None, pl.String)).alias(
                known.get(c, c)
            )
            for c in RAW_COLUMNS
        ],
        extra=pl.struct(unknown).struct.json_encode() if unknown else pl.lit(None, pl.String),
        parse_error=pl.lit(None, pl.String),
    )
    return frame, unknown


def _read_jsonl(data: bytes) -> tuple[pl.DataFrame, list[str]]:
    lines = _split_lines(data)
    body, invalid = _classify(lines)
    keys = ", ".join(f"'{c}'" for c in RAW_COLUMNS)
    drop = "{" + ", ".join(f'"{c}": null' for c in RAW_COLUMNS) + "}"
    # One JSON object per line; anything else (broken JSON, arrays, scalars) is malformed.
    # CASE keeps the JSON functions away from invalid lines (they raise on those). A
    # merge-patch with nulls deletes the known keys, leaving the unknown ones for `extra`.
    query = f"""
        with c as (
            select source_line, text,
                   case when json_valid(text) then json_type(text::json) = 'OBJECT'
                        else false end as ok
            from body),
        d as (
            select *, case when ok then list_filter(json_keys(text),
                                                    lambda k: k not in ({keys})) end as unk
            from c)
        select source_line, ok, case when len(unk) > 0 then unk end as unk,
            case when not ok then text end as text,
            case when ok then json_extract_string(text, ['$.user_id', '$.item_id', '$.ts',
                '$.event_type', '$.value']) end as f,
            case when len(unk) > 0 then json_merge_patch(text, '{drop}')::varchar end as extra
        from d"""
    con = _duck()
    con.register("body", body.to_arrow())
    parsed = pl.from_arrow(con.sql(query).to_arrow_table())
    good = parsed.filter(pl.col("ok"))
    unknown = sorted(good["unk"].explode().drop_nulls().unique().to_list())
    names = ("user_id", "item_id", "ts_raw", "event_type", "value_raw")
    frame = good.select(
        "source_line",
        *[pl.col("f").list.get(i).alias(c) for i, c in enumerate(names)],
        "extra",
        parse_error=pl.lit(None, pl.String),
    )
    bad = _bad_lines(parsed.filter(~pl.col("ok")), "malformed_line")
    return pl.concat([frame, bad, invalid], how="diagonal_relaxed"), unknown


def _read_parquet(data: bytes) -> tuple[pl.DataFrame, list[str]]:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError):
        raise UnreadableFile("invalid_parquet") from None
    frame = pl.from_arrow(table)
    if not isinstance(frame, pl.DataFrame):
        raise UnreadableFile("invalid_parquet")
    if "ts" in frame.columns and isinstance(frame.schema["ts"], pl.Datetime):
        ts = pl.col("ts")
        ts = ts.dt.replace_time_zone("UTC") if frame.schema["ts"].time_zone is None else ts
        iso = ts.dt.convert_time_zone("UTC").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        frame = frame.with_columns(iso.alias("ts"))
    frame = frame.with_row_index("source_line", offset=1).cast({"source_line": pl.Int64})
    return _from_columns(frame, [c for c in frame.columns if c != "source_line"])


# ---- raw text -> typed bronze ----------------------------------------------------------
def _type_bronze(raw: pl.DataFrame, ingested_at: dt.datetime) -> pa.Table:
    """Typed columns beside the raw text; null where the text did not parse."""
    utc = pl.Datetime("us", "UTC")
    s = pl.col("ts_raw").str.strip_chars()
    epoch = s.str.contains(r"^[+-]?\d+(\.\d+)?$")
    # Normalise every ISO spelling to one format so a single strptime pass parses it:
    # "Z" -> +00:00, naive -> +00:00 (UTC), date only -> midnight.
    iso = s.str.replace(" ", "T", literal=True).str.replace(r"[zZ]$", "+00:00")
    iso = pl.when(iso.str.len_bytes() == 10).then(iso + "T00:00:00").otherwise(iso)
    iso = pl.when(iso.str.contains(r"[+-]\d\d:?\d\d$")).then(iso).otherwise(iso + "+00:00")
    parsed_iso = pl.coalesce(
        iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us"),
        iso.str.to_datetime("%Y-%m-%dT%H:%M%z", strict=False, time_unit="us"),
    ).dt.convert_time_zone("UTC")
    from_epoch = (s.cast(pl.Float64, strict=False) * 1_000_000).cast(pl.Int64, strict=False)
    ts = pl.when(epoch).then(from_epoch.cast(utc)).otherwise(parsed_iso)
    event = pl.col("event_type")
    return (
        raw.lazy()
        .with_columns(
            ts=ts,
            value=pl.col("value_raw").str.strip_chars().cast(pl.Float64, strict=False),
            # Missing event type means the default, but only on lines that were readable.
            event_type=pl.when(
                (event.is_null() | (event.str.strip_chars() == ""))
                & pl.col("parse_error").is_null()
            )
            .then(pl.lit(DEFAULT_EVENT_TYPE))
            .otherwise(event),
            ingested_at=pl.lit(ingested_at).cast(utc),
        )
        .select(BRONZE.names)
        .collect()
        .to_arrow()
        .cast(BRONZE)
    )


def _duck() -> duckdb.DuckDBPyConnection:
    # No extension installs: JSON and Parquet are built in (FIELD-NOTES); offline-safe.
    return duckdb.connect(config={"autoinstall_known_extensions": False})


def lake_relative(lake: Lake, path: str) -> str:
    """A path below the lake root, as recorded in `source_file` and given to write_json."""
    base = lake.base.rstrip("/") + "/"
    return path[len(base) :] if path.startswith(base) else path
