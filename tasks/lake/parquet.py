"""Parquet files as the lake writes them: one partition built row group by row group, or
one small file at once; zstd, with cheaper settings for the big event-log tables."""

from __future__ import annotations

import io

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 1 << 20  # rows per Parquet row group: big files are written group by group


class PartitionWriter:
    """One partition's Parquet file, built in memory row group by row group (zstd)."""

    def __init__(self, path: str, schema: pa.Schema | None) -> None:
        self.path, self.schema, self.rows = path, schema, 0
        self._buf = io.BytesIO()
        self._writer: pq.ParquetWriter | None = None

    def write(self, data: pl.DataFrame | pa.Table) -> None:
        """Append a piece, cast to the schema."""
        arrow = data.to_arrow() if isinstance(data, pl.DataFrame) else data
        if self.schema is not None:
            arrow = arrow.select(self.schema.names).cast(self.schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._buf, arrow.schema, **_write_options(arrow))
        self._writer.write_table(arrow, row_group_size=ROW_GROUP)
        self.rows += arrow.num_rows

    def finish(self) -> bytes:
        """Close the file and return its bytes (an empty partition keeps its schema)."""
        if self._writer is None:
            empty = self.schema.empty_table() if self.schema is not None else pa.table({})
            self.write(empty)
        self._writer.close()
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages
        return self._buf.getvalue()


def parquet_bytes(data: pl.DataFrame | pa.Table) -> bytes:
    """One Parquet file (zstd) in memory. Text is stored as plain `string` (Polars exports
    `large_string`), so every reader sees the same types whichever code wrote the file."""
    arrow = data.to_arrow() if isinstance(data, pl.DataFrame) else data
    arrow = arrow.cast(
        pa.schema(
            pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type)
            for f in arrow.schema
        )
    )
    buf = io.BytesIO()
    pq.write_table(arrow, buf, **_write_options(arrow))
    return buf.getvalue()


# Event logs (bronze, silver, quarantine: the tables with `source_file`) are the big writes:
# zstd level 1, dictionaries only for repetitive strings and statistics only where readers
# filter; both cost more than they save on free text (benchmarks/bench_ingest.py).
_EVENT_LOG_DICTIONARY = ("user_id", "item_id", "event_type", "source_file", "parse_error", "reason")
_EVENT_LOG_STATISTICS = ("ts", "source_line", "ingested_at")


def _write_options(arrow: pa.Table) -> dict[str, object]:
    names = arrow.schema.names
    if "source_file" not in names:
        return {"compression": "zstd"}
    return {
        "compression": "zstd",
        "compression_level": 1,
        "use_dictionary": [c for c in _EVENT_LOG_DICTIONARY if c in names],
        "write_statistics": [c for c in _EVENT_LOG_STATISTICS if c in names],
    }
