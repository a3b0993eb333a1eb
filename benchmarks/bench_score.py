"""Top-K scoring benchmark: tasks.serve.topk.top_k against the machine's fp32 matmul ceiling and
against implicit's batch `recommend` on the same factors, plus peak memory vs users.

    .venv/bin/python benchmarks/bench_score.py                 # 200k users x 50k items x 64
    .venv/bin/python benchmarks/bench_score.py --users 20000 --small-users 5000   # quick

Prints a Markdown table. Each measurement is one run (the dev machine is shared: quote
ratios measured side by side, not absolute times). Peak RSS is measured in a fresh child
process per user count; "working set" is the growth of RSS during top_k over the inputs
already in memory (after a tiny warm-up call), minus the (n_users, k) outputs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.serve.topk import top_k


def make_inputs(n_users: int, n_items: int, dim: int, seen: int, seed: int = 0):
    """Random factors and `seen` random interactions per user (the exclusion matrix)."""
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((n_users, dim), dtype=np.float32)
    items = rng.standard_normal((n_items, dim), dtype=np.float32)
    rows = np.repeat(np.arange(n_users), seen)
    cols = rng.integers(0, n_items, n_users * seen)
    exclude = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    exclude.sum_duplicates()
    return users, items, exclude


def matmul_ceiling(size: int = 4096, repeats: int = 3) -> float:
    """Best fp32 GFLOP/s of a big square torch.mm on this machine's threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def run_implicit(users, items, exclude, k: int) -> tuple[float, np.ndarray]:
    """implicit's CPU batch recommend, configured as its docs advise (BLAS single-threaded,
    its own threads on every core)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AlternatingLeastSquares(factors=users.shape[1], num_threads=0)
    model.user_factors, model.item_factors = users, items
    with threadpool_limits(1, "blas"):
        start = time.perf_counter()
        ids, _ = model.recommend(
            np.arange(len(users)), exclude, N=k, filter_already_liked_items=True
        )
        return time.perf_counter() - start, ids


def rss_child(n_users: int, args: argparse.Namespace) -> dict:
    """In this (child) process: build inputs, run top_k, report RSS figures in MiB."""
    import psutil

    users, items, exclude = make_inputs(n_users, args.items, args.dim, args.seen)
    # A tiny call first pages in torch's code and thread pools: not scoring memory.
    top_k(users[:64], items[:8192], args.k, exclude=exclude[:64, :8192])
    before = psutil.Process().memory_info().rss
    top_k(users, items, args.k, exclude=exclude)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    outputs = n_users * args.k * 8
    mib = 2**20
    return {
        "users": n_users,
        "peak_rss": peak / mib,
        "inputs_rss": before / mib,
        "working_set": (peak - before - outputs) / mib,
    }


def measure_rss(n_users: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", str(n_users)]
    cmd += ["--items", str(args.items), "--dim", str(args.dim), "--k", str(args.k)]
    cmd += ["--seen", str(args.seen)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--small-users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seen", type=int, default=20, help="interactions per user")
    parser.add_argument("--skip-implicit", action="store_true")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args)))
        return

    users, items, exclude = make_inputs(args.users, args.items, args.dim, args.seen)
    flops = 2 * args.users * args.items * args.dim
    top_k(users[:2048], items, args.k, exclude=exclude[:2048])  # warm-up
    ceiling_before = matmul_ceiling()
    start = time.perf_counter()
    ours_idx, _ = top_k(users, items, args.k, exclude=exclude)
    ours = time.perf_counter() - start
    ceiling = (ceiling_before + matmul_ceiling()) / 2  # bracket the run: the load changes
    rows = [
        ("machine", f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"),
        ("shape", f"{args.users:,} users x {args.items:,} items x {args.dim} dims, k={args.k}"),
        ("fp32 matmul ceiling (4096^3 torch.mm)", f"{ceiling:.1f} GFLOP/s"),
        ("tasks.serve.topk.top_k", f"{ours:.2f} s"),
        ("top_k effective (2*U*I*d / time)", f"{flops / ours / 1e9:.1f} GFLOP/s"),
        ("top_k share of the ceiling", f"{100 * flops / ours / 1e9 / ceiling:.0f} %"),
    ]
    if not args.skip_implicit:
        implicit_time, implicit_idx = run_implicit(users, items, exclude, args.k)
        same = np.mean(np.sort(implicit_idx[:2000], 1) == np.sort(ours_idx[:2000], 1))
        rows += [
            ("implicit batch recommend (same factors)", f"{implicit_time:.2f} s"),
            ("implicit effective", f"{flops / implicit_time / 1e9:.1f} GFLOP/s"),
            ("speed-up over implicit", f"{implicit_time / ours:.2f} x"),
            ("same lists as implicit (first 2,000 users)", f"{100 * same:.2f} %"),
        ]
    for n in (args.small_users, args.users):
        rss = measure_rss(n, args)
        rows.append(
            (
                f"peak RSS, {n:,} users",
                f"{rss['peak_rss']:.0f} MiB (inputs {rss['inputs_rss']:.0f} MiB, "
                f"top_k working set {rss['working_set']:.0f} MiB)",
            )
        )
    print("| measure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
