"""What validating a partition reports: its `ValidationResult`, the result's gold/runs
row (schemas.runs.RUNS, stage=validate) and its JSON form in the silver stamp.

The accounting holds exactly on every partition: raw_rows == silver_rows +
sum(quarantined) + duplicates (checked in code before anything is written).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from schemas.runs import runs_row


@dataclass(frozen=True)
class ValidationResult:
    """Accounting of one partition: raw_rows == silver_rows + sum(quarantined) + duplicates.

    status is "ok", "warning" (written, but something needs a look: an unreadable landing
    file, a failed Great Expectations check; `warnings` says what, docs/operations.md
    "Bad input policy") or "failed" (bad share over the threshold; `error` says why);
    skipped means bronze and settings were unchanged since the last validation, whose
    result this is.
    """

    date: dt.date
    raw_rows: int
    silver_rows: int
    quarantined: dict[str, int]
    duplicates: int
    corrupt_files: list[tuple[str, str]]
    bad_share: float
    gx_success: bool | None
    gx_statistics: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    skipped: bool = False
    warnings: list[str] = field(default_factory=list)


def accounting_row(r: ValidationResult, started_at: dt.datetime) -> pa.Table:
    """The partition's row of gold/runs/stage=validate.

    `started_at` is when the validation batch that wrote it began (many partitions share
    one pass, so no per-partition duration is recorded); `finished_at` is now.
    """
    return runs_row(
        {
            "run_date": r.date,
            "status": r.status,
            "started_at": started_at,
            "finished_at": dt.datetime.now(dt.UTC),
            # A warning's text goes where an operator looks for why a date is not "ok".
            "error": r.error or ("; ".join(r.warnings) if r.warnings else None),
            "raw_rows": r.raw_rows,
            "silver_rows": r.silver_rows,
            "quarantined_rows": sum(r.quarantined.values()),
            "duplicates": r.duplicates,
            "bad_share": r.bad_share,
            "quarantined": json.dumps(r.quarantined, sort_keys=True),
            "corrupt_files": json.dumps(r.corrupt_files),
            "gx_success": r.gx_success,
            "gx_statistics": json.dumps(r.gx_statistics, sort_keys=True),
            "gx_result": r.paths.get("gx_result"),
        }
    )


def result_to_json(r: ValidationResult) -> dict[str, Any]:
    """The result as a JSON-able dict (the silver stamp's `result`)."""
    return {**asdict(r), "date": r.date.isoformat()}


def result_from_json(d: dict[str, Any]) -> ValidationResult:
    """A stamped result read back, marked skipped (the partition was not recomputed)."""
    return ValidationResult(
        **{
            **d,
            "date": dt.date.fromisoformat(d["date"]),
            "corrupt_files": [tuple(x) for x in d["corrupt_files"]],
            "skipped": True,
        }
    )
