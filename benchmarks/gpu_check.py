"""The GPU check (issue 11): the nightly's meta-training on ML-100K, on the CPU and on CUDA
(AMP: bf16 where supported), side by side: steps, seconds, steps/s and the best NDCG@10 on
the night's holdout (the early-stopping metric the nightly logs).

    .venv/bin/python -m benchmarks.gpu_check [--data ../shared/data/ml-100k] [--steps 300]

Lands ML-100K in a temporary lake, ingests and validates it (the real stages), builds the
night's holdout for the last date and trains the same MetaConfig the nightly trains, once
per device, with the step cap (not the wall budget) ending training. Without CUDA it
trains on the CPU only and says so. benchmarks/gpu_check.sh wraps it for a lent machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import torch

from tasks.config import Settings
from tasks.ingest import ingest_dates
from tasks.lake.listing import raw_dates
from tasks.lake.storage import lake_from
from tasks.learn.history import load_history
from tasks.learn.holdout import holdout_for_night
from tasks.models.metalearner.config import MetaConfig
from tasks.models.metalearner.stage import train_metalearner
from tasks.sources.movielens import import_movielens
from tasks.validate import validate_dates

SHARED_ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def check(data: Path, steps: int, devices: list[str]) -> list[dict]:
    """Train on each device; one row per device (see the module doc)."""
    with tempfile.TemporaryDirectory(prefix="metarec-gpu-check-") as tmp:
        settings = Settings(storage=str(Path(tmp) / "lake"))
        lake = lake_from(settings.storage)
        day = import_movielens(data, lake).last_date
        dates = raw_dates(lake, day)
        ingest_dates(lake, dates, settings)
        validate_dates(lake, dates, settings)
        history = load_history(lake, day)
    holdout = holdout_for_night(history.interactions, day, settings.holdout_min_users,
                                settings.returning_gap_days, settings.seed)  # fmt: skip
    config = MetaConfig(stale_days=float(settings.returning_gap_days))
    rows = []
    for device in devices:
        start = time.perf_counter()
        result = train_metalearner(holdout.train, history.side, config, budget_seconds=3600.0,
                                   max_steps=steps, seed=settings.seed, device=device,
                                   now=holdout.cut, holdout=holdout)  # fmt: skip
        seconds = time.perf_counter() - start
        train_s = max(r["seconds"] for r in result.log) if result.log else seconds
        rows.append({"device": result.device, "steps": result.steps, "best_step": result.best_step,
                     "best_ndcg@10": round(result.best_metric or 0.0, 4),
                     "fit_seconds": round(seconds, 1), "train_seconds": round(train_s, 1),
                     "steps_per_s": round(result.steps / max(train_s, 1e-9), 2)})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                 description=__doc__.split("\n\n")[0])  # fmt: skip
    ap.add_argument("--data", default=str(SHARED_ML100K), help="the ML-100K folder")
    ap.add_argument("--steps", type=int, default=300, help="training steps per device")
    args = ap.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print("no CUDA device visible: training on the CPU only")
    print(f"ML-100K, {args.steps} steps, torch {torch.__version__}, "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    rows = check(Path(args.data), args.steps, devices)
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + " --- |" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
