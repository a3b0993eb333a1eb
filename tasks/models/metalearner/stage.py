"""Training entry points of the meta-learner and its checkpoints in the lake.

Reads the previous checkpoint `models/run_date=<earlier>/` (warm start) and the history up
to D (tasks.learn.history); writes `models/run_date=D/`: the checkpoint files of
checkpoint.py (model.pt, config.json, item_ids.json, encoders.json, item_item.pt) plus
train_log.json and metrics.json (written last: both present = a complete save), the folder
replaced whole.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from schemas.tables import MODELS
from tasks.config import Settings
from tasks.lake.dates import parse_date
from tasks.lake.storage import Lake
from tasks.learn.history import load_history
from tasks.learn.holdout import NightHoldout, holdout_for_night
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.metalearner.config import MetaConfig
from tasks.models.metalearner.learner import MetaLearner

LogRecord = dict[str, float | None]  # {step, seconds, train_loss, val_metric}


@dataclass(frozen=True)
class TrainResult:
    """A trained meta-learner and how it got there."""

    model: MetaLearner
    log: list[LogRecord]
    best_step: int
    best_metric: float | None  # validation NDCG@10 at best_step (None: no validation users)
    steps: int
    seconds: float
    device: str
    warm_start: dict | None  # rows mapped from the previous checkpoint


def train_metalearner(
    train: Interactions,
    side: SideFeatures,
    config: MetaConfig,
    *,
    budget_seconds: float,
    max_steps: int | None = None,
    init_from: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
    on_progress: Callable[[dict], None] | None = None,
    now: dt.datetime | None = None,
    holdout: NightHoldout | None = None,
) -> TrainResult:
    """Meta-train within budget_seconds of wall time (and at most max_steps steps).

    `now` is when the model will score (its time prior is taken then); default: just
    after the last training event. `holdout`: validate on the night's holdout (whose
    train is `train`) instead of held-out training users.

    Deterministic on CPU for a seed when max_steps, not the budget, ends training.
    """
    learner = MetaLearner(config, budget_seconds=budget_seconds, max_steps=max_steps,
                          init_from=init_from, seed=seed, device=device,
                          on_progress=on_progress)  # fmt: skip
    report = learner.fit(train, side, now, holdout).last_fit
    run = report.run
    return TrainResult(learner, run.log, run.best_step, run.best_metric, run.steps,
                       report.seconds, report.device, report.warm_start)  # fmt: skip


def save_checkpoint(result: TrainResult, lake: Lake, run_date: dt.date) -> str:
    """Write the trained model, its config, vocabularies, training log and metrics as the
    folder models/run_date=D/, replacing it whole (Lake.replace_folder: on a local disk
    built aside and renamed into place, so a crash leaves the old folder or the new one,
    never a mix); returns the folder URL."""
    rel = lake.relpath(lake.path(MODELS, run_date=run_date))
    skip = ("model", "log")
    metrics = {f.name: getattr(result, f.name) for f in fields(result) if f.name not in skip}
    files = {
        **result.model.to_files(),
        "train_log.json": json.dumps(result.log, indent=2, default=str).encode(),
        # Last: on object stores, where files land one by one, it marks a complete save.
        "metrics.json": json.dumps(metrics, indent=2, default=str).encode(),
    }
    lake.replace_folder(rel, files)
    return lake.url(MODELS, run_date=run_date)


def latest_checkpoint(lake: Lake, before: dt.date) -> str | None:
    """Folder URL of the newest complete checkpoint with run_date strictly before `before`."""
    for value in sorted(lake.partitions(MODELS), reverse=True):
        if parse_date(value) >= before:  # partition values are ISO date strings
            continue
        folder = lake.path(MODELS, run_date=value)
        # model.pt is written first, metrics.json last: both present = a complete save.
        if lake.fs.exists(f"{folder}/model.pt") and lake.fs.exists(f"{folder}/metrics.json"):
            return lake.url(MODELS, run_date=value)
    return None


# ---- the nightly train stage -----------------------------------------------------------


@dataclass(frozen=True)
class TrainStageResult:
    """What the nightly train stage did (small: passed between Prefect tasks)."""

    run_date: dt.date
    checkpoint: str
    warm_start_from: str | None
    train_users: int
    train_rows: int
    steps: int
    seconds: float
    best_step: int
    best_metric: float | None
    device: str
    log: list[LogRecord]


def train_stage(
    lake: Lake,
    run_date: dt.date,
    settings: Settings,
    on_progress: Callable[[dict], None] | None = None,
) -> TrainStageResult:
    """Meta-train on the history before the night's holdout cut (tasks.learn.holdout),
    early-stopped and tuned on what the holdout users did after it, warm-starting from the
    previous night's checkpoint; save `models/run_date=D/`.

    The same model is evaluated on the same holdout (tasks.serve.evaluate) and, where the
    gate picks it, scores users from their full history with no retraining. `run_date`
    may also be an ISO string (older callers).
    """
    day = parse_date(run_date)
    history = load_history(lake, day)
    holdout = holdout_for_night(history.interactions, day, settings.holdout_min_users,
                                settings.returning_gap_days, settings.seed)  # fmt: skip
    init = latest_checkpoint(lake, day)
    result = train_metalearner(
        holdout.train,
        history.side,
        MetaConfig(stale_days=float(settings.returning_gap_days)),
        budget_seconds=settings.train_budget_seconds,
        max_steps=settings.train_max_steps,
        init_from=init,
        seed=settings.seed,
        on_progress=on_progress,
        now=holdout.cut,
        holdout=holdout,
    )
    path = save_checkpoint(result, lake, day)
    return TrainStageResult(
        run_date=day,
        checkpoint=path,
        warm_start_from=init,
        train_users=int(np.unique(holdout.train.user).size),
        train_rows=len(holdout.train),
        steps=result.steps,
        seconds=round(result.seconds, 3),
        best_step=result.best_step,
        best_metric=result.best_metric,
        device=result.device,
        log=result.log,
    )
