"""The nightly run for one date: ingest -> validate -> episodes -> train -> evaluate ->
score -> publish (DESIGN.md, "Flow of one nightly run").

The flow only composes: every stage is a plain function in tasks/ that reads its inputs
from the lake and writes its outputs there, so stages exchange the run date, the settings
and small frozen result records, never frames. Each stage leaves one Prefect artifact
with a stable key (`metarec-<stage>`), so a run can be understood from the UI alone.
Training runs in-process (subflow `train`) or, given `train_deployment`, as a run of that
deployment on the GPU work pool. Backfills over a range of dates: flows/backfill.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.states import Failed

from flows import artifacts
from flows.ingest import ingest_range
from flows.stages import (
    episodes_task,
    evaluate_task,
    gc_task,
    publish_task,
    score_task,
    start_clock,
    timed,
)
from flows.train import train_and_report
from schemas.tables import EPISODES
from tasks.config import Settings, settings_from
from tasks.lake.dates import parse_date
from tasks.lake.listing import raw_dates
from tasks.lake.lock import WRITER, lake_lock
from tasks.lake.storage import Lake, lake_from
from tasks.serve.guards import PublishRefused
from tasks.serve.inputs import night_fingerprint, stamp_published

# A train deployment run that has not finished within this many seconds fails the night.
TRAIN_TIMEOUT_SECONDS = 6 * 3600.0


def default_run_date(scheduled: dt.datetime, lag_days: int) -> dt.date:
    """The date a run scheduled at `scheduled` processes when given none: its UTC date
    minus `lag_days` (Settings.schedule_lag_days; 1 = the last completed UTC day)."""
    day = dt.datetime.fromtimestamp(scheduled.timestamp(), dt.UTC).date()
    return day - dt.timedelta(days=lag_days)


def scheduled_date(lag_days: int | None = None) -> dt.date:
    """`default_run_date` of this flow run's scheduled start (Prefect's expected start
    time, which a late or retried run keeps; now, outside a flow run). `lag_days` None:
    Settings.schedule_lag_days (METAREC_SCHEDULE_LAG_DAYS)."""
    lag = settings_from().schedule_lag_days if lag_days is None else lag_days
    return default_run_date(flow_run.scheduled_start_time, lag)


def night_of(run_date: str | dt.date | None, lag_days: int | None = None) -> dt.date:
    """The date a nightly run processes: `run_date` as given, else `scheduled_date`."""
    return parse_date(run_date) if run_date else scheduled_date(lag_days)


def _nightly_run_name() -> str:
    params = flow_run.parameters  # only those given: a default is None here too
    return f"nightly-{night_of(params.get('run_date'), params.get('schedule_lag_days'))}"


@flow(name="nightly", flow_run_name=_nightly_run_name)
def nightly_flow(
    run_date: dt.date | None = None,
    storage: str | None = None,
    top_k: int | None = None,
    train_max_steps: int | None = None,
    train_deployment: str | None = None,
    prepared: bool = False,
    schedule_lag_days: int | None = None,
) -> dict[str, Any]:
    """Run every stage for `run_date` and publish its top-K table.

    `run_date` defaults to the completed day before the scheduled start: the UTC date of
    the scheduled start (a deployment's cron run; else now) minus `schedule_lag_days`
    (None: Settings.schedule_lag_days, 1), so the 02:00 run of D publishes D-1; a given
    `run_date` is used as is. `train_deployment` ("train/train") trains through that
    deployment (a GPU worker) instead of in-process. `prepared`: a backfill already
    ingested, validated and built this date's episodes. Ends Failed, with the published
    tables untouched, when a stage fails; a model that does not pass the quality gate is
    not an error: the best baseline is published and the run says why.
    """
    settings = settings_from(storage=storage, top_k=top_k, train_max_steps=train_max_steps,
                             schedule_lag_days=schedule_lag_days)  # fmt: skip
    day = night_of(run_date, settings.schedule_lag_days)
    lake = lake_from(settings.storage, must_exist=True)  # taking the lock would create it
    with lake_lock(lake, WRITER, settings):  # one writer per lake; re-entrant in a backfill
        seconds = start_clock()
        started_at = dt.datetime.now(dt.UTC)

        if not prepared and (error := ingest_up_to(lake, day, settings)):
            return Failed(message=f"{error}; nothing was published")
        if not (prepared and lake.exists(EPISODES, run_date=day)):
            artifacts.episodes(episodes_task(lake, day, settings))
        if error := train_night(lake, day, settings, train_deployment):
            return Failed(message=f"{error}; nothing was published")
        evaluated = evaluate_task(lake, day, settings)
        artifacts.evaluation(evaluated)
        scored = score_task(lake, day, settings, evaluated.gate, evaluated.candidates)
        try:
            published = publish_task(lake, day, settings, scored, evaluated.gate, seconds,
                                     started_at)  # fmt: skip
        except PublishRefused as refused:  # the previous night stays the latest
            return Failed(message=str(refused))
        artifacts.published(published, lake)
        gc_task(lake, day, settings)

        stamp_published(lake, day, night_fingerprint(lake, day, settings), published.status)
        get_run_logger().info(
            "quality gate: %s; published %s rows for %s users (%s) to %s",
            evaluated.gate.summary(), published.rows, published.users, published.model,
            published.path,
        )  # fmt: skip
        return {
            "run_date": day.isoformat(),
            "model": published.model,
            "rows": published.rows,
            "users": published.users,
            "gate": evaluated.gate.summary(),
            "users_by_model": scored.users_by_model,
            "timings": seconds,
        }


@timed("ingest_validate")
def ingest_up_to(lake: Lake, day: dt.date, settings: Settings) -> str | None:
    """Ingest + validate every raw date up to `day` (unchanged dates are skipped); an
    error text or None."""
    dates = raw_dates(lake, day)
    if not dates:
        return f"no raw interactions up to {day} under {lake.root}"
    # A date with warnings (docs/operations.md, "Bad input policy") does not stop the night.
    failed = [s for s in ingest_range(lake, dates[0], day, settings) if s["status"] == "failed"]
    if failed:
        return f"ingest/validate failed for {len(failed)} dates up to {day}: " + "; ".join(
            f"{s['date']}: {s.get('error')}" for s in failed[:5]
        )
    return None


@timed("train")
def train_night(lake: Lake, day: dt.date, settings: Settings, deployment: str | None) -> str | None:
    """Train the night's model in-process or through `deployment`; an error text or None."""
    if not deployment:
        try:
            train_and_report(lake, day, settings)
        except Exception as exc:  # the night fails with the reason; the task run has the trace
            return f"training failed: {type(exc).__name__}: {exc}"
        return None
    get_run_logger().info("training through deployment %r", deployment)
    params = {"run_date": day.isoformat(), "storage": settings.storage,
              "train_max_steps": settings.train_max_steps}  # fmt: skip
    run = run_deployment(deployment, parameters=params,
                         timeout=TRAIN_TIMEOUT_SECONDS, poll_interval=2)  # fmt: skip
    if run.state is None or not run.state.is_final():
        return (
            f"train deployment {deployment!r} run {run.name} did not finish within "
            f"{TRAIN_TIMEOUT_SECONDS:.0f}s (state {run.state_name}; is a worker polling its pool?)"
        )
    if not run.state.is_completed():
        return f"train deployment {deployment!r} run {run.name} ended {run.state_name}: " + str(
            run.state.message or ""
        )
    return None
