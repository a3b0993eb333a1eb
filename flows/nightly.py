"""The nightly run for one date, and backfills over a range of dates.

ingest -> validate -> episodes -> train -> evaluate -> score -> publish (DESIGN.md, "Flow of
one nightly run"). The flow only composes: every stage is a plain function in tasks/ that
reads its inputs from the lake and writes its outputs there, so tasks exchange dates, paths
and small result records, never frames. Each stage leaves one Prefect artifact with a
stable key (`metarec-<stage>`), so a run can be understood from the UI alone.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed

from flows import artifacts
from flows.ingest import ingest_flow
from tasks import episodes, evaluate, publish, score, train
from tasks.config import Settings
from tasks.storage import date_range, lake_from, parse_date

# Thin wrappers: names for the UI, no caching of in-memory results (stages are idempotent
# and read/write the lake), no retries (local work: a retry would fail the same way).
episodes_task = task(name="episodes", cache_policy=NO_CACHE)(episodes.build_episodes)
train_task = task(name="train", cache_policy=NO_CACHE)(train.train_stage)
evaluate_task = task(name="evaluate", cache_policy=NO_CACHE)(evaluate.evaluate_stage)
score_task = task(name="score", cache_policy=NO_CACHE)(score.score_stage)
publish_task = task(name="publish", cache_policy=NO_CACHE)(publish.publish_stage)


def _settings(storage: str | None, top_k: int | None, **extra: Any) -> Settings:
    values = {k: v for k, v in {"storage": storage, "top_k": top_k, **extra}.items() if v}
    return Settings(**values)


@flow(name="nightly", flow_run_name="nightly-{run_date}")
def nightly_flow(
    run_date: str | None = None,
    storage: str | None = None,
    top_k: int | None = None,
    train_max_steps: int | None = None,
) -> dict[str, Any]:
    """Run every stage for `run_date` (default: today, UTC) and publish its top-K table.

    Ends Failed, with the published tables untouched, when a stage fails; a model that
    does not pass the quality gate is not an error: the best baseline is published and
    the run says why.
    """
    day = parse_date(run_date) if run_date else dt.datetime.now(dt.UTC).date()
    settings = _settings(storage, top_k, train_max_steps=train_max_steps)
    lake = lake_from(settings.storage)
    logger = get_run_logger()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)

    def timed(stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[stage] = round(time.perf_counter() - t0, 3)
        return result

    raw_dates = [d for d in lake.partitions("raw/interactions") if parse_date(d) <= day]
    if not raw_dates:
        return Failed(message=f"no raw interactions up to {day} under {lake.root}")
    ingest_state = timed(
        "ingest_validate",
        ingest_flow,
        storage=settings.storage,
        start=raw_dates[0],
        end=day.isoformat(),
        return_state=True,
    )
    if not ingest_state.is_completed():
        return Failed(
            message=f"ingest/validate failed for some dates up to {day}: "
            f"{ingest_state.message}; nothing was published"
        )

    ep = timed("episodes", episodes_task, lake, day, settings)
    artifacts.episodes(ep)
    trained = timed("train", train_task, lake, day, settings)
    artifacts.training(trained)
    evaluated = timed("evaluate", evaluate_task, lake, day, settings)
    artifacts.evaluation(evaluated)
    logger.info("quality gate: %s", evaluated.decision.reason)
    scored = timed("score", score_task, lake, day, settings, evaluated.decision.model)
    published = timed(
        "publish",
        publish_task,
        lake,
        day,
        settings,
        scored,
        evaluated.decision,
        timings,
        started_at,
    )
    artifacts.published(published, lake)
    logger.info(
        "published %s rows for %s users (%s) to %s in %.1fs",
        published.rows,
        published.users,
        published.model,
        published.path,
        time.perf_counter() - started,
    )
    return {
        "run_date": day.isoformat(),
        "model": published.model,
        "rows": published.rows,
        "users": published.users,
        "gate": evaluated.decision.reason,
        "timings": timings,
    }


@flow(name="backfill", flow_run_name="backfill-{start}-{end}")
def backfill_flow(
    start: str,
    end: str,
    storage: str | None = None,
    top_k: int | None = None,
    train_max_steps: int | None = None,
) -> Any:
    """A complete nightly run for every date from start to end, in order.

    Dates run in order because each night warm-starts from the previous night's model. A
    failed date is reported and the following dates still run (each reads only its own
    inputs); the backfill ends Failed if any date failed. Rerunning is safe: every stage
    replaces its partitions whole.
    """
    logger = get_run_logger()
    dates = date_range(start, end)
    results: dict[str, str] = {}
    for k, day in enumerate(dates, start=1):
        state = nightly_flow(
            run_date=day.isoformat(),
            storage=storage,
            top_k=top_k,
            train_max_steps=train_max_steps,
            return_state=True,
        )
        results[day.isoformat()] = "ok" if state.is_completed() else f"failed: {state.message}"
        logger.info("[%d/%d] %s: %s", k, len(dates), day, results[day.isoformat()])
    artifacts.backfill(results)
    failed = [d for d, r in results.items() if r != "ok"]
    if failed:
        return Failed(message=f"{len(failed)} of {len(dates)} dates failed: {failed}", data=results)
    return Completed(message=f"{len(dates)} nights published", data=results)
