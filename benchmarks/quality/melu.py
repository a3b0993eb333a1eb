"""The literature's user-cold-start protocol on ML-100K (MeLU / RecBole-MetaRec), with the
rating model of tasks/models/rating/ and honest baselines run in the very same protocol.

    python -m benchmarks.quality.melu --seeds 3

Per seed s: users with 13..100 ratings are permuted (seed s) and cut 8:1:1 into train /
val / test users; each val and test user gets one fixed draw of 10 query items (the rest
is the support). Every predictor sees the training users' ratings in full and a val/test
user's support only; hyperparameters are chosen on the val users' MAE (the model
early-stops on their MSE); the test users' query sets give the table.

Writes benchmarks/quality/melu_last_run.md and .json next to this file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tasks.models.rating import (
    ITEM_SHRINK,
    USER_SHRINK,
    Episodes,
    RatingConfig,
    RatingData,
    build_rating_data,
    config_dict,
    draw_episodes,
    fit_biases,
    item_similarity,
    predict,
    query_metrics,
    residual_matrix,
    rows_of,
    split_users,
    support_user_bias,
    train_rating_model,
)
from tasks.sources.movielens import read_ml100k

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
OUT = Path(__file__).resolve().parent
KNN_K = (10, 20, 40, 80)
KNN_SHRINK = (10.0, 50.0, 200.0)
COLUMNS = ("mae", "rmse", "ndcg@5", "p@5", "ndcg@5_click", "p@5_click", "ndcg@5_graded")
# RecBole-MetaRec, asset/result/MovieLens-100K.md (P@5 / nDCG@5; rating setting unless noted).
PUBLISHED = {
    "MeLU (RecBole-MetaRec)": {"p@5": 0.5345, "ndcg@5": 0.5331},
    "MAMO (RecBole-MetaRec)": {"p@5": 0.6103, "ndcg@5": 0.5929},
    "TaNP (RecBole-MetaRec)": {"p@5": 0.5806, "ndcg@5": 0.5994},
    "MWUF (RecBole-MetaRec, click)": {"p@5_click": 0.6517, "ndcg@5_click": 0.7139},
}
DIFFERENCES = (
    "Model selection: RecBole-MetaRec trains a fixed number of epochs (10-30 in its configs) "
    "and picks the checkpoint on the validation users' MRR@5 / nDCG@5; our model stops "
    "early on the validation users' MAE (its prior's shrinkages, like the baselines', are "
    "tuned on their MAE).",
    "Training episodes: theirs draw each training user's support/query split once (at "
    "data-loader construction); ours re-draw it every epoch (augmentation). Val/test users "
    "get one fixed draw in both.",
    "Ties: their relevant set is torch.topk of the 10 query ratings, so which of several "
    "equally rated items at the 5th place counts as relevant depends on the draw order; "
    "ours is the exact expectation over random tie-breaking (in true ratings and in "
    "predictions). A predictor that ranks at random scores 0.5 nDCG@5 and 0.5 P@5 in this "
    "reading - the floor the published 0.53-0.60 must be read against.",
    "Splits and seeds: theirs is one RecBole run (RecBole's seed and shuffle); ours are 3 "
    "seeded 8:1:1 permutations of the same 582 users (mean ± sample std). With 58 test "
    "users per seed the standard error of a seed's nDCG@5 is about 0.02.",
    "Features: their ML-100K config loads user age, gender, occupation, zip code and item "
    "title, release year and genres ('class'); which of them a model embeds is "
    "model-specific (MeLU embeds the token fields). Ours use age, gender, occupation, zip "
    "region (first character), genres and year, plus item ID embeddings for items some "
    "training user rated (MeLU itself has no item IDs).",
    "Adaptation: MeLU/MAMO adapt by gradient steps on the support set (MAML), TaNP by a task "
    "encoder; ours is amortised (one forward pass of a set encoder), closest to TaNP.",
    "MAE: RecBole-MetaRec publishes no MAE for ML-100K, and the MeLU paper's MAE is on "
    "MovieLens-1M and Book-Crossing (not re-checked here), so MAE has no published anchor "
    "on this dataset; the baselines in the table are the anchor.",
    "User filter: the same 13..100 ratings, but every ML-100K user has at least 20, so only "
    "the upper bound bites (582 of 943 users kept).",
    "Click columns: RecBole-MetaRec's click models (MWUF, MetaEmb, LWA, NLBA) train on "
    "binarised labels (rating >= 4); ours rank the same query sets by predicted rating and "
    "score them with the click rule (relevant = rating >= 4, a user without one scores 0).",
)


# Development log of the rating model (benchmarks/quality/melu.py rerun per variant on the
# same seeds 0-2; the prior = "support mean + item bias" has val MAE 0.769, val nDCG@5 0.636).
# The variant kept is the one with the best val MAE that is cheap enough.
VARIANTS = (
    "old: raw-rating set encoder, MSE, 1 draw | 0.771 | - | 0.806 | 0.633 | 5",
    "residual on frozen prior, MSE, lr 3e-3 (no leave-out sims) | 0.775 | 0.644 | 0.801 | "
    "0.647 | 3",
    "same, lr 1e-3 | 0.765 | 0.647 | 0.792 | 0.656 | 4",
    "+ fold-wise similarities for training users (leak fixed) | 0.762 | 0.647 | 0.792 | 0.645 | 7",
    "  without the fixed similarity | 0.772 | 0.636 | 0.802 | 0.637 | 5",
    "  sim shrink 200 | 0.765 | 0.648 | 0.793 | 0.648 | 5",
    "  4 draws / epoch | 0.765 | 0.642 | 0.790 | 0.643 | 8",
    "  lr 3e-4, 4 draws | 0.766 | 0.646 | 0.791 | 0.646 | 12",
    "  ensemble of 3 | 0.762 | 0.647 | 0.790 | 0.649 | 17",
    "  L1 loss | 0.754 | 0.658 | 0.791 | 0.649 | 8",
    "  L1, 4 draws | 0.754 | 0.650 | 0.791 | 0.646 | 9",
    "  L1, lr 3e-3 | 0.759 | 0.649 | 0.787 | 0.639 | 4",
    "  L1, early stop on val MAE | 0.752 | 0.653 | 0.788 | 0.642 | 8",
    "  L1, ensemble of 3 | 0.754 | 0.656 | 0.782 | 0.651 | 22",
    "  **L1, stop on val MAE, ensemble of 3 (kept)** | 0.752 | 0.659 | 0.783 | 0.651 | 19",
    "  L1, stop on val MAE, ensemble of 3, dim 32 | 0.751 | 0.650 | 0.785 | 0.651 | 19",
)


# ---- baselines ---------------------------------------------------------------------------
def _knn_predict(
    ep: Episodes, base: np.ndarray, z_sup: np.ndarray, sim: np.ndarray, k: int
) -> np.ndarray:
    """base + weighted residuals of the k support items most similar to each query item
    (positive similarities only)."""
    s = sim[ep.query_items[:, :, None], ep.support_items.clip(0)[:, None, :]]  # (U, Q, S)
    s = np.where(ep.support_mask[:, None, :] & (s > 0), s, 0.0)
    if s.shape[2] > k:
        cut = -np.partition(-s, k - 1, axis=2)[:, :, k - 1 : k]
        s = np.where(s >= cut, s, 0.0)
    num = (s * z_sup[:, None, :]).sum(2)
    den = s.sum(2)
    return base + np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def run_baselines(
    data: RatingData, train: np.ndarray, val: Episodes, test: Episodes
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Test predictions of each baseline and the hyperparameters picked on `val`."""
    lo, hi = data.rating_range
    mu = float(data.rating[rows_of(data, train)].mean())

    def mae(ep: Episodes, pred: np.ndarray) -> float:
        return float(np.abs(np.clip(pred, lo, hi) - ep.query_ratings).mean())

    preds: dict[str, np.ndarray] = {"global mean": np.full(test.query_ratings.shape, mu)}
    picked: dict[str, dict] = {"global mean": {"mu": mu}}

    # Item mean, shrunk towards mu.
    def item_mean(lam: float) -> np.ndarray:
        return mu + fit_biases(data, train, lam, np.inf).item_bias

    lam_i = min(ITEM_SHRINK, key=lambda lam: mae(val, item_mean(lam)[val.query_items]))
    preds["item mean (shrunk)"] = item_mean(lam_i)[test.query_items]
    picked["item mean (shrunk)"] = {"item_shrink": lam_i}

    # Support mean + item bias: the user bias from the support alone.
    def bias_model(lam_i: float, lam_u: float, ep: Episodes) -> np.ndarray:
        b_i = fit_biases(data, train, lam_i, lam_u).item_bias
        return mu + support_user_bias(ep, mu, b_i, lam_u)[:, None] + b_i[ep.query_items]

    grid = [(a, b) for a in ITEM_SHRINK for b in USER_SHRINK]
    lam_i, lam_u = min(grid, key=lambda g: mae(val, bias_model(*g, val)))
    preds["support mean + item bias"] = bias_model(lam_i, lam_u, test)
    picked["support mean + item bias"] = {"item_shrink": lam_i, "user_shrink": lam_u}

    # Item-kNN on the residuals of that bias model.
    fit = fit_biases(data, train, lam_i, lam_u)
    b_i = fit.item_bias
    z = residual_matrix(data, train, fit)

    def knn(ep: Episodes, sim: np.ndarray, k: int) -> np.ndarray:
        b_u = support_user_bias(ep, mu, b_i, lam_u)
        base = mu + b_u[:, None] + b_i[ep.query_items]
        z_sup = ep.support_ratings - mu - b_u[:, None] - b_i[ep.support_items.clip(0)]
        return _knn_predict(ep, base, np.where(ep.support_mask, z_sup, 0.0), sim, k)

    best = (np.inf, 0.0, 0)
    for shrink in KNN_SHRINK:
        sim = item_similarity(z, shrink)
        for k in KNN_K:
            best = min(best, (mae(val, knn(val, sim, k)), shrink, k))
    _, shrink, k = best
    preds["item-kNN on bias residuals"] = knn(test, item_similarity(z, shrink), k)
    picked["item-kNN on bias residuals"] = {"sim_shrink": shrink, "k": k}
    return {name: np.clip(p, lo, hi) for name, p in preds.items()}, picked


# ---- one seed ----------------------------------------------------------------------------
def run_seed(data: RatingData, seed: int, cfg: RatingConfig) -> dict:
    """Split, baselines and the rating model at one seed: metrics per predictor + info."""
    train, val_users, test_users = split_users(data.n_users, seed)
    rng = np.random.default_rng([seed, 1])  # the fixed val/test draws
    val, test = draw_episodes(data, val_users, rng), draw_episodes(data, test_users, rng)
    t0 = time.perf_counter()
    preds, picked = run_baselines(data, train, val, test)
    t_base = time.perf_counter() - t0
    model, info = train_rating_model(data, train, val, cfg, seed=seed)
    preds["rating model (ours)"] = predict(model, test, data)
    val_mae = float(np.abs(predict(model, val, data) - val.query_ratings).mean())
    metrics = {name: query_metrics(p, test.query_ratings) for name, p in preds.items()}
    return {
        "seed": seed,
        "users": {"train": len(train), "val": len(val_users), "test": len(test_users)},
        "metrics": metrics,
        "baseline_params": picked,
        "baseline_seconds": t_base,
        "model": {
            "epochs": info.epochs,
            "best_epoch": info.best_epoch,
            "best_val": info.best_val_mse,
            "prior_shrink": {"item": info.bias_shrink[0], "user": info.bias_shrink[1]},
            "val_mae": val_mae,
            "train_seconds": info.seconds,
        },
    }


def _fmt(values: list[float]) -> str:
    arr = np.asarray(values)
    std = arr.std(ddof=1) if len(arr) > 1 else 0.0
    return f"{arr.mean():.3f} ± {std:.3f}"


def render(runs: list[dict], cfg: RatingConfig, total_s: float) -> str:
    """The Markdown report of a run."""
    names = list(runs[0]["metrics"])
    lines = [
        "# MeLU-style user cold start on ML-100K (rating setting)",
        "",
        f"`python -m benchmarks.quality.melu --seeds {len(runs)}`; seeds "
        f"{[r['seed'] for r in runs]}; {runs[0]['users']} users per seed "
        "(those with 13..100 ratings, split 8:1:1); query = 10 random rated items, "
        "support = the rest. Test users' query sets; mean ± sample std over seeds.",
        "",
        "| predictor | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name in names:
        cells = [_fmt([r["metrics"][name][c] for r in runs]) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| random order (exact) | - | - | 0.500 | 0.500 | - | - | - |")
    for name, vals in PUBLISHED.items():
        cells = [f"{vals[c]:.3f}" if c in vals else "" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Columns: `ndcg@5`, `p@5` = RecBole-MetaRec's rating setting (relevant = the 5 "
        "query items with the highest true rating, ties at the 5th place as an exact "
        "expectation); `_click` = relevant iff rating >= 4; `ndcg@5_graded` = gain "
        "2^r - 1. Published rows: RecBole-MetaRec `asset/result/MovieLens-100K.md`.",
        "",
        "## Timings (this machine, 2 shared cores)",
        "",
        "| seed | model epochs (best) | model train s | baselines s | val MAE (model) |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        m = r["model"]
        lines.append(
            f"| {r['seed']} | {m['epochs']} ({m['best_epoch']}) | {m['train_seconds']:.1f} | "
            f"{r['baseline_seconds']:.1f} | {m['val_mae']:.3f} |"
        )
    lines += [
        "",
        f"Total wall time {total_s:.0f} s. Model config: `{json.dumps(config_dict(cfg))}`. "
        f"Baseline picks (val MAE): `{json.dumps([r['baseline_params'] for r in runs])}`.",
        "",
        "## Model variants tried (3-seed means; choices made on val MAE only)",
        "",
        "| variant | val MAE | val nDCG@5 | test MAE | test nDCG@5 | train s/seed |",
        "|---|---|---|---|---|---|",
        *[f"| {v} |" for v in VARIANTS],
        "",
        "## Where our protocol differs from RecBole-MetaRec's",
        "",
        *[f"- {d}" for d in DIFFERENCES],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=SHARED / "ml-100k")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    ratings, users, items = read_ml100k(args.data)
    data = build_rating_data(ratings, users, items)
    cfg = RatingConfig()
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(data, seed, cfg))
        m = runs[-1]["metrics"]
        print(f"seed {seed}: " + ", ".join(
            f"{n}: MAE {v['mae']:.3f} nDCG@5 {v['ndcg@5']:.3f}" for n, v in m.items()
        ), file=sys.stderr, flush=True)  # fmt: skip
    total = time.perf_counter() - t0
    report = render(runs, cfg, total)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "melu_last_run.md").write_text(report)
    doc = {
        "runs": runs,
        "config": config_dict(cfg),
        "published": PUBLISHED,
        "differences": DIFFERENCES,
        "total_seconds": total,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    (args.out / "melu_last_run.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
