"""Run `metarec nightly` on ML-100K and keep the published table, or compare two of them.

    .venv/bin/python benchmarks/nightly_snapshot.py run --out before.parquet [--repo DIR]
    .venv/bin/python benchmarks/nightly_snapshot.py compare before.parquet after.parquet

`run` imports ML-100K from ../shared/data into a fresh temporary lake (never into the
repo: its license forbids redistribution), runs the real CLI (`python -m flows.cli
nightly`) for its last day with the code of `--repo` (default: this checkout), and copies
the published `gold/recommendations` partition to `--out`. `compare` checks that two such
tables hold the same rows (user, rank, item, model, segment) and the same scores within a
float tolerance: how a refactor shows it changed no behaviour.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
KEY = ["user_id", "rank"]
SAME = ["item_id", "model", "user_segment"]


def run(repo: Path, shared: Path, out: Path, steps: int | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="metarec-snapshot-"))
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect"), "PYTHONPATH": str(repo),
           "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    cli = [sys.executable, "-m", "flows.cli"]
    lake = str(root / "lake")
    subprocess.run([*cli, "import-movielens", "--source", str(shared / "ml-100k"),
                    "--storage", lake], check=True, env=env, cwd=repo)  # fmt: skip
    last = sorted(p.name for p in (root / "lake/raw/interactions").iterdir())[-1]
    day = last.removeprefix("dt=")
    cmd = [*cli, "nightly", "--storage", lake, "--date", day]
    if steps:
        cmd += ["--train-steps", str(steps)]
    subprocess.run(cmd, check=True, env=env, cwd=repo)
    files = glob.glob(f"{lake}/gold/recommendations/run_date={day}/*.parquet")
    table = pl.read_parquet(files)
    table.write_parquet(out)
    print(f"{len(table)} rows, {table['user_id'].n_unique()} users, models "
          f"{sorted(table['model'].unique())} -> {out}")  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


def compare(a: Path, b: Path, tolerance: float) -> int:
    left, right = pl.read_parquet(a), pl.read_parquet(b)
    if left.height != right.height:
        print(f"different row counts: {left.height} vs {right.height}")
        return 1
    joined = left.join(right, on=KEY, how="full", suffix="_b", coalesce=True)
    problems = []
    for col in SAME:
        diff = joined.filter(pl.col(col).ne_missing(pl.col(f"{col}_b"))).height
        if diff:
            problems.append(f"{diff} rows differ in {col}")
    gap = joined.select((pl.col("score") - pl.col("score_b")).abs().max()).item()
    if gap is None or gap > tolerance:
        problems.append(f"largest score difference {gap} > {tolerance}")
    print(f"{left.height} rows compared; largest score difference {gap}")
    for p in problems:
        print("  " + p)
    print("SAME TABLE" if not problems else "TABLES DIFFER")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--repo", type=Path, default=REPO)
    r.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    r.add_argument("--train-steps", type=int, default=None)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.repo.resolve(), args.shared.resolve(), args.out, args.train_steps)
    else:
        sys.exit(compare(args.a, args.b, args.tolerance))


if __name__ == "__main__":
    main()
