"""A landing file's bytes: decompression, format, and its physical lines.

Lines are found with numpy on the decompressed buffer and sliced zero-copy into an Arrow
array; only lines holding a byte >= 0x80 are checked for UTF-8. A file that cannot be
read completely raises `UnreadableFile` with a reason code.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

TEXT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


class UnreadableFile(Exception):
    """A landing file that cannot be read completely; it contributes no rows."""


def open_file(name: str, payload: bytes) -> tuple[bytes, str]:
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


def split_lines(data: bytes) -> tuple[pa.Array, pl.DataFrame]:
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


def line_frame(text: pa.Array, first: int, tag: dict[str, pl.Expr]) -> pl.DataFrame:
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


def bad_lines(lines: pl.DataFrame, reason: str) -> pl.DataFrame:
    """Unparseable lines as bronze text rows: parse_error + the line text in `extra`."""
    return lines.select(
        pl.exclude("text"),
        extra=pl.struct(pl.col("text").alias("_raw_line")).struct.json_encode(),
        parse_error=pl.lit(reason),
    )


def duck() -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection that never installs extensions."""
    # JSON and Parquet are built in (FIELD-NOTES): no INSTALL, so it works offline.
    return duckdb.connect(config={"autoinstall_known_extensions": False})


def _where(arr: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Positions where `test` holds, block by block (no buffer-sized boolean temporary)."""
    block = 1 << 24
    parts = [np.flatnonzero(test(arr[i : i + block])) + i for i in range(0, len(arr), block)]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def _invalid_utf8(lines: pa.Array) -> np.ndarray:
    """Boolean mask of the lines that are not valid UTF-8."""
    con = duck()
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
