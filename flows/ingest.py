"""The ingest flow: raw landing files -> bronze -> silver + quarantine, date by date.

Reads   raw/interactions/dt=D/*   Writes  bronze/, silver/, quarantine/interactions/dt=D/,
gold/runs/stage=validate/dt=D/ (through tasks.ingest and tasks.validate).

Dates run in order; a date that fails (bad share over the threshold, unreadable data) is
reported and the others go on; the flow ends Failed if any date failed. Progress shows as
a Prefect progress artifact and one log line per date; the accounting of every date is a
table artifact with the stable key `metarec-validate`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed

from tasks.config import Settings
from tasks.ingest import IngestResult, ingest_date
from tasks.storage import Lake, date_range, lake_from, parse_date
from tasks.validate import ValidationResult, validate_date

ARTIFACT_KEY = "metarec-validate"


@task(name="ingest-date", task_run_name="ingest-{date}", cache_policy=NO_CACHE)
def ingest_task(lake: Lake, date: str, settings: Settings) -> IngestResult:
    return ingest_date(lake, date, settings)


@task(name="validate-date", task_run_name="validate-{date}", cache_policy=NO_CACHE)
def validate_task(lake: Lake, date: str, settings: Settings) -> ValidationResult:
    return validate_date(lake, date, settings)


@flow(name="ingest", flow_run_name="ingest-{start}", log_prints=False)
def ingest_flow(
    storage: str | None = None, start: str | None = None, end: str | None = None
) -> Any:
    """Ingest and validate every date from `start` to `end` (default: `start` only).

    Returns one summary dict per date (status, counts, reasons, GX summary, error).
    """
    if not start:
        raise ValueError("ingest_flow needs a start date (YYYY-MM-DD)")
    settings = Settings(storage=storage) if storage else Settings()
    lake = lake_from(settings.storage)
    dates = [d.isoformat() for d in date_range(start, end or start)]
    logger = get_run_logger()
    progress = create_progress_artifact(progress=0.0, description=f"ingest {dates[0]}..")
    summaries: list[dict[str, Any]] = []
    for k, date in enumerate(dates, start=1):
        try:
            ing = ingest_task(lake, date, settings)
            val = validate_task(lake, date, settings)
            summary = _summary(date, ing, val)
            logger.info(
                "[%d/%d] %s: %d rows -> %d silver, %d quarantined, %d duplicates%s",
                k, len(dates), date, val.raw_rows, val.silver_rows,
                sum(val.quarantined.values()), val.duplicates,
                " (skipped ingest: unchanged)" if ing.skipped else "",
            )  # fmt: skip
        except Exception as exc:  # one bad date must not stop the others
            summary = {"date": date, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            logger.error("[%d/%d] %s: FAILED %s", k, len(dates), date, summary["error"])
        summaries.append(summary)
        update_progress_artifact(progress, progress=100.0 * k / len(dates))
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=[_row(s) for s in summaries],
        description=f"Row accounting of validate, {dates[0]} .. {dates[-1]} "
        "(raw = silver + quarantined + duplicates)",
    )
    failed = [s["date"] for s in summaries if s["status"] != "ok"]
    if failed:
        return Failed(message=f"{len(failed)} of {len(dates)} dates failed: {failed}",
                      data=summaries)  # fmt: skip
    return Completed(message=f"{len(dates)} dates ingested", data=summaries)


def _summary(date: str, ing: IngestResult, val: ValidationResult) -> dict[str, Any]:
    return {
        "date": parse_date(date).isoformat(),
        "status": "ok",
        "files": ing.files,
        "ingest_skipped": ing.skipped,
        "raw_rows": val.raw_rows,
        "silver_rows": val.silver_rows,
        "quarantined": dict(val.quarantined),
        "duplicates": val.duplicates,
        "bad_share": val.bad_share,
        "corrupt_files": [list(c) for c in val.corrupt_files],
        "unknown_columns": ing.unknown_columns,
        "gx_success": val.gx_success,
        "gx_statistics": val.gx_statistics,
    }


def _row(s: dict[str, Any]) -> dict[str, Any]:
    """A flat table row for the artifact (the UI renders scalars only)."""
    stats = s.get("gx_statistics") or {}
    reasons = s.get("quarantined") or {}
    return {
        "date": s["date"],
        "status": s["status"],
        "raw_rows": s.get("raw_rows"),
        "silver_rows": s.get("silver_rows"),
        "quarantined": sum(reasons.values()),
        "duplicates": s.get("duplicates"),
        "reasons": ", ".join(f"{r}={n}" for r, n in sorted(reasons.items()) if n),
        "corrupt_files": len(s.get("corrupt_files") or []),
        "gx": (
            f"{stats.get('successful_expectations')}/{stats.get('evaluated_expectations')} ok"
            if stats
            else ""
        ),
        "error": s.get("error", ""),
    }
