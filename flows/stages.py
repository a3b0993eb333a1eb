"""The stages of a night as Prefect tasks: one line each, plus their wall times.

No caching of in-memory results (stages are idempotent and read/write the lake; "skip if
unchanged" is `tasks.lake.stamps`), no retries (local work: a retry would fail the same
way). `timed` records each stage's wall time in the running night's `StageSeconds`, which
the publish stage writes to gold/runs as `seconds_<stage>`.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.lake.retention import collect_garbage
from tasks.learn.episodes import build_episodes
from tasks.serve.evaluate import evaluate_stage
from tasks.serve.publish import publish_stage
from tasks.serve.score import score_stage

P = ParamSpec("P")
R = TypeVar("R")
StageSeconds = dict[str, float]
_SECONDS: contextvars.ContextVar[StageSeconds | None] = contextvars.ContextVar(
    "metarec_stage_seconds", default=None
)


def start_clock() -> StageSeconds:
    """A fresh record of stage wall times for the night running in this context."""
    seconds: StageSeconds = {}
    _SECONDS.set(seconds)
    return seconds


def timed(stage: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record every call's wall time as `stage` in the running night's clock (if any)."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                clock = _SECONDS.get()
                if clock is not None:
                    clock[stage] = round(clock.get(stage, 0.0) + time.perf_counter() - t0, 3)

        return run

    return wrap


episodes_task = task(name="episodes", cache_policy=NO_CACHE)(timed("episodes")(build_episodes))
evaluate_task = task(name="evaluate", cache_policy=NO_CACHE)(timed("evaluate")(evaluate_stage))
score_task = task(name="score", cache_policy=NO_CACHE)(timed("score")(score_stage))
publish_task = task(name="publish", cache_policy=NO_CACHE)(timed("publish")(publish_stage))
gc_task = task(name="gc", cache_policy=NO_CACHE)(collect_garbage)  # retention, after publish
