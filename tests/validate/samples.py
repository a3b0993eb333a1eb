"""Bronze rows for the validate tests: one good row, changed per case."""

from __future__ import annotations

import datetime as dt

import polars as pl

from schemas.interactions import BRONZE
from tasks.lake.storage import Lake

DAY = dt.date(2024, 1, 1)
NOON = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)
GOOD = {
    "user_id": "u1",
    "item_id": "i1",
    "ts": NOON,
    "event_type": "view",
    "value": 1.0,
    "ts_raw": "2024-01-01T12:00:00Z",
    "value_raw": "1.0",
    "extra": None,
    "parse_error": None,
    "source_file": "raw/interactions/dt=2024-01-01/a.csv",
    "source_line": 2,
    "ingested_at": NOON,
}


def bronze_rows(*rows: dict) -> pl.DataFrame:
    """Bronze rows: GOOD updated by each dict, on source lines 2, 3, ..."""
    full = [{**GOOD, "source_line": k + 2, **r} for k, r in enumerate(rows)]
    return pl.from_arrow(pl.DataFrame(full).to_arrow().cast(BRONZE))


def write_bronze(lake: Lake, frame: pl.DataFrame, day: dt.date = DAY) -> None:
    """Write a bronze partition directly (no ingest, so no bronze stamp)."""
    lake.write_partition("bronze/interactions", frame.to_arrow().cast(BRONZE), dt=day)
