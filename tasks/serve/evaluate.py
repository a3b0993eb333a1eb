"""The evaluate stage: full-catalogue metrics of every model on the night's holdout.

Reads silver up to D (through `load_history`) and tonight's checkpoint
`models/run_date=D/`; writes `gold/metrics/run_date=D/` (one row per model and user
segment, the model serving each segment marked).

The holdout (tasks.learn.holdout) is a future the lake has seen: every model is fitted on
what was known at the cut (D minus a few weeks) and scored on what users did after it,
per segment of users (zero-shot arrivals, support sizes 1-2 ... 51+, returning after a
gap). Ranking is over the full catalogue (no sampled negatives), binary relevance, items
in the given history are neither recommended nor counted as targets; `all` pools every
case. `evaluate_models` also serves the yardstick's in-process splits (tasks.learn.split).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from schemas.tables import METRICS, MODELS
from tasks.config import Settings
from tasks.lake.storage import Lake
from tasks.learn.history import load_history
from tasks.learn.holdout import holdout_for_night
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.learn.metrics import (
    coverage,
    item_self_information,
    ndcg_at_k,
    novelty,
    recall_at_k,
)
from tasks.learn.split import Split
from tasks.models.base import Recommender
from tasks.models.metalearner import MetaLearner
from tasks.serve.candidates import Candidate, fit_candidates, night_candidates
from tasks.serve.gate import POOLED, ChampionDecision, SegmentGate, choose_by_segment
from tasks.serve.topk import ranked_lists, top_k

# The segments of the yardstick (benchmarks/quality) and of the nightly evaluate stage:
# new users given their first n events (n = 0: side features alone), warm users, new items.
EVAL_SHOTS = (0, 1, 3, 5, 10)


@dataclass(frozen=True)
class _Ranked:
    """One model's lists for one segment: top items, validity, per-user metrics."""

    items: np.ndarray
    valid: np.ndarray
    recall: np.ndarray
    ndcg: np.ndarray


def evaluate_models(
    models: dict[str, Recommender],
    split: Split,
    side: SideFeatures | None = None,
    k_recall: int = 20,
    k_ndcg: int = 10,
) -> pl.DataFrame:
    """Full-catalogue metrics of fitted models, one row per (model, segment).

    Args:
        models: name -> model already fitted on `split.train` (same catalogue).
        split: from `temporal_split`.
        side: side features passed to `user_factors` (feature-based models need them).
        k_recall, k_ndcg: cut-offs; also name the columns (`recall@20`, `ndcg@10`).

    Returns:
        Columns model, segment (each split segment and `all` = the pooled holdout), users,
        recall@{k_recall}, ndcg@{k_ndcg}, coverage (share of the catalogue in any
        top-{k_recall} list), novelty (mean self-information of the top-{k_recall} items).
    """
    side = side or SideFeatures()
    k = max(k_recall, k_ndcg)
    info = item_self_information(split.train)
    n_items = split.train.n_items
    rows = []
    for name, model in models.items():
        if not np.array_equal(model.item_ids, split.train.item_ids):
            raise ValueError(f"model {name!r} was not fitted on this split's catalogue")
        item_f = model.item_factors()
        ranked = {}
        for seg_name, seg in split.segments.items():
            user_f = model.user_factors(seg.history, side)
            exclude = seg.history.csr(binary=True)
            items, scores = ranked_lists(model, user_f, item_f, k, exclude=exclude)
            ranked[seg_name] = _score_lists(items, scores, seg.targets, k_recall, k_ndcg)
        pooled = [_fields(ranked[s]) for s in split.pooled if s in ranked]
        if pooled:
            ranked[POOLED] = _Ranked(
                *(np.concatenate(parts) for parts in zip(*pooled, strict=True))
            )
        for seg_name, r in ranked.items():
            top = r.items[:, :k_recall]
            valid = r.valid[:, :k_recall]
            rows.append(
                {
                    "model": name,
                    "segment": seg_name,
                    "users": len(r.recall),
                    f"recall@{k_recall}": _mean(r.recall),
                    f"ndcg@{k_ndcg}": _mean(r.ndcg),
                    "coverage": coverage(top, valid, n_items),
                    "novelty": novelty(top, valid, info),
                }
            )
    return pl.DataFrame(rows, schema_overrides={"users": pl.Int64})


def evaluate_new_items(
    models: dict[str, Recommender],
    split: Split,
    side: SideFeatures | None = None,
    k: int = 20,
) -> pl.DataFrame:
    """How models treat the items that arrived after the cutoff (`temporal_split(...,
    new_items=True)`).

    Returns:
        One row per model: `users` of the new_items segment, `recall@{k}_new` (their
        post-cutoff new-item events ranked among the new items only: can the model tell
        which new item a user will take), `recall@{k}_full` (the same targets ranked over
        the full catalogue), `new_item_coverage` (share of new items in any top-{k} list of
        any segment) and `lists_with_new` (share of top-{k} lists holding a new item).
    """
    side = side or SideFeatures()
    fresh = split.new_items
    is_fresh = np.zeros(split.train.n_items, bool)
    is_fresh[fresh] = True
    seg = split.segments.get("new_items")
    rows = []
    for name, model in models.items():
        item_f = model.item_factors()
        row: dict = {"model": name, "users": 0 if seg is None else seg.history.n_users}
        if seg is not None and len(fresh) and seg.history.n_users:
            user_f = model.user_factors(seg.history, side)
            # Ranked among the new items only: the history cannot contain them.
            local, _ = top_k(user_f, item_f[fresh], k)
            t = seg.targets.csr(binary=True)[:, fresh]
            hits = np.take_along_axis(t.toarray() > 0, local.astype(np.int64), axis=1)
            row[f"recall@{k}_new"] = _mean(recall_at_k(hits, np.diff(t.indptr), k))
            exclude = seg.history.csr(binary=True)
            items, scores = ranked_lists(model, user_f, item_f, k, exclude=exclude)
            full = _score_lists(items, scores, seg.targets, k, k)
            row[f"recall@{k}_full"] = _mean(full.recall)
        lists = []
        for s in split.segments.values():
            if s.name != "new_items" and s.history.n_users:
                uf = model.user_factors(s.history, side)
                exclude = s.history.csr(binary=True)
                lists.append(ranked_lists(model, uf, item_f, k, exclude=exclude)[0])
        top = np.concatenate(lists) if lists else np.zeros((0, k), np.int32)
        shown = np.unique(top[is_fresh[top]])
        row["new_item_coverage"] = len(shown) / max(len(fresh), 1)
        row["lists_with_new"] = float(is_fresh[top].any(axis=1).mean()) if len(top) else 0.0
        rows.append(row)
    return pl.DataFrame(rows)


def _score_lists(
    items: np.ndarray, scores: np.ndarray, targets: Interactions, k_recall: int, k_ndcg: int
) -> _Ranked:
    """Mark hits by (user, item) keys (vectorised over all lists) and compute metrics."""
    n_items = targets.n_items
    t = targets.csr(binary=True)
    target_keys = np.repeat(np.arange(t.shape[0], dtype=np.int64), np.diff(t.indptr)) * n_items
    target_keys += t.indices
    list_keys = np.arange(len(items), dtype=np.int64)[:, None] * n_items + items
    valid = np.isfinite(scores)  # -inf tail: fewer than k unexcluded items
    hits = np.isin(list_keys, target_keys) & valid
    n_rel = np.diff(t.indptr)
    return _Ranked(items, valid, recall_at_k(hits, n_rel, k_recall), ndcg_at_k(hits, n_rel, k_ndcg))


def _fields(r: _Ranked) -> tuple[np.ndarray, ...]:
    return tuple(getattr(r, f.name) for f in dataclasses.fields(r))


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def write_metrics(
    lake: Lake,
    run_date: dt.date,
    metrics: pl.DataFrame,
    gate: SegmentGate | ChampionDecision | None = None,
) -> str:
    """Write `gold/metrics/run_date=D/` (columns run_date, model, segment, users,
    recall_at_20, ndcg_at_10, coverage, novelty, is_champion: the model that serves that
    segment tonight); returns the file path."""
    # `@` is not a portable column-name character in SQL engines: recall@20 -> recall_at_20.
    frame = metrics.rename({c: c.replace("@", "_at_") for c in metrics.columns if "@" in c})
    if "is_champion" not in frame.columns:
        if isinstance(gate, ChampionDecision):
            gate = SegmentGate(gate, {}, {})
        served = {
            seg: (gate.pooled.model if seg == POOLED else gate.model_for(seg)) if gate else None
            for seg in frame["segment"].unique()
        }
        chosen = pl.col("segment").replace_strict(served, default=None, return_dtype=pl.String)
        frame = frame.with_columns((pl.col("model") == chosen).alias("is_champion"))
    frame = frame.with_columns(
        pl.lit(run_date).alias("run_date"), pl.col("is_champion").fill_null(False)
    ).select("run_date", pl.exclude("run_date"))
    return lake.write_partition(METRICS, frame, run_date=run_date)


# ---- the nightly evaluate stage --------------------------------------------------------


@dataclass(frozen=True)
class EvaluateStageResult:
    """What the nightly evaluate stage found (small: passed between Prefect tasks)."""

    run_date: dt.date
    path: str
    cutoff: dt.datetime  # the holdout's cut: models were fitted on what was known then
    horizon_days: int
    decision: ChampionDecision  # the pooled holdout's gate
    gate: SegmentGate  # who serves which segment
    candidates: dict[str, Candidate]  # the baselines evaluated, by name (for refitting)
    holdout_users: dict[str, int]  # holdout cases per segment
    table: list[dict]  # one row per (model, segment), as written to gold/metrics


def evaluate_stage(lake: Lake, run_date: dt.date, settings: Settings) -> EvaluateStageResult:
    """Fit every candidate on what was known at the night's holdout cut, evaluate them and
    tonight's meta-learner (models/run_date=D, trained on the same part) on what the
    holdout users did after it, per segment, gate per segment, and write
    `gold/metrics/run_date=D/`."""
    history = load_history(lake, run_date)
    holdout = holdout_for_night(history.interactions, run_date, settings.holdout_min_users,
                                settings.returning_gap_days, settings.seed)  # fmt: skip
    split = holdout.as_split()
    candidates = night_candidates(split.train.n_items, history.side)
    models = fit_candidates(candidates, split.train, history.side, holdout.cut)
    # Without tonight's checkpoint the candidate has no metrics: the gate says so and the
    # best baseline publishes.
    if lake.fs.exists(f"{lake.path(MODELS, run_date=run_date)}/model.pt"):
        models["metalearner"] = MetaLearner.load(lake.url(MODELS, run_date=run_date))
    if not split.segments:
        raise ValueError(
            f"no user did anything in the {holdout.horizon_days} days before {run_date}: "
            "the night has no holdout to evaluate or gate on"
        )
    metrics = evaluate_models(models, split, history.side)
    gate = choose_by_segment(metrics, settings.gate_min_users)
    path = write_metrics(lake, run_date, metrics, gate)
    return EvaluateStageResult(
        run_date=run_date,
        path=path,
        cutoff=holdout.cut,
        horizon_days=holdout.horizon_days,
        decision=gate.pooled,
        gate=gate,
        candidates=candidates,
        holdout_users=holdout.users_per_segment(),
        table=lake.read_partition(METRICS, run_date=run_date).to_dicts(),
    )
