"""Landing files -> typed bronze rows, in pieces of bounded size.

The files of a chunk are parsed together: one Polars pass over all CSV lines sharing a
header, one DuckDB query over all JSONL lines per piece; a Parquet file is typed on its
own (its schema is its own). A big file is cut into zero-copy slices of `SLICE` lines, so
the string work of one piece, not of the whole file, is in memory at once.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.interactions import BRONZE, DEFAULT_EVENT_TYPE, RAW_COLUMNS
from tasks.ingest.landing import UnreadableFile, bad_lines, line_frame, open_file, split_lines
from tasks.ingest.text import csv_lines, parse_csv, parse_jsonl
from tasks.ingest.typed import UTC, type_text, typed_ts, typed_value

# Lines typed together: bounds the memory of the string work on a big file.
SLICE = 250_000
# Bronze columns every reader returns (ingested_at is added once, when writing).
READ_COLUMNS = [f.name for f in BRONZE if f.name != "ingested_at"]
_SCHEMA = {
    **dict.fromkeys(READ_COLUMNS, pl.String),
    "ts": UTC,
    "value": pl.Float64,
    "source_line": pl.Int64,
}


def read_files(
    files: list[tuple[dt.date, str, bytes]],
    corrupt: dict[str, str],
    unknown: dict[str, list[str]],
) -> Iterator[pl.DataFrame]:
    """Typed bronze rows (READ_COLUMNS + `_day`) of these (date, name, payload) files, in
    pieces of at most SLICE lines.

    Unreadable files go to `corrupt` (name -> reason), unknown columns to `unknown`
    (name -> sorted column names); both are filled as the pieces are consumed.
    """
    csv_groups: dict[tuple[str, ...], list[tuple[pa.Array, int, dict]]] = {}
    jsonl: list[tuple[pa.Array, int, dict]] = []
    for day, name, payload in files:
        tag = {"source_file": pl.lit(name), "_day": pl.lit(day)}
        try:
            data, kind = open_file(name, payload)
            if kind == "parquet":
                frame, extra = read_parquet(data)
                yield _finish(frame.with_columns(**tag))
            elif kind == "csv":
                names, lines, invalid = csv_lines(data)
                if len(lines):
                    csv_groups.setdefault(names, []).append((lines, 2, tag))
                extra = [c for c in names if c not in RAW_COLUMNS]
            else:
                lines, invalid = split_lines(data)
                jsonl.append((lines, 1, tag))
                extra = []
        except UnreadableFile as exc:
            corrupt[name] = str(exc)
            continue
        if kind != "parquet" and invalid.height:
            yield _finish(bad_lines(invalid, "invalid_encoding").with_columns(**tag))
        if extra:
            unknown[name] = extra
    for names, parts in csv_groups.items():
        for piece in _pieces(parts):
            yield _finish(type_text(parse_csv(piece, list(names))))
    keys: dict[str, set[str]] = {}
    for piece in _pieces(jsonl):
        parsed, piece_keys = parse_jsonl(piece)
        for name, k in piece_keys.items():
            keys.setdefault(name, set()).update(k)
        yield _finish(type_text(parsed))
    unknown.update({name: sorted(k) for name, k in keys.items()})


def read_parquet(data: bytes) -> tuple[pl.DataFrame, list[str]]:
    """Typed rows of one landing Parquet file (row numbers from 1) and its unknown columns.

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
        **typed_ts(frame.schema.get("ts")),
        **typed_value(frame.schema.get("value")),
    )
    return type_text(frame), unknown


def _pieces(parts: list[tuple[pa.Array, int, dict]]) -> Iterator[pl.DataFrame]:
    """Line frames of at most ~SLICE lines, from (Arrow lines, first line number, tags).

    Small files are gathered into one frame; a big file is cut into zero-copy slices.
    """
    frames, size = [], 0
    for text, first, tag in parts:
        for offset in range(0, len(text), SLICE):
            piece = text.slice(offset, SLICE)
            frames.append(line_frame(piece, first + offset, tag))
            size += len(piece)
            if size >= SLICE:
                yield pl.concat(frames)
                frames, size = [], 0
    if frames:
        yield pl.concat(frames)


def _finish(frame: pl.DataFrame) -> pl.DataFrame:
    """Every bronze column in order (nulls where a reader had none), default event type."""
    empty = pl.DataFrame(schema={**_SCHEMA, "_day": pl.Date})
    frame = pl.concat([empty, frame], how="diagonal_relaxed").select(*READ_COLUMNS, "_day")
    # Missing event type means the default, but only on lines that were readable.
    event = pl.col("event_type")
    return frame.with_columns(
        event_type=pl.when(
            (event.is_null() | (event.str.strip_chars() == "")) & pl.col("parse_error").is_null()
        )
        .then(pl.lit(DEFAULT_EVENT_TYPE))
        .otherwise(event)
    )
