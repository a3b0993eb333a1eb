"""The yardstick: tuned baselines and the meta-learner on the protocol of DESIGN.md.

Per dataset and seed:
  1. split: `temporal_split(data, n_values=(0, 1, 3, 5, 10), new_items=True)`: new users =
     the latest-arriving 20%, seeing their first n events (n = 0: side features only);
     warm users scored after the cutoff; `new_items` = warm users' events on items first
     seen after the cutoff. Last.fm has no time: a seeded random order stands in for it.
  2. tuning: every baseline grid-searched (`TuningGrid`) on a validation split carved from
     the training part alone (`temporal_split(split.train)`), NDCG@10 on its pooled holdout;
     the meta-learner gets the same split and metric for its own grid (META_GRID: the
     popularity window of its recent part, or its internal choice), trained as for the
     report, once per dataset (on seed 0's split for Last.fm, whose baselines are tuned per
     seed). Both are cached in --tuned.
  3. fit on split.train, score the full catalogue, report Recall@20, NDCG@10, coverage,
     novelty per segment, and the new-item table (`evaluate_new_items`).
Tables: mean ± standard deviation over seeds (sample std; 0 when one seed).
Hardware: the team's 2-core CPU, shared; training runs on a time budget AND a step cap,
so a loaded machine gives fewer steps (the steps taken are reported).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.quality.data import load_dataset
from tasks.learn.split import temporal_split
from tasks.models.metalearner import MetaConfig, train_metalearner
from tasks.serve import (
    EVAL_SHOTS,
    BaselineConfigs,
    evaluate_models,
    evaluate_new_items,
    fit_baselines,
    tune_baselines,
)

SHOTS = EVAL_SHOTS
# The meta-learner's grid on the baselines' validation split: its recent part's window
# (one of them, or all four with the choice left to its own validation users: {}).
META_GRID = ({}, {"recent_days": [7]}, {"recent_days": [30]}, {"recent_days": [90]},
             {"recent_days": [365]})  # fmt: skip
SEGMENTS = ("new_n0", "new_n1", "new_n3", "new_n5", "new_n10", "warm", "all")
BASELINE_NAMES = (
    "most_popular", "recent_popular", "ease", "item_knn", "als", "feature_group_popular",
    "item_features",
)  # fmt: skip


def run_dataset(
    name: str, seed: int, budget: float, max_steps: int, meta: MetaConfig, tuned: dict
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """One dataset at one seed: (segment metrics, new-item metrics, run info)."""
    ds = load_dataset(name, seed)
    split = temporal_split(ds.data, n_values=SHOTS, new_items=True)
    key = name if ds.temporal else f"{name}/{seed}"  # a temporal split is seed-independent
    t0 = time.perf_counter()
    if key not in tuned:
        val = temporal_split(split.train)
        best, table = tune_baselines(val, side=ds.side)
        tuned[key] = {"configs": dataclasses.asdict(best), "grid": table.to_dicts()}
    meta_tuned = tuned.setdefault("metalearner", {})  # per dataset (seed 0's split)
    if name not in meta_tuned:
        meta_tuned[name] = tune_meta(temporal_split(split.train), ds, budget, max_steps, meta)
    meta = MetaConfig.from_dict({**dataclasses.asdict(meta), **meta_tuned[name]["best"]})
    configs = BaselineConfigs.from_dict(tuned[key]["configs"])
    configs = dataclasses.replace(configs, als=dataclasses.replace(configs.als, seed=seed))
    models = fit_baselines(split.train, ds.side, split.cutoff, configs, BASELINE_NAMES)
    t1 = time.perf_counter()
    result = train_metalearner(
        split.train, ds.side, meta, budget_seconds=budget, max_steps=max_steps, seed=seed
    )
    models["metalearner"] = result.model
    t2 = time.perf_counter()
    metrics = evaluate_models(models, split, ds.side)
    fresh = evaluate_new_items(models, split, ds.side)
    info = {
        "dataset": name, "seed": seed, "baseline_seconds": round(t1 - t0, 1),
        "meta_seconds": round(t2 - t1, 1), "meta_steps": result.steps,
        "meta_overrides": meta_tuned[name]["best"],
        "meta_best_step": result.best_step, "new_items": len(split.new_items),
        "configs": dataclasses.asdict(configs),
    }  # fmt: skip
    tag = [pl.lit(name).alias("dataset"), pl.lit(seed).alias("seed")]
    return metrics.with_columns(tag), fresh.with_columns(tag), info


def tune_meta(val, ds, budget: float, max_steps: int, meta: MetaConfig) -> dict:
    """The META_GRID point with the best pooled NDCG@10 on the validation split `val`
    (seed 0, the same budget and step cap as the report); every point's score kept."""
    points = []
    for overrides in META_GRID:
        config = MetaConfig.from_dict({**dataclasses.asdict(meta), **overrides})
        result = train_metalearner(val.train, ds.side, config, budget_seconds=budget,
                                   max_steps=max_steps, seed=0)  # fmt: skip
        m = evaluate_models({"metalearner": result.model}, val, ds.side)
        ndcg = m.filter(pl.col("segment") == "all")["ndcg@10"][0]
        points.append({"overrides": overrides, "ndcg@10": round(float(ndcg), 4)})
        print(json.dumps({"dataset": ds.name, "meta_grid": points[-1]}), file=sys.stderr)
    best = max(points, key=lambda p: p["ndcg@10"])  # ties: the earlier (simpler) point
    return {"best": best["overrides"], "grid": points}


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.3f} ± {sd:.3f}" if np.isfinite(mean) else "-"


def summarise(metrics: pl.DataFrame, fresh: pl.DataFrame) -> str:
    """Markdown: per dataset, NDCG@10 and Recall@20 per model x segment, the new-item
    table, and the target check (meta-learner vs the best baseline per segment)."""
    out = []
    agg = metrics.group_by("dataset", "model", "segment").agg(
        *(pl.col(c).mean().alias(c) for c in ("ndcg@10", "recall@20", "coverage", "novelty")),
        *(pl.col(c).std().fill_null(0.0).alias(f"{c}_sd") for c in ("ndcg@10", "recall@20")),
        pl.col("users").first(),
    )
    for ds in metrics["dataset"].unique(maintain_order=True):
        d = agg.filter(pl.col("dataset") == ds)
        segs = [s for s in SEGMENTS if s in set(d["segment"])]
        users = {s: d.filter(pl.col("segment") == s)["users"][0] for s in segs}
        n_seeds = metrics.filter(pl.col("dataset") == ds)["seed"].n_unique()
        out.append(f"### {ds} ({n_seeds} seeds)\n")
        for metric in ("ndcg@10", "recall@20"):
            out.append(f"{metric.upper()} (users: " +
                       ", ".join(f"{s} {users[s]}" for s in segs) + ")\n")  # fmt: skip
            out.append("| model | " + " | ".join(segs) + " |")
            out.append("| --- |" + " --- |" * len(segs))
            for model in d["model"].unique(maintain_order=True).sort():
                m = d.filter(pl.col("model") == model)
                cells = []
                for s in segs:
                    r = m.filter(pl.col("segment") == s)
                    cells.append(_pm(r[metric][0], r[f"{metric}_sd"][0]) if r.height else "-")
                out.append(f"| {model} | " + " | ".join(cells) + " |")
            out.append("")
        out.append("Target check (NDCG@10, mean over seeds): meta-learner / best baseline\n")
        out.append("| segment | best baseline | its NDCG@10 | meta-learner | ratio |")
        out.append("| --- | --- | --- | --- | --- |")
        for s in segs:
            r = d.filter(pl.col("segment") == s)
            base = r.filter(pl.col("model") != "metalearner").sort("ndcg@10", descending=True)
            meta = r.filter(pl.col("model") == "metalearner")["ndcg@10"]
            if base.height and meta.len():
                b, v = base["ndcg@10"][0], meta[0]
                out.append(f"| {s} | {base['model'][0]} | {b:.3f} | {v:.3f} | {v / b:.2f} |")
        out.append("")
        f = fresh.filter(pl.col("dataset") == ds)
        if f.height:
            cols = [c for c in f.columns if c not in ("model", "dataset", "seed", "users")]
            fa = (
                f.group_by("model")
                .agg(
                    *(pl.col(c).mean().alias(c) for c in cols),
                    *(pl.col(c).std().fill_null(0.0).alias(f"{c}_sd") for c in cols),
                    pl.col("users").first(),
                )
                .sort("model")
            )
            out.append(f"New items (warm users' events on items first seen after the cutoff; "
                       f"users {fa['users'][0]})\n")  # fmt: skip
            out.append("| model | " + " | ".join(cols) + " |")
            out.append("| --- |" + " --- |" * len(cols))
            for r in fa.iter_rows(named=True):
                out.append(f"| {r['model']} | " +
                           " | ".join(_pm(r[c], r[f'{c}_sd']) for c in cols) + " |")  # fmt: skip
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Run the yardstick and write Markdown tables (and the raw rows as JSON beside)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality")
    ap.add_argument("--datasets", default="ml-100k,ml-latest-small,lastfm,synth")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--budget", type=float, default=900.0, help="meta-learner seconds cap (steps decide)"
    )
    ap.add_argument("--max-steps", type=int, default=300, help="meta-learner step cap")
    ap.add_argument("--config", default="{}", help="MetaConfig overrides as JSON")
    ap.add_argument("--out", default="benchmarks/quality/last_run.md")
    ap.add_argument(
        "--tuned",
        default="benchmarks/quality/tuned.json",
        help="cache of tuned baseline configs per dataset (grid results kept)",
    )
    ap.add_argument("--retune", action="store_true", help="ignore the cache")
    args = ap.parse_args(argv)
    meta = MetaConfig.from_dict({**dataclasses.asdict(MetaConfig()), **json.loads(args.config)})
    cache = Path(args.tuned)
    tuned: dict = {} if args.retune or not cache.exists() else json.loads(cache.read_text())
    all_m, all_f, infos = [], [], []
    for name in args.datasets.split(","):
        for seed in range(args.seeds):
            m, f, info = run_dataset(name, seed, args.budget, args.max_steps, meta, tuned)
            all_m.append(m)
            all_f.append(f)
            infos.append(info)
            print(json.dumps({k: v for k, v in info.items() if k != "configs"}), file=sys.stderr)
            cache.write_text(json.dumps(tuned, indent=1, default=str))
    metrics, fresh = pl.concat(all_m), pl.concat(all_f, how="diagonal")
    text = summarise(metrics, fresh)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"meta-learner: budget {args.budget} s, max {args.max_steps} steps, "
              f"config overrides {args.config}\n\n")  # fmt: skip
    out.write_text(header + text + "\n")
    out.with_suffix(".json").write_text(json.dumps(
        {"metrics": metrics.to_dicts(), "new_items": fresh.to_dicts(), "runs": infos,
         "tuning": tuned}, default=str))  # fmt: skip
    print(header + text)
