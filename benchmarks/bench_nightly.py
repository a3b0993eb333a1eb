"""Wall time of one `metarec nightly` on ML-100K, stage by stage, and Prefect's overhead.

    .venv/bin/python benchmarks/bench_nightly.py [--shared ../shared/data] [--steps 300]

Imports ML-100K from ../shared/data into a fresh temporary lake (never into the repo: its
license forbids redistribution), then runs the nightly for its last day twice in separate
processes: the first run ingests all 213 raw dates, the second finds them unchanged. Stage
times come from the run's own record (gold/runs); "Prefect + process" is the process wall
time minus the stages (interpreter start, imports, the temporary API server, flow/task
bookkeeping). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--steps", type=int, default=None, help="meta-learner steps")
    args = parser.parse_args()

    from tasks.lake.storage import lake_from
    from tasks.sources.movielens import import_movielens

    root = tempfile.mkdtemp(prefix="metarec-bench-nightly-")
    lake = lake_from(f"{root}/lake")
    imported = import_movielens(Path(args.shared) / "ml-100k", lake)
    day = imported.last_date.isoformat()
    env = {**os.environ, "PREFECT_HOME": f"{root}/prefect", "PREFECT_LOGGING_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "flows.cli", "nightly", "--storage", lake.root, "--date", day]
    if args.steps:
        cmd += ["--train-steps", str(args.steps)]
    rows = []
    for label in ("first run (ingests 213 dates)", "rerun (inputs unchanged)"):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=REPO)
        wall = time.perf_counter() - t0
        run = lake.read_partition("gold/runs", stage="nightly", dt=day).to_dicts()[0]
        stages = {k.removeprefix("seconds_"): v for k, v in run.items()
                  if k.startswith("seconds_") and v is not None}  # fmt: skip
        rows.append((label, wall, stages, run["published_model"]))

    names = list(rows[0][2])
    print(f"| run | wall s | {' | '.join(names)} | Prefect + process | published |")
    print(f"|---|---:|{'---:|' * len(names)}---:|---|")
    for label, wall, stages, model in rows:
        cells = " | ".join(f"{stages.get(n, 0):.1f}" for n in names)
        print(f"| {label} | {wall:.1f} | {cells} | {wall - sum(stages.values()):.1f} | {model} |")


if __name__ == "__main__":
    main()
