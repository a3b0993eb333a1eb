"""The nightly run for one date, and backfills over a range of dates.

ingest -> validate -> episodes -> train -> evaluate -> score -> publish (DESIGN.md, "Flow of
one nightly run"). The flow only composes: every stage is a plain function in tasks/ that
reads its inputs from the lake and writes its outputs there, so tasks exchange dates, paths
and small result records, never frames. Each stage leaves one Prefect artifact with a
stable key (`metarec-<stage>`), so a run can be understood from the UI alone.

Reads raw/ and everything the stages read; writes what they write, plus
`models/run_date=D/fingerprint.json` (the inputs a published night was computed from, so a
backfill can skip nights whose inputs did not change). Training runs in-process (subflow
`train`) or, given `train_deployment`, as a run of that deployment on the GPU work pool.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed

from flows import artifacts
from flows.ingest import ingest_flow
from flows.train import train_flow
from tasks.config import Settings, settings_from
from tasks.lake.dates import date_range, parse_date
from tasks.lake.storage import Lake, lake_from
from tasks.learn import episodes
from tasks.serve import evaluate, publish, score

# Thin wrappers: names for the UI, no caching of in-memory results (stages are idempotent
# and read/write the lake), no retries (local work: a retry would fail the same way).
episodes_task = task(name="episodes", cache_policy=NO_CACHE)(episodes.build_episodes)
evaluate_task = task(name="evaluate", cache_policy=NO_CACHE)(evaluate.evaluate_stage)
score_task = task(name="score", cache_policy=NO_CACHE)(score.score_stage)
publish_task = task(name="publish", cache_policy=NO_CACHE)(publish.publish_stage)

FINGERPRINT_FILE = "fingerprint.json"
# A train deployment run that has not finished within this many seconds fails the night.
TRAIN_TIMEOUT_SECONDS = 6 * 3600.0


def scheduled_date() -> dt.date:
    """The UTC date of this flow run's scheduled start (now, outside a scheduled run)."""
    from prefect.runtime import flow_run

    start = flow_run.scheduled_start_time
    return dt.datetime.fromtimestamp(start.timestamp(), dt.UTC).date()


def _nightly_run_name() -> str:
    from prefect.runtime import flow_run

    day = flow_run.parameters.get("run_date") or scheduled_date()
    return f"nightly-{parse_date(day)}"


@flow(name="nightly", flow_run_name=_nightly_run_name)
def nightly_flow(
    run_date: str | None = None,
    storage: str | None = None,
    top_k: int | None = None,
    train_max_steps: int | None = None,
    train_deployment: str | None = None,
    prepared: bool = False,
) -> dict[str, Any]:
    """Run every stage for `run_date` and publish its top-K table.

    `run_date` defaults to the UTC date of the scheduled start (a deployment's cron run),
    else today. `train_deployment` ("train/train") trains through that deployment (a GPU
    worker) instead of in-process. `prepared`: a backfill already ingested, validated and
    built this date's episodes. Ends Failed, with the published tables untouched, when a
    stage fails; a model that does not pass the quality gate is not an error: the best
    baseline is published and the run says why.
    """
    day = parse_date(run_date) if run_date else scheduled_date()
    settings = settings_from(storage=storage, top_k=top_k, train_max_steps=train_max_steps)
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
    if not prepared:
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
    if not (prepared and lake.exists(episodes.TABLE, run_date=day)):
        ep = timed("episodes", episodes_task, lake, day, settings)
        artifacts.episodes(ep)
    error = timed("train", _train, day, settings, train_deployment)
    if error:
        return Failed(message=f"{error}; nothing was published")
    evaluated = timed("evaluate", evaluate_task, lake, day, settings)
    artifacts.evaluation(evaluated)
    logger.info("quality gate: %s", evaluated.decision.reason)
    scored = timed("score", score_task, lake, day, settings, evaluated.decision.model)
    published = timed("publish", publish_task, lake, day, settings, scored,
                      evaluated.decision, timings, started_at)  # fmt: skip
    artifacts.published(published, lake)
    write_fingerprint(lake, day, input_fingerprint(lake, day, settings))
    logger.info(
        "published %s rows for %s users (%s) to %s in %.1fs",
        published.rows, published.users, published.model, published.path,
        time.perf_counter() - started,
    )  # fmt: skip
    return {
        "run_date": day.isoformat(),
        "model": published.model,
        "rows": published.rows,
        "users": published.users,
        "gate": evaluated.decision.reason,
        "timings": timings,
    }


def _train(day: dt.date, settings: Settings, deployment: str | None) -> str | None:
    """Train the night's model in-process or through `deployment`; an error text or None."""
    params = {"run_date": day.isoformat(), "storage": settings.storage,
              "train_max_steps": settings.train_max_steps}  # fmt: skip
    if not deployment:
        state = train_flow(**params, return_state=True)
        return None if state.is_completed() else f"training failed: {state.message}"
    from prefect.deployments import run_deployment

    get_run_logger().info("training through deployment %r", deployment)
    run = run_deployment(deployment, parameters=params, timeout=TRAIN_TIMEOUT_SECONDS,
                         poll_interval=2)  # fmt: skip
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


# ---- input fingerprints: what a published night was computed from -----------------------


def raw_listing(lake: Lake, until: str | dt.date) -> list[tuple[str, str, int, str]]:
    """(dt, path, size, token) of every raw landing file up to `until` and of the side
    tables (dt ""); the token hashes the file's metadata (mtime locally, ETag on object
    stores), so a replaced or added file changes it. One listing per partition."""
    from fsspec.utils import tokenize

    day = parse_date(until)
    folders = [(v, lake.path("raw/interactions", dt=v)) for v in
               lake.partitions("raw/interactions") if parse_date(v) <= day]  # fmt: skip
    folders += [("", lake.path("raw/users")), ("", lake.path("raw/items"))]
    out = []
    for value, folder in folders:
        if not lake.fs.exists(folder):
            continue
        for info in lake.fs.ls(folder, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["type"] == "file" and not name.startswith((".", "_")):
                out.append((value, lake.relpath(info["name"]), int(info["size"]), tokenize(info)))
    return sorted(out)


def input_fingerprint(
    lake: Lake,
    run_date: str | dt.date,
    settings: Settings,
    listing: list[tuple[str, str, int, str]] | None = None,
) -> str:
    """A hash of everything the night of `run_date` reads that may change: the raw landing
    files up to D and the side tables (`raw_listing`; pass one made for a later date to
    share it across a range), the settings (not the storage root), the model config and
    the table contract version. A late-arriving raw file for an old date changes it."""
    from schemas.recommendations import VERSION
    from tasks.models.metalearner import MetaConfig

    day = parse_date(run_date)
    files = [f for f in (listing or raw_listing(lake, day)) if f[0] <= day.isoformat()]
    config = settings.model_dump(mode="json", exclude={"storage"})
    payload = {"run_date": day.isoformat(), "raw": files, "settings": config,
               "model": asdict(MetaConfig()), "contract": VERSION}  # fmt: skip
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def write_fingerprint(lake: Lake, run_date: str | dt.date, fingerprint: str) -> str:
    """Record the fingerprint of a published night beside its model."""
    rel = lake.relpath(lake.path("models", run_date=parse_date(run_date)))
    return lake.write_json(f"{rel}/{FINGERPRINT_FILE}", {"fingerprint": fingerprint})


def is_complete(lake: Lake, run_date: str | dt.date, fingerprint: str) -> bool:
    """True when the night was published (`published*` in gold/runs) from these inputs."""
    day = parse_date(run_date)
    if not lake.exists(publish.RUNS_TABLE, stage="nightly", dt=day):
        return False
    status = lake.read_partition(publish.RUNS_TABLE, stage="nightly", dt=day)["status"]
    rel = lake.relpath(lake.path("models", run_date=day))
    stored = lake.read_json(f"{rel}/{FINGERPRINT_FILE}") or {}
    return str(status[0]).startswith("published") and stored.get("fingerprint") == fingerprint


# ---- backfill ----------------------------------------------------------------------


@flow(name="backfill", flow_run_name="backfill-{start}-{end}")
def backfill_flow(
    start: str,
    end: str,
    storage: str | None = None,
    top_k: int | None = None,
    train_max_steps: int | None = None,
    max_parallel_dates: int = 2,
    train_deployment: str | None = None,
    force: bool = False,
) -> Any:
    """A complete nightly run for every date from start to end.

    1. Data, once for the whole range: ingest + validate every raw date up to `end`
       (unchanged dates are skipped by ingest). A date whose data fails, and every later
       date (their history includes it), are reported and not run; earlier dates go on.
    2. Dates already published from unchanged inputs (fingerprint) are skipped, unless
       `force`.
    3. Episodes of the remaining dates, up to `max_parallel_dates` at a time (each reads
       only silver up to its date).
    4. Train -> evaluate -> score -> publish, date by date in order: each night warm-starts
       from the newest earlier checkpoint. A night that fails there is reported and the
       next one still runs (it warm-starts from the last good checkpoint).
    Ends Failed if any date failed or was blocked.
    """
    logger = get_run_logger()
    settings = settings_from(storage=storage, top_k=top_k, train_max_steps=train_max_steps)
    lake = lake_from(settings.storage)
    dates = date_range(start, end)
    results = _ingest_range(lake, settings, dates)
    listing = raw_listing(lake, dates[-1])
    todo = []
    for day in dates:
        key = day.isoformat()
        if key in results:
            continue
        if not force and is_complete(lake, day, input_fingerprint(lake, day, settings, listing)):
            results[key] = "skipped: already published from unchanged inputs"
        else:
            todo.append(day)
    width = max(1, int(max_parallel_dates))
    for k in range(0, len(todo), width):
        futures = [episodes_task.submit(lake, day, settings) for day in todo[k : k + width]]
        for day, future in zip(todo[k : k + width], futures, strict=True):
            future.wait()
            state = future.state
            if state.is_completed():
                artifacts.episodes(future.result())
            else:
                results[day.isoformat()] = f"failed: episodes: {state.message}"
    todo = [d for d in todo if d.isoformat() not in results]
    for k, day in enumerate(todo, start=1):
        state = nightly_flow(run_date=day.isoformat(), storage=lake.root, top_k=settings.top_k,
                             train_max_steps=settings.train_max_steps,
                             train_deployment=train_deployment, prepared=True,
                             return_state=True)  # fmt: skip
        results[day.isoformat()] = "ok" if state.is_completed() else f"failed: {state.message}"
        logger.info("[%d/%d] %s: %s", k, len(todo), day, results[day.isoformat()])
    results = {d.isoformat(): results[d.isoformat()] for d in dates}
    artifacts.backfill(results)
    bad = [d for d, r in results.items() if r.startswith(("failed", "blocked"))]
    if bad:
        return Failed(message=f"{len(bad)} of {len(dates)} dates failed: {bad}", data=results)
    return Completed(message=f"{len(dates)} nights published or up to date", data=results)


def _ingest_range(lake: Lake, settings: Settings, dates: list[dt.date]) -> dict[str, str]:
    """Ingest + validate every raw date up to the range's end; the dates of the range that
    must not run (their data, or earlier data, failed) with the reason."""
    raw = [d for d in lake.partitions("raw/interactions") if parse_date(d) <= dates[-1]]
    if not raw:
        return {d.isoformat(): f"failed: no raw interactions up to {d}" for d in dates}
    state = ingest_flow(storage=lake.root, start=raw[0], end=dates[-1].isoformat(),
                        return_state=True)  # fmt: skip
    if state.is_completed():
        return {}
    try:
        summaries = state.result(raise_on_failure=False) or []
        failed = sorted(s["date"] for s in summaries if s.get("status") != "ok")
        errors = {s["date"]: s.get("error", "") for s in summaries}
    except Exception:  # a summary we cannot read: treat the whole range as failed
        failed, errors = [raw[0]], {raw[0]: str(state.message)}
    if not failed:
        failed, errors = [raw[0]], {raw[0]: str(state.message)}
    first = parse_date(failed[0])
    out = {}
    for day in dates:
        key = day.isoformat()
        if key in failed:
            out[key] = f"failed: data of {key}: {errors.get(key, '')}"
        elif day > first:
            out[key] = f"blocked: the data of {first} failed validation"
    return out
