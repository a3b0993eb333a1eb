"""The meta-training step as its own flow, so it can be its own deployment.

Reads   silver/interactions up to D, raw/users, raw/items, the previous checkpoint under
models/ (through tasks.models.train_stage).  Writes  models/run_date=D/.

The nightly flow calls `train_flow` in-process (a subflow) or, when it is given a train
deployment, through `run_deployment`, so training lands on a worker of the `metarec-gpu`
pool (concurrency 1 per worker) while the data stages stay on `metarec-cpu` workers. On a
machine without a GPU the same deployment trains on CPU (tasks.models.select_device).
While it trains, a progress artifact (key `metarec-training-progress`) moves with the
steps; when it ends, the training curve is a table artifact (`metarec-training`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows import artifacts
from tasks.config import Settings, settings_from
from tasks.lake.storage import Lake, lake_from
from tasks.models.metalearner.stage import TrainStageResult, train_stage

PROGRESS_KEY = "metarec-training-progress"

train_task = task(name="train", cache_policy=NO_CACHE)(train_stage)


def progress_reporter(settings: Settings, day: dt.date):
    """A `on_progress` callback for train_stage that moves a progress artifact: the share
    of `train_max_steps` done, or of the time budget when that runs out first."""
    artifact_id = create_progress_artifact(
        progress=0.0,
        key=PROGRESS_KEY,
        description=f"Meta-learner training for {day}: up to {settings.train_max_steps} steps "
        f"or {settings.train_budget_seconds:.0f}s",
    )
    logger = get_run_logger()

    def report(record: dict) -> None:
        done = max(
            record["step"] / settings.train_max_steps,
            record["seconds"] / settings.train_budget_seconds,
        )
        metric = record.get("val_metric")
        update_progress_artifact(
            artifact_id,
            progress=round(min(100.0, 100.0 * done), 1),
            description=f"step {record['step']}, train loss {record['train_loss']:.4f}, "
            f"validation NDCG@10 {'n/a' if metric is None else f'{metric:.4f}'}",
        )
        # One line per validation (every `eval_every` steps), never per step.
        val = "n/a" if metric is None else f"{metric:.4f}"
        logger.info("train step %d: loss %.4f, val NDCG@10 %s", record["step"],
                    record["train_loss"], val)  # fmt: skip

    return report


@flow(name="train", flow_run_name="train-{run_date}")
def train_flow(
    run_date: dt.date,
    storage: str | None = None,
    train_max_steps: int | None = None,
) -> dict[str, Any]:
    """Meta-train the model of `run_date` (warm start from the newest earlier checkpoint)
    and save it under models/run_date=D/: the train deployment's entry point (GPU pool);
    returns a small summary."""
    settings = settings_from(storage=storage, train_max_steps=train_max_steps)
    result = train_and_report(lake_from(settings.storage), run_date, settings)
    return {
        "run_date": run_date.isoformat(),
        "checkpoint": result.checkpoint,
        "device": result.device,
        "steps": result.steps,
        "seconds": result.seconds,
        "best_metric": result.best_metric,
    }


def train_and_report(lake: Lake, day: dt.date, settings: Settings) -> TrainStageResult:
    """The train task with its progress artifact, training-curve artifact and log line."""
    result = train_task(lake, day, settings, on_progress=progress_reporter(settings, day))
    artifacts.training(result)
    get_run_logger().info(
        "trained %d steps in %.1fs on %s (best NDCG@10 %s at step %d); checkpoint %s",
        result.steps, result.seconds, result.device,
        "n/a" if result.best_metric is None else f"{result.best_metric:.4f}",
        result.best_step, result.checkpoint,
    )  # fmt: skip
    return result
