"""tasks/validate/accounting.py: the gold/runs row follows schemas.runs.RUNS, and a stamped
result reads back equal, marked skipped."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from schemas.runs import RUNS
from tasks.validate import ValidationResult
from tasks.validate.accounting import accounting_row, result_from_json, result_to_json
from tests.validate.samples import DAY

RESULT = ValidationResult(
    date=DAY,
    raw_rows=10,
    silver_rows=6,
    quarantined={"missing_ts": 1, "future_ts": 2},
    duplicates=1,
    corrupt_files=[("raw/interactions/dt=2024-01-01/b.csv.gz", "truncated_gzip")],
    bad_share=0.3,
    gx_success=True,
    gx_statistics={"evaluated_expectations": 3},
    paths={"gx_result": "lake/gold/validation/batch=x/_gx_result.json"},
)


def test_accounting_row_uses_the_runs_schema() -> None:
    started = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    row = accounting_row(RESULT, started).to_pylist()[0]
    assert accounting_row(RESULT, started).schema.equals(RUNS)
    assert (row["run_date"], row["status"], row["started_at"]) == (DAY, "ok", started)
    assert row["finished_at"] >= started and row["error"] is None
    assert (row["raw_rows"], row["silver_rows"], row["quarantined_rows"], row["duplicates"]) == (
        10, 6, 3, 1
    )  # fmt: skip
    assert row["raw_rows"] == row["silver_rows"] + row["quarantined_rows"] + row["duplicates"]
    assert json.loads(row["quarantined"]) == {"future_ts": 2, "missing_ts": 1}
    assert json.loads(row["corrupt_files"]) == [list(RESULT.corrupt_files[0])]
    assert row["gx_result"] == RESULT.paths["gx_result"]
    assert row["champion_model"] is None  # a nightly column, not filled by validate


def test_stamped_result_round_trips() -> None:
    back = result_from_json(json.loads(json.dumps(result_to_json(RESULT))))
    assert back == dataclasses.replace(RESULT, skipped=True)
