"""Run the real nightly on a lake, as a user would, and read back what it published.

`run_nightly` starts `python -m flows.cli nightly --storage LAKE --date D` as a subprocess
of its own: PREFECT_HOME in a temporary folder (a temporary local API server, SQLite),
telemetry off (DO_NOT_TRACK=1, PREFECT_SERVER_ANALYTICS_ENABLED=false,
GX_ANALYTICS_ENABLED=false), METAREC_SEED = the yardstick's seed, optionally
METAREC_TRAIN_BUDGET_SECONDS, everything else the product's defaults (or the caller's
METAREC_* environment). Its output goes to a log file.
`published` reads gold/recommendations/run_date=D (the published table itself, not the
staging area), `night_record` what the night recorded (gold/runs, the training summary).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from schemas.tables import METRICS, MODELS, RECOMMENDATIONS, RUNS
from tasks.lake.storage import Lake

REPO = Path(__file__).resolve().parents[2]
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


class NightlyFailed(RuntimeError):
    """The nightly exited non-zero or published nothing (the log says why)."""


@dataclass(frozen=True)
class NightRun:
    """One nightly subprocess: exit code, wall time and where its output went."""

    returncode: int
    seconds: float
    log: str
    command: tuple[str, ...]


def run_nightly(
    root: Path,
    day: dt.date,
    seed: int = 0,
    train_steps: int | None = None,
    log: Path | None = None,
    timeout: float = 3 * 3600.0,
    product: Path = REPO,
    train_budget: float | None = None,
) -> NightRun:
    """Run the nightly for `day` on the lake at `root` in a fresh process; raises
    NightlyFailed when it exits non-zero. `product`: the checkout whose nightly runs (this
    one by default; e.g. a `git archive` export of the commit being measured).
    `train_budget`: METAREC_TRAIN_BUDGET_SECONDS for the night (None: the product's), so
    that on a shared machine the step cap, not the load, ends training."""
    command = [sys.executable, "-m", "flows.cli", "nightly", "--storage", str(root),
               "--date", day.isoformat()]  # fmt: skip
    if train_steps is not None:
        command += ["--train-steps", str(train_steps)]
    log = log or Path(root).parent / f"nightly-{day}.log"
    with tempfile.TemporaryDirectory(prefix="metarec-yardstick-prefect-") as home:
        env = {**os.environ, **TELEMETRY_OFF, "PREFECT_HOME": home, "METAREC_SEED": str(seed)}
        if train_budget is not None:
            env["METAREC_TRAIN_BUDGET_SECONDS"] = str(train_budget)
        env.pop("PREFECT_API_URL", None)  # never a shared server: a temporary one per run
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(product), env.get("PYTHONPATH")]))
        t0 = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.run(command, cwd=product, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout)  # fmt: skip
        seconds = time.perf_counter() - t0
    run = NightRun(proc.returncode, round(seconds, 1), str(log), tuple(command))
    if proc.returncode != 0:
        tail = Path(log).read_text(errors="replace")[-3000:]
        raise NightlyFailed(f"nightly exited {proc.returncode} for {day} on {root}:\n{tail}")
    return run


def published(lake: Lake, day: dt.date) -> pl.DataFrame:
    """The published top-K table of `day` (gold/recommendations/run_date=D)."""
    if not lake.exists(RECOMMENDATIONS, run_date=day):
        raise NightlyFailed(f"nothing published under {lake.path(RECOMMENDATIONS, run_date=day)}")
    return lake.read_partition(RECOMMENDATIONS, run_date=day)


def night_record(lake: Lake, day: dt.date) -> dict:
    """What the night recorded: its gold/runs row (published model, gate reason, stage
    seconds), the training summary (models/run_date=D/metrics.json) and its own holdout
    metrics (gold/metrics: the gate's view, pooled segment)."""
    out: dict = {}
    runs = pl.DataFrame()
    if lake.exists(RUNS, stage="nightly", dt=day):
        runs = lake.read_partition(RUNS, stage="nightly", dt=day)
    if runs.height:
        row = runs.row(runs.height - 1, named=True)
        keep = ("status", "champion_model", "published_model", "published_from_candidate",
                "gate_reason", "users_scored", "rows_published", "duration_seconds")  # fmt: skip
        out.update({k: row.get(k) for k in keep})
        out["stage_seconds"] = {k.removeprefix("seconds_"): v for k, v in row.items()
                                if k.startswith("seconds_") and v is not None}  # fmt: skip
    rel = lake.relpath(lake.path(MODELS, run_date=day))
    train = lake.read_json(f"{rel}/metrics.json") or {}
    out["train"] = {k: train.get(k) for k in ("steps", "seconds", "best_step", "best_metric",
                                              "device", "warm_start")}  # fmt: skip
    if lake.exists(METRICS, run_date=day):
        gate = lake.read_partition(METRICS, run_date=day).filter(pl.col("segment") == "all")
        out["holdout_ndcg@10"] = {r["model"]: round(float(r["ndcg_at_10"]), 4)
                                  for r in gate.iter_rows(named=True)}  # fmt: skip
    return out
