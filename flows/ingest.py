"""The ingest flow: raw landing files -> bronze -> silver + quarantine, in chunks of dates.

Reads   raw/interactions/dt=D/*   Writes  bronze/, silver/, quarantine/interactions/dt=D/,
gold/runs/stage=validate/dt=D/, gold/validation/ (through tasks.ingest and tasks.validate).

Only dates that have raw partitions are visited. They are grouped into chunks (up to
CHUNK_DATES dates or about CHUNK_BYTES of landing files), and each chunk is one Prefect
task that ingests and validates its dates in one pass, so Prefect's per-task cost and
Great Expectations' per-run cost are paid per chunk, not per date. A date that fails (bad
share over the threshold, or an error) is reported and every other date, in its chunk or
not, goes on: a chunk that raises is redone date by date. The flow ends Failed if any date
failed, and Completed with a message naming the dates with warnings (an unreadable file, a
failed GX check; Prefect has no "warning" state) and the raw folders skipped because they
are not dt=YYYY-MM-DD (docs/operations.md, "Bad input policy"). The flow holds the lake's
writer lock (tasks/lake/lock.py), whether the CLI or a deployment runs it. Progress shows as a
Prefect progress artifact and one log line per chunk; the accounting is a table artifact
with the stable key `metarec-validate` (one row per date for up to ARTIFACT_DATES dates,
else per chunk).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed

from tasks.config import Settings, settings_from
from tasks.ingest import IngestResult, ingest_dates, plan_chunks
from tasks.lake.listing import stray_partitions
from tasks.lake.lock import WRITER, lake_lock
from tasks.lake.storage import Lake, lake_from
from tasks.validate import ValidationResult, validate_dates

ARTIFACT_KEY = "metarec-validate"
ARTIFACT_DATES = 100
CHUNK_DATES = 512
CHUNK_BYTES = 128 << 20


@task(
    name="ingest-validate", task_run_name="ingest-validate-{first}..{last}", cache_policy=NO_CACHE
)
def ingest_validate_task(
    lake: Lake, dates: list[dt.date], settings: Settings, first: str, last: str
) -> list[dict[str, Any]]:
    """Ingest then validate one chunk of dates; one summary per date."""
    del first, last  # only in the task run name
    return _ingest_validate(lake, dates, settings)


def _ingest_validate(lake: Lake, dates: list[dt.date], settings: Settings) -> list[dict]:
    """Ingest then validate dates in one pass; a pass that raises is redone date by date,
    so one bad date never fails another (it alone is "failed", with the error)."""
    try:
        ingested = ingest_dates(lake, dates, settings)
        validated = validate_dates(lake, dates, settings)
    except Exception as exc:
        if len(dates) > 1:
            return [s for d in dates for s in _ingest_validate(lake, [d], settings)]
        error = f"{type(exc).__name__}: {exc}"
        return [{"date": dates[0].isoformat(), "status": "failed", "error": error}]
    return [_summary(i, v) for i, v in zip(ingested, validated, strict=True)]


@flow(name="ingest", flow_run_name="ingest-{start}", log_prints=False)
def ingest_flow(
    start: dt.date,
    end: dt.date | None = None,
    storage: str | None = None,
    settings_overrides: dict[str, Any] | None = None,
) -> Any:
    """Ingest and validate every raw date from `start` to `end` (default: `start` only).

    Prefect parses ISO text (the CLI, a deployment's parameters) into the dates.
    `settings_overrides` are Settings fields (e.g. `{"max_bad_share": 0.2}`) applied over
    the environment. Returns one summary dict per date that has raw files (status,
    counts, reasons, GX summary, warnings, error); Failed when any date failed, else
    Completed with a message naming the dates with warnings and the skipped folders.
    Holds the lake's writer lock throughout, like every run that writes the lake (the
    `ingest` deployment has no CLI around it to take it); re-entrant, so `metarec ingest`
    or a flow that already holds it does not wait on itself. A lake locked past
    `lock_wait_seconds` fails the run with LakeLocked, naming the holder; a storage root
    with no lake fails it with StorageError.
    """
    settings = settings_from(**{**(settings_overrides or {}), "storage": storage})
    lake = lake_from(settings.storage, must_exist=True)  # taking the lock would create it
    with lake_lock(lake, WRITER, settings):
        summaries = ingest_range(lake, start, end or start, settings)
    failed = [s["date"] for s in summaries if s["status"] == "failed"]
    notes = _notes(summaries, stray_partitions(lake))
    if failed:
        return Failed(message=f"{len(failed)} of {len(summaries)} dates failed: {failed}{notes}",
                      data=summaries)  # fmt: skip
    return Completed(message=f"{len(summaries)} dates ingested{notes}", data=summaries)


def _notes(summaries: list[dict[str, Any]], stray: list[str]) -> str:
    """What the flow's message says besides failures: dates with warnings, skipped folders."""
    warned = [s["date"] for s in summaries if s["status"] == "warning"]
    notes = f"; {len(warned)} with warnings: {warned}" if warned else ""
    if stray:
        notes += f"; skipped {len(stray)} raw folders that are not dt=YYYY-MM-DD: {stray}"
    return notes


def ingest_range(
    lake: Lake, first: dt.date, last: dt.date, settings: Settings
) -> list[dict[str, Any]]:
    """Ingest + validate the raw dates from first to last, chunk by chunk (one task per
    chunk), with progress, logs and the accounting artifact; one summary per date."""
    chunks = plan_chunks(lake, first, last, CHUNK_DATES, CHUNK_BYTES)
    n_dates = sum(len(c) for c in chunks)
    logger = get_run_logger()
    progress = create_progress_artifact(progress=0.0, description=f"ingest {first}..{last}")
    summaries: list[dict[str, Any]] = []
    chunk_rows: list[dict[str, Any]] = []
    for k, chunk in enumerate(chunks, start=1):
        dates = [d.isoformat() for d in chunk]
        done = ingest_validate_task(lake, chunk, settings, dates[0], dates[-1])
        summaries += done
        row = _chunk_row(dates, done)
        chunk_rows.append(row)
        logger.info(
            "[chunk %d/%d] %s..%s: %d dates (%d unchanged), %d rows -> %d silver, "
            "%d quarantined, %d duplicates, %d failed, %d with warnings",
            k, len(chunks), dates[0], dates[-1], len(dates), row["unchanged"],
            row["raw_rows"], row["silver_rows"], row["quarantined"], row["duplicates"],
            row["failed"], row["warnings"],
        )  # fmt: skip
        for s in done:
            if s["status"] == "failed":
                logger.error("%s: FAILED %s", s["date"], s.get("error"))
            elif s["status"] == "warning":
                logger.warning("%s: completed with warnings: %s", s["date"],
                               "; ".join(s.get("warnings") or []))  # fmt: skip
        update_progress_artifact(progress, progress=100.0 * k / len(chunks))
    stray = stray_partitions(lake)
    if stray:
        logger.warning("skipped %d folders under raw/interactions that are not "
                       "dt=YYYY-MM-DD: %s", len(stray), ", ".join(stray))  # fmt: skip
    table = [_row(s) for s in summaries] if n_dates <= ARTIFACT_DATES else chunk_rows
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=table,
        description=f"Row accounting of validate, {first} .. {last}, {n_dates} dates with raw "
        f"files ({'per date' if n_dates <= ARTIFACT_DATES else 'per chunk'}; "
        "raw = silver + quarantined + duplicates)"
        + (f". Skipped, not dt=YYYY-MM-DD folders: {', '.join(stray)}" if stray else ""),
    )
    return summaries


def _summary(ing: IngestResult, val: ValidationResult) -> dict[str, Any]:
    return {
        "date": ing.date.isoformat(),
        "status": val.status,
        "error": f"PartitionQualityError: {val.error}" if val.error else None,
        "files": ing.files,
        "ingest_skipped": ing.skipped,
        "validate_skipped": val.skipped,
        "raw_rows": val.raw_rows,
        "silver_rows": val.silver_rows,
        "quarantined": dict(val.quarantined),
        "duplicates": val.duplicates,
        "bad_share": val.bad_share,
        "corrupt_files": [list(c) for c in val.corrupt_files],
        "unknown_columns": ing.unknown_columns,  # dropped unless keep_unknown_columns
        "warnings": list(val.warnings),
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
        "unknown_columns": sum(len(c) for c in (s.get("unknown_columns") or {}).values()),
        "warnings": "; ".join(s.get("warnings") or []),
        "gx": (
            f"{stats.get('successful_expectations')}/{stats.get('evaluated_expectations')} ok"
            if stats
            else ""
        ),
        "error": s.get("error") or "",
    }


def _chunk_row(dates: list[str], done: list[dict[str, Any]]) -> dict[str, Any]:
    """One aggregated artifact row for a chunk of dates."""
    reasons: dict[str, int] = {}
    for s in done:
        for r, n in (s.get("quarantined") or {}).items():
            reasons[r] = reasons.get(r, 0) + n
    return {
        "dates": f"{dates[0]} .. {dates[-1]} ({len(dates)})",
        "failed": sum(s["status"] == "failed" for s in done),
        "warnings": sum(s["status"] == "warning" for s in done),
        "unchanged": sum(bool(s.get("validate_skipped")) for s in done),
        "raw_rows": sum(s.get("raw_rows") or 0 for s in done),
        "silver_rows": sum(s.get("silver_rows") or 0 for s in done),
        "quarantined": sum(reasons.values()),
        "duplicates": sum(s.get("duplicates") or 0 for s in done),
        "reasons": ", ".join(f"{r}={n}" for r, n in sorted(reasons.items()) if n),
        "corrupt_files": sum(len(s.get("corrupt_files") or []) for s in done),
        "failed_dates": ", ".join(s["date"] for s in done if s["status"] == "failed"),
    }
