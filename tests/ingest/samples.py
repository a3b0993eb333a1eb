"""Landing files written into a test lake, and the bronze partition read back."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.lake.storage import Lake

DAY = dt.date(2024, 1, 1)
RAW = f"raw/interactions/dt={DAY}"
CSV = (
    b"user_id,item_id,ts,event_type,value\n"
    b"u1,i1,2024-01-01T10:00:00Z,view,1.5\n"  # line 2
    b"u2,i2,1704103200,,\n"  # line 3: epoch seconds, default event type, no value
    b"u3,i3,2024-01-01T12:00:00+02:00,click,x\n"  # line 4: offset, unparseable value
)


def land(lake: Lake, name: str, payload: bytes) -> str:
    """Write one landing file of DAY; returns its lake-relative name (= source_file)."""
    lake.write_bytes(f"{RAW}/{name}", payload)
    return f"{RAW}/{name}"


def stored_schema(lake: Lake, table: str) -> pa.Schema:
    """The Arrow schema stored in a partition file of DAY."""
    with lake.fs.open(lake.partition_file(table, dt=DAY), "rb") as f:
        return pq.read_schema(f)


def bronze(lake: Lake) -> pl.DataFrame:
    """The bronze partition of DAY in source order."""
    return lake.read_partition("bronze/interactions", dt=DAY).sort("source_file", "source_line")
