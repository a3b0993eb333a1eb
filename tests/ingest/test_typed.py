"""tasks/ingest/typed.py: every documented ts spelling, and unparseable text kept as null."""

from __future__ import annotations

import datetime as dt

import polars as pl

from tasks.ingest.typed import type_text

T = dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)


def test_ts_spellings_and_values() -> None:
    spellings = {
        "2024-01-01T10:00:00Z": T,
        "1704103200": T,  # epoch seconds
        "1704103200.5": T + dt.timedelta(seconds=0.5),
        "2024-01-01T12:00:00+02:00": T,
        "2024-01-01T12:00:00+0200": T,
        "2024-01-01 10:00:00": T,  # space, naive = UTC
        "2024-01-01T10:00": T,
        "2024-01-01": T.replace(hour=0),  # date only = midnight
        " 2024-01-01T10:00:00z ": T,
        "yesterday": None,
    }
    frame = pl.DataFrame(
        {"ts_raw": list(spellings), "value_raw": ["1.5", " 2 ", "x", None, *["0"] * 6]}
    )
    typed = type_text(frame)
    assert dict(zip(typed["ts_raw"], typed["ts"], strict=True)) == spellings
    assert typed["value"].to_list()[:4] == [1.5, 2.0, None, None]
