"""Landing files -> typed bronze rows, one file at a time, in pieces of bounded size.

Each file is streamed (tasks.ingest.landing: decompressed with caps, cut into blocks of
lines); the lines of consecutive files are gathered into pieces of at most SLICE lines,
parsed together (one Polars pass per CSV header, one DuckDB query for JSONL), so many
small files cost one pass and a big file never sits in memory whole. A Parquet file is
read batch by batch, only its declared columns unless unknown ones are kept. Whatever a
file does, its error is its own: it is reported (name -> reason) and the others go on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.interactions import BRONZE, DEFAULT_EVENT_TYPE, RAW_COLUMNS
from tasks.config import Settings
from tasks.ingest.landing import (
    BLOCK_LINES,
    Limits,
    UnreadableFile,
    bad_lines,
    decoded,
    file_kind,
    line_blocks,
    line_frame,
    split_lines,
)
from tasks.ingest.text import csv_header, parse_csv, parse_jsonl
from tasks.ingest.typed import UTC, as_text, is_scalar, type_text, typed_ts, typed_value

# Lines typed together: bounds the memory of the string work.
SLICE = BLOCK_LINES
# A file with more columns than this (a CSV header of commas, a wide Parquet) is rejected:
# every column costs memory on every line. Unknown column names reported per file, at most.
MAX_COLUMNS = 1000
MAX_UNKNOWN_REPORTED = 100
# Bronze columns every reader returns (ingested_at is added once, when writing).
READ_COLUMNS = [f.name for f in BRONZE if f.name != "ingested_at"]
_SCHEMA = {
    **dict.fromkeys(READ_COLUMNS, pl.String),
    "ts": UTC,
    "value": pl.Float64,
    "source_line": pl.Int64,
}


@dataclass(frozen=True)
class LandingFile:
    """One landing file: its date, lake-relative name (= source_file), path, stored size."""

    day: dt.date
    name: str
    path: str
    size: int


@dataclass(frozen=True)
class ReadOptions:
    """What a read may expand to and whether unknown columns are kept."""

    limits: Limits
    keep_unknown: bool

    @classmethod
    def of(cls, settings: Settings) -> ReadOptions:
        return cls(Limits.of(settings), settings.keep_unknown_columns)


@dataclass
class ReadReport:
    """Filled while the pieces are consumed: unreadable files (name -> reason), unknown
    columns per file, and the files some of whose rows were already yielded."""

    corrupt: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, list[str]] = field(default_factory=dict)
    yielded: set[str] = field(default_factory=set)

    def add_unknown(self, name: str, columns: list[str]) -> None:
        if columns:
            names = sorted({*self.unknown.get(name, []), *columns})
            self.unknown[name] = names[:MAX_UNKNOWN_REPORTED]


@dataclass
class _Part:
    """Lines of one file waiting in a piece: Arrow text, first line number, file."""

    text: pa.Array
    first: int
    file: LandingFile


def read_files(
    fs: Any, files: list[LandingFile], options: ReadOptions, report: ReadReport
) -> Iterator[pl.DataFrame]:
    """Typed bronze rows (READ_COLUMNS + `_day`) of these files, in pieces of at most
    about SLICE lines. A file that fails is reported in `report.corrupt`; the rows it
    gave before failing may already have been yielded (see `report.yielded`)."""
    pending = _Pending(options.keep_unknown, report)
    for f in files:
        try:
            yield from _read_file(fs, f, options, report, pending)
        except UnreadableFile as exc:
            report.corrupt[f.name] = str(exc)
            pending.drop(f.name)
        except Exception as exc:  # anything else a hostile file provokes is its own too
            report.corrupt[f.name] = _error(exc)
            pending.drop(f.name)
    yield from pending.flush()


def _read_file(
    fs: Any, f: LandingFile, options: ReadOptions, report: ReadReport, pending: _Pending
) -> Iterator[pl.DataFrame]:
    if f.size == 0:
        raise UnreadableFile("empty_file")
    kind, gz = file_kind(f.name)
    options.limits.check_stored(f.size)  # before opening it
    tag = _tag(f)
    with fs.open(f.path, "rb") as stream:
        if kind == "parquet":
            yield from _parquet(stream, f, tag, options, report)
            return
        names: tuple[str, ...] | None = None
        empty = True
        for block, first in line_blocks(decoded(stream, f.size, gz, options.limits)):
            empty = False
            text, invalid = split_lines(block)
            start = first
            if kind == "csv" and names is None:  # line 1 is the header
                names, text, invalid = csv_header(text, invalid)
                _check_width(len(names))
                report.add_unknown(f.name, [c for c in names if c not in RAW_COLUMNS])
                start = 2
            if invalid.height:
                shifted = invalid.with_columns(pl.col("source_line") + (first - 1))
                yield _finish(bad_lines(shifted, "invalid_encoding").with_columns(**tag))
                report.yielded.add(f.name)
            if len(text):
                yield from pending.add((kind, *(names or ())), _Part(text, start, f))
        if empty:
            raise UnreadableFile("empty_file")  # e.g. a .gz of nothing


class _Pending:
    """Lines of consecutive files waiting to be parsed together, by format and header."""

    def __init__(self, keep_unknown: bool, report: ReadReport) -> None:
        self.keep, self.report = keep_unknown, report
        self.groups: dict[tuple[str, ...], list[_Part]] = {}
        self.lines = 0

    def add(self, key: tuple[str, ...], part: _Part) -> Iterator[pl.DataFrame]:
        if self.lines and self.lines + len(part.text) > SLICE:
            yield from self.flush()
        self.groups.setdefault(key, []).append(part)
        self.lines += len(part.text)

    def drop(self, name: str) -> None:
        """Forget the waiting lines of a file that failed (it contributes no rows)."""
        for key, parts in self.groups.items():
            self.groups[key] = [p for p in parts if p.file.name != name]
        self.lines = sum(len(p.text) for parts in self.groups.values() for p in parts)

    def flush(self) -> Iterator[pl.DataFrame]:
        groups, self.groups, self.lines = self.groups, {}, 0
        for key, parts in groups.items():
            if not parts:
                continue
            frame = self._parse(key, parts)
            # A parser error: each file alone, so only the culprit fails.
            frames = [frame] if frame is not None else [self._parse(key, [p]) for p in parts]
            yield from (f for f in frames if f is not None)

    def _parse(self, key: tuple[str, ...], parts: list[_Part]) -> pl.DataFrame | None:
        lines = [line_frame(p.text, p.first, _tag(p.file)) for p in parts]
        try:
            body = pl.concat(lines)
            if key[0] == "csv":
                frame = parse_csv(body, list(key[1:]), self.keep)
            else:
                frame, keys = parse_jsonl(body, self.keep)
                for name, k in keys.items():
                    self.report.add_unknown(name, k)
            frame = _finish(type_text(frame))
        except Exception as exc:
            if len(parts) == 1:
                self.report.corrupt[parts[0].file.name] = _error(exc)
            return None
        # One non-blank line is one row: the files that had one have rows out now.
        self.report.yielded.update(
            p.file.name for p, x in zip(parts, lines, strict=True) if x.height
        )
        return frame


def _parquet(
    stream: Any, f: LandingFile, tag: dict, options: ReadOptions, report: ReadReport
) -> Iterator[pl.DataFrame]:
    """Typed rows of one landing Parquet file, batch by batch (row numbers from 1).

    Typed `ts` (timestamp or epoch) and numeric `value` are taken as they are, not
    printed and parsed back; a nested or boolean id is kept as JSON text with
    `parse_error` = invalid_user_id / invalid_item_id. Unknown columns are not decoded
    unless kept; the decoded size is checked against the limits batch by batch.
    """
    try:
        parquet = pq.ParquetFile(stream)
        names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError):
        raise UnreadableFile("invalid_parquet") from None
    _check_width(len(names))
    unknown = [c for c in names if c not in RAW_COLUMNS]
    report.add_unknown(f.name, unknown)
    kept = unknown if options.keep_unknown else []
    columns = [c for c in names if c in RAW_COLUMNS or c in kept]
    line, size = 1, 0
    try:
        for batch in parquet.iter_batches(batch_size=SLICE, columns=columns or names[:1]):
            size += batch.nbytes
            options.limits.check(size, f.size)
            frame = pl.from_arrow(batch).with_row_index("source_line", offset=line)
            frame = _typed_parquet(frame.select("source_line", *columns), kept)
            yield _finish(frame.with_columns(**tag))
            report.yielded.add(f.name)
            line += batch.num_rows
    except (pa.ArrowException, OSError):
        raise UnreadableFile("invalid_parquet") from None


def _typed_parquet(frame: pl.DataFrame, unknown: list[str]) -> pl.DataFrame:
    schema = frame.schema
    invalid = [
        pl.when(pl.col(c).is_not_null()).then(pl.lit(f"invalid_{c}"))
        for c in ("user_id", "item_id")
        if c in schema and not is_scalar(schema[c])
    ]
    frame = frame.select(
        pl.col("source_line").cast(pl.Int64),
        **{c: as_text(c, schema.get(c)) for c in ("user_id", "item_id", "event_type")},
        extra=pl.struct(unknown).struct.json_encode() if unknown else pl.lit(None, pl.String),
        parse_error=pl.coalesce(invalid) if invalid else pl.lit(None, pl.String),
        **typed_ts(schema.get("ts")),
        **typed_value(schema.get("value")),
    )
    return type_text(frame)


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


def _check_width(columns: int) -> None:
    if columns > MAX_COLUMNS:
        raise UnreadableFile(f"too_many_columns: {columns:,} (at most {MAX_COLUMNS:,})")


def _tag(f: LandingFile) -> dict[str, pl.Expr]:
    return {"source_file": pl.lit(f.name), "_day": pl.lit(f.day)}


def _error(exc: Exception) -> str:
    """A reason for an unexpected failure on one file (its type and first words)."""
    return f"read_error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
