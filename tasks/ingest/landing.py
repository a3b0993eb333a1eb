"""A landing file's bytes: format, bounded streaming decompression, and its physical lines.

A file is read as a stream: `decoded` gives its (decompressed) bytes READ_BYTES at a time,
checked against `Limits` as they come, and `line_blocks` cuts them into blocks of at most
BLOCK_LINES lines, so no file, however large or however well compressed, is ever held
whole. Lines are found with numpy on a block and sliced zero-copy into an Arrow array;
only lines holding a byte >= 0x80 are checked for UTF-8. A file that cannot be read
completely raises `UnreadableFile` with a reason.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from tasks.config import Settings

TEXT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
READ_BYTES = 1 << 20  # stored bytes read, and decompressed bytes produced, per step
BLOCK_LINES = 250_000  # lines per block: bounds the line offsets (~40 B a line) of a block
BLOCK_BYTES = 32 << 20  # text per block, unless a single line is longer
_GZIP = 31  # zlib wbits: a gzip header and trailer (CRC and size checked)


class UnreadableFile(Exception):
    """A landing file that cannot be read completely; it contributes no rows."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one landing file may expand to (Settings.max_file_bytes, ...)."""

    max_file_bytes: int
    max_ratio: float
    ratio_min_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_file_bytes, settings.max_compression_ratio, settings.ratio_check_min_bytes
        )

    def check_stored(self, stored: int) -> None:
        """Raise UnreadableFile for a file too big to be opened at all."""
        if stored > self.max_file_bytes:
            raise UnreadableFile(
                f"file_too_large: size exceeds max_file_bytes ({self.max_file_bytes:,} bytes)"
            )

    def check(self, decoded: int, stored: int) -> None:
        """Raise UnreadableFile once `decoded` bytes from a file of `stored` bytes is too much."""
        if decoded > self.max_file_bytes:
            raise UnreadableFile(
                f"file_too_large: decompressed size exceeds max_file_bytes "
                f"({self.max_file_bytes:,} bytes)"
            )
        if decoded > self.ratio_min_bytes and decoded > self.max_ratio * max(stored, 1):
            raise UnreadableFile(
                f"compression_bomb: compression ratio exceeds max_compression_ratio "
                f"({self.max_ratio:g}x): {decoded:,} bytes from {stored:,} and counting"
            )


def file_kind(name: str) -> tuple[str, bool]:
    """(csv | jsonl | parquet, gzipped) from a landing file's name."""
    base = name.rsplit("/", 1)[-1].lower()
    gz = base.endswith(".gz")
    base = base.removesuffix(".gz")
    suffix = "." + base.rsplit(".", 1)[-1] if "." in base else ""
    if suffix == ".parquet":
        return "parquet", gz
    if suffix in TEXT_FORMATS:
        return TEXT_FORMATS[suffix], gz
    raise UnreadableFile("unsupported_format")


def decoded(stream: Any, stored: int, gz: bool, limits: Limits) -> Iterator[bytes]:
    """The bytes of an open landing file (decompressed when `gz`), READ_BYTES at a time.

    `stored` is the file's size; the output is checked against `limits` as it grows, so
    a bomb stops after a few MB. Concatenated gzip members are read in turn, NUL padding
    after the last is ignored; a stream cut before its end marker is `truncated_gzip`.
    """
    limits.check_stored(stored)
    if not gz:
        while chunk := stream.read(READ_BYTES):
            yield chunk
        return
    inflate, pending, total, members = zlib.decompressobj(_GZIP), b"", 0, 0
    fresh, more = True, False  # fresh: between members; more: output left in zlib
    while True:
        if not pending and not more:
            pending = stream.read(READ_BYTES)
            if not pending:
                break
        if fresh and members:  # NUL padding may follow a member (gzip tolerates it)
            pending = pending.lstrip(b"\0")
            if not pending:
                continue
        try:
            out = inflate.decompress(pending, READ_BYTES)
        except zlib.error:
            raise UnreadableFile("invalid_gzip") from None
        fresh, more, pending = False, len(out) == READ_BYTES, inflate.unconsumed_tail
        if inflate.eof:  # one member ended: what follows may be another one
            pending, inflate = inflate.unused_data + pending, zlib.decompressobj(_GZIP)
            fresh, more, members = True, False, members + 1
        total += len(out)
        limits.check(total, stored)
        if out:
            yield out
    if not fresh:  # the stream stops before its end marker: a cut-off upload
        raise UnreadableFile("truncated_gzip")


def line_blocks(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, int]]:
    """(block, line number of its first line) of a byte stream: every block but the last
    ends with a newline and holds at most BLOCK_LINES lines and, unless one line is
    longer, about BLOCK_BYTES."""
    parts: list[bytes] = []
    size = lines = 0
    first = 1
    for chunk in chunks:
        while chunk:
            n = chunk.count(b"\n")
            if lines + n < BLOCK_LINES and size + len(chunk) < BLOCK_BYTES:
                parts.append(chunk)
                size, lines = size + len(chunk), lines + n
                break
            if lines + n >= BLOCK_LINES:  # cut after the BLOCK_LINES-th line of the block
                k = BLOCK_LINES - lines
                cut = int(np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)[k - 1]) + 1
            else:  # big block: cut after the chunk's last line end (none: a long line)
                k, cut = n, chunk.rfind(b"\n") + 1
                if cut == 0:
                    parts.append(chunk)
                    size += len(chunk)
                    break
            parts.append(chunk[:cut])
            yield b"".join(parts), first
            first += lines + k
            parts, size, lines, chunk = [], 0, 0, chunk[cut:]
    if parts:
        yield b"".join(parts), first


def split_lines(data: bytes) -> tuple[pa.Array, pl.DataFrame]:
    """(every line as Arrow text, null where invalid; invalid lines as (source_line, text)).

    Newline offsets come from numpy and the lines are a zero-copy Arrow view of `data`;
    source_line counts from 1 within `data`. Only lines holding a byte >= 0x80 can be
    invalid UTF-8, so only those are checked (DuckDB `try(decode())`); an invalid line
    gets a null text and, in `extra`, a lossy copy with every non-ASCII byte shown as '?'.
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
