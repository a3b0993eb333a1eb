"""Backfills: a complete nightly run for every date of a range, skipping the nights that
are already published from unchanged inputs (`tasks.serve.inputs`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed

from flows import artifacts
from flows.ingest import ingest_range
from flows.nightly import nightly_flow
from flows.stages import episodes_task
from tasks.config import Settings, settings_from
from tasks.lake.dates import date_range
from tasks.lake.listing import raw_dates, raw_listing
from tasks.lake.lock import WRITER, lake_lock
from tasks.lake.storage import Lake, lake_from
from tasks.serve.inputs import is_published, night_fingerprint


@flow(name="backfill", flow_run_name="backfill-{start}-{end}")
def backfill_flow(
    start: dt.date,
    end: dt.date,
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
    2. Dates already published from unchanged inputs are skipped, unless `force`.
    3. Episodes of the remaining dates, up to `max_parallel_dates` at a time (each reads
       only silver up to its date).
    4. Train -> evaluate -> score -> publish, date by date in order: each night warm-starts
       from the newest earlier checkpoint. A night that fails there is reported and the
       next one still runs (it warm-starts from the last good checkpoint).
    Ends Failed if any date failed or was blocked.
    """
    logger = get_run_logger()
    settings = settings_from(storage=storage, top_k=top_k, train_max_steps=train_max_steps)
    lake = lake_from(settings.storage, must_exist=True)  # taking the lock would create it
    with lake_lock(lake, WRITER, settings):  # one writer per lake, its nightlies re-enter
        dates = date_range(start, end)
        results = _data_of_range(lake, settings, dates)
        listing = raw_listing(lake, dates[-1])
        todo = []
        for day in dates:
            if day.isoformat() in results:
                continue
            if not force and is_published(
                lake, day, night_fingerprint(lake, day, settings, listing)
            ):
                results[day.isoformat()] = "skipped: already published from unchanged inputs"
            else:
                todo.append(day)
        width = max(1, int(max_parallel_dates))
        for k in range(0, len(todo), width):
            batch = todo[k : k + width]
            futures = [episodes_task.submit(lake, day, settings) for day in batch]
            for day, future in zip(batch, futures, strict=True):
                future.wait()
                if future.state.is_completed():
                    artifacts.episodes(future.result())
                else:
                    results[day.isoformat()] = f"failed: episodes: {future.state.message}"
        todo = [d for d in todo if d.isoformat() not in results]
        for k, day in enumerate(todo, start=1):
            state = nightly_flow(run_date=day, storage=lake.root, top_k=settings.top_k,
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


def _data_of_range(lake: Lake, settings: Settings, dates: list[dt.date]) -> dict[str, str]:
    """Ingest + validate every raw date up to the range's end; the dates of the range that
    must not run (their data, or earlier data, failed) with the reason."""
    raw = raw_dates(lake, dates[-1])
    if not raw:
        return {d.isoformat(): f"failed: no raw interactions up to {d}" for d in dates}
    summaries = ingest_range(lake, raw[0], dates[-1], settings)
    failed = sorted(s["date"] for s in summaries if s["status"] == "failed")
    if not failed:
        return {}
    errors = {s["date"]: s.get("error") or "" for s in summaries}
    first = dt.date.fromisoformat(failed[0])
    out = {}
    for day in dates:
        key = day.isoformat()
        if key in failed:
            out[key] = f"failed: data of {key}: {errors.get(key, '')}"
        elif day > first:
            out[key] = f"blocked: the data of {first} failed validation"
    return out
