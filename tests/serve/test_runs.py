"""The nightly run record in gold/runs: one schema with the validate stage's rows."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest

from schemas.runs import NIGHTLY_STAGES
from schemas.runs import RUNS as RUNS_SCHEMA
from schemas.tables import RUNS
from tasks.lake.storage import Lake
from tasks.serve.runs import record_run

START = dt.datetime(2024, 5, 2, 1, 0, tzinfo=dt.UTC)
RECORD = {
    "status": "published_baseline",
    "champion_model": "metalearner",
    "published_model": "ease",
    "published_from_candidate": False,
    "gate_reason": "metalearner NDCG@10 0.031 <= most_popular 0.035",
    "users_scored": 943,
    "rows_published": 9430,
    "started_at": START,
    "finished_at": START + dt.timedelta(minutes=4),
    "stage_seconds": {"ingest_validate": 2.5, "train": 180.0},
}
DAY = dt.date(2024, 5, 2)


def test_record_run(lake_root: str) -> None:
    lake = Lake(lake_root)
    path = record_run(lake, DAY, RECORD)

    assert path == lake.partition_file(RUNS, stage="nightly", dt="2024-05-02")
    assert pq.read_schema(path).equals(RUNS_SCHEMA, check_metadata=False)
    row = lake.read_partition(RUNS, stage="nightly", dt="2024-05-02").row(0, named=True)
    assert row["run_date"] == DAY and row["duration_seconds"] == 240.0
    assert row["seconds_ingest_validate"] == 2.5 and row["seconds_train"] == 180.0
    assert row["seconds_publish"] is None  # a stage without a timing stays null
    assert row["published_from_candidate"] is False and row["users_scored"] == 943
    assert row["raw_rows"] is None  # the validate stage's columns are not the night's
    assert set(NIGHTLY_STAGES) <= {c.removeprefix("seconds_") for c in row}


def test_naive_times_are_utc(lake_root: str) -> None:
    lake = Lake(lake_root)
    naive = {**RECORD, "started_at": START.replace(tzinfo=None),
             "finished_at": START.replace(tzinfo=None) + dt.timedelta(seconds=30)}  # fmt: skip
    record_run(lake, DAY, naive)
    row = lake.read_partition(RUNS, stage="nightly", dt=DAY).row(0, named=True)
    assert row["started_at"] == START and row["duration_seconds"] == 30.0


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**RECORD, "stauts": "typo"}, "unknown"),
        ({**RECORD, "stage_seconds": {"ingest": 1.0}}, "unknown stages"),
        ({"status": "failed"}, "lacks"),
    ],
    ids=["unknown-field", "unknown-stage", "missing-times"],
)
def test_record_run_rejects_bad_records(lake_root: str, record: dict, message: str) -> None:
    lake = Lake(lake_root)
    with pytest.raises(ValueError, match=message):
        record_run(lake, DAY, record)
    assert not lake.exists(RUNS, stage="nightly", dt=DAY)
