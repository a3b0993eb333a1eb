"""The nightly run record: one row of gold/runs per night.

Reads nothing; writes `gold/runs/stage=nightly/dt=D/` (schema: schemas.runs.RUNS, the
same schema as the validate stage's rows), which the warehouse's `runs` view serves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from schemas.runs import NIGHTLY_STAGES, runs_row
from schemas.tables import RUNS
from tasks.lake.storage import Lake

_REQUIRED_KEYS = ("status", "started_at", "finished_at")


def record_run(lake: Lake, run_date: dt.date, record: Mapping[str, Any]) -> str:
    """Write the one-row record of the nightly run of `run_date`; returns the file path.

    `record` holds gold/runs columns (status, started_at and finished_at required; run_date
    and duration_seconds are filled in) plus an optional `stage_seconds` mapping of stage
    name (one of schemas.runs.NIGHTLY_STAGES) -> seconds, stored as `seconds_<stage>`.
    Unknown keys and stages raise ValueError, so a typo never silently drops a field.
    """
    return lake.write_partition(RUNS, _run_table(run_date, record), stage="nightly", dt=run_date)


def _run_table(day: dt.date, record: Mapping[str, Any]) -> pa.Table:
    unknown = sorted(set(record) - set(RUNS.schema.names) - {"stage_seconds"})
    if unknown:
        raise ValueError(f"unknown nightly run fields {unknown}; known: {RUNS.schema.names}")
    missing = [key for key in _REQUIRED_KEYS if record.get(key) is None]
    if missing:
        raise ValueError(f"nightly run record lacks {missing}")
    row = {k: v for k, v in record.items() if k != "stage_seconds"}
    for key in ("started_at", "finished_at"):
        stamp = row[key]
        row[key] = stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp
    row["run_date"] = day
    row["duration_seconds"] = (row["finished_at"] - row["started_at"]).total_seconds()
    row.update(stage_columns(record.get("stage_seconds") or {}))
    return runs_row(row)


def stage_columns(stage_seconds: Mapping[str, float]) -> dict[str, float]:
    """The `seconds_<stage>` columns of stage wall times; ValueError for a stage that is
    not one of schemas.runs.NIGHTLY_STAGES (gold/runs has a fixed column per stage)."""
    unknown = sorted(set(stage_seconds) - set(NIGHTLY_STAGES))
    if unknown:
        raise ValueError(f"unknown stages {unknown} in stage_seconds; known: {NIGHTLY_STAGES}")
    return {f"seconds_{stage}": float(seconds) for stage, seconds in stage_seconds.items()}
