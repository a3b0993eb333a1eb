"""The score stage: top-K for every known user, staged for publishing.

Reads silver up to D, the side tables and tonight's checkpoint (`models/run_date=D/`);
writes `staging/recommendations/run_date=D/model=M/`, which the publish stage checks
before anything becomes visible. The kernel is `tasks.serve.topk`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from schemas.tables import MODELS, STAGING_RECOMMENDATIONS
from tasks.config import Settings
from tasks.lake.dates import end_of_day
from tasks.lake.storage import Lake
from tasks.learn.history import History, load_history
from tasks.learn.holdout import segments_at
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender
from tasks.models.metalearner import MetaLearner
from tasks.serve.candidates import Candidate, fit_candidates
from tasks.serve.gate import SegmentGate
from tasks.serve.topk import ranked_lists


def recommend(
    model: Recommender,
    histories: Interactions,
    side: SideFeatures,
    k: int,
    segments: np.ndarray | None = None,
    block_users: int | None = None,
) -> pl.DataFrame:
    """Top-k recommendations of every user of `histories`, seen items excluded.

    Args:
        model: a fitted recommender; `histories.item_ids` must be its catalogue.
        histories: every user to score (rows may be empty: zero-shot users).
        side: side features handed to `model.user_factors`.
        k: list length.
        segments: optional (n_users,) segment per user (see `assign_segments`).
        block_users: users per scoring block (memory bound), see `top_k`.

    Returns:
        user_id (String), rank (Int16, 1..k), item_id (String), score (Float32), plus
        user_segment (String) when segments are given; k rows per user, fewer only for a
        user who has seen all but fewer than k items of the catalogue.
    """
    catalogue = np.asarray(model.item_ids)
    if len(catalogue) != histories.n_items or not np.array_equal(
        catalogue.astype(str), np.asarray(histories.item_ids).astype(str)
    ):
        raise ValueError("histories.item_ids must be the model's catalogue (model.item_ids)")
    if segments is not None and len(segments) != histories.n_users:
        raise ValueError(f"{len(segments)} segments for {histories.n_users} users")
    user_f = model.user_factors(histories, side)
    items, scores = ranked_lists(
        model,
        user_f,
        model.item_factors(),
        k,
        exclude=histories.csr(binary=True),
        block_users=block_users,
    )
    n_users, width = items.shape
    keep = np.isfinite(scores).ravel()  # -inf: nothing left to recommend to that user
    user_idx = np.repeat(np.arange(n_users, dtype=np.int64), width)[keep]
    ranks = np.tile(np.arange(1, width + 1, dtype=np.int16), n_users)[keep]
    # Gather strings on the Polars side: one Series per vocabulary, indexed in Rust.
    columns = {
        "user_id": _strings(histories.user_ids).gather(user_idx),
        "rank": pl.Series(ranks, dtype=pl.Int16),
        "item_id": _strings(catalogue).gather(items.ravel()[keep]),
        "score": pl.Series(scores.ravel()[keep], dtype=pl.Float32),
    }
    if segments is not None:
        columns["user_segment"] = _strings(segments).gather(user_idx)
    return pl.DataFrame(columns)


def _strings(values: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(values).astype(str), dtype=pl.String)


def assign_segments(
    histories: Interactions, run_date: dt.date, new_user_days: int = 30
) -> np.ndarray:
    """Segment of every user of `histories` on `run_date` (an array of str).

    `cold_zero_shot`: no interaction at all (scored from features alone); `new`: first
    interaction within `new_user_days` days before the end of run_date (UTC); `warm`:
    everyone else.
    """
    cutoff = int(end_of_day(run_date).timestamp()) - new_user_days * 86_400
    first = np.full(histories.n_users, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, histories.user, histories.ts.astype(np.int64))
    counts = np.bincount(histories.user, minlength=histories.n_users)
    return np.where(counts == 0, "cold_zero_shot", np.where(first >= cutoff, "new", "warm"))


# ---- the nightly score stage -----------------------------------------------------------


@dataclass(frozen=True)
class ScoreStageResult:
    """What the nightly score stage staged for publishing (small: passed between tasks)."""

    run_date: dt.date
    staged_path: str
    model: str  # the models serving tonight, joined by "+" (each row names its own)
    model_version: str
    users: int
    rows: int
    segments: dict[str, int]  # users per contract segment (new, warm, cold_zero_shot)
    users_by_model: dict[str, int] = field(default_factory=dict)  # users each model serves
    users_by_gate_segment: dict[str, int] = field(default_factory=dict)


# Tonight's composed lists wait under this staging partition (model=...).
STAGED = "gated"


def score_stage(
    lake: Lake,
    run_date: dt.date,
    settings: Settings,
    gate: SegmentGate,
    candidates: dict[str, Candidate],
) -> ScoreStageResult:
    """Top-K for every user known up to run_date (history or raw/users), each user's list
    from the model the gate chose for their segment at the end of D.

    The meta-learner is tonight's checkpoint (models/run_date=D), which adapts to each
    user's full history with no retraining (its time prior moved to the end of D); a
    baseline is refitted on the full history and saved beside it. The table is staged
    (`staging/recommendations/run_date=D/model=gated/`) for the publish stage, which
    checks the contract before anything becomes visible (write-audit-publish).
    """
    history = load_history(lake, run_date)
    data, now = history.interactions, end_of_day(run_date)
    gate_segments = segments_at(data, now, settings.returning_gap_days)
    served = np.array([gate.model_for(s) for s in gate_segments], dtype=object)
    segments = assign_segments(data, run_date)
    parts = []
    for name in sorted(set(served)):
        users = np.flatnonzero(served == name)
        model = _tonight(lake, run_date, name, candidates, history)
        recs = recommend(model, data.subset_users(users), history.side, settings.top_k,
                         segments[users], block_users=settings.score_block_users)  # fmt: skip
        version = f"{name}@{run_date.isoformat()}"
        parts.append(recs.with_columns(model=pl.lit(name), model_version=pl.lit(version)))
    recs = pl.concat(parts)
    path = lake.write_partition(STAGING_RECOMMENDATIONS, recs, run_date=run_date, model=STAGED)
    models = sorted(set(served))
    return ScoreStageResult(
        run_date=run_date,
        staged_path=path,
        model="+".join(models),
        model_version="+".join(f"{m}@{run_date.isoformat()}" for m in models),
        users=int(recs["user_id"].n_unique()),
        rows=recs.height,
        segments=_counts(segments),
        users_by_model=_counts(served),
        users_by_gate_segment=_counts(gate_segments),
    )


def _tonight(
    lake: Lake, day: dt.date, name: str, candidates: dict[str, Candidate], history: History
) -> Recommender:
    """Model `name` as it serves tonight: the checkpoint, or a baseline refitted on the
    whole history (saved beside the checkpoint on local lakes)."""
    if name == "metalearner":
        model = MetaLearner.load(lake.url(MODELS, run_date=day))
        model.set_time_prior(history.interactions, history.now)  # the present is D
        return model
    spec = candidates.get(name) or Candidate(name, None)
    model = fit_candidates({name: spec}, history.interactions, history.side, history.now)[name]
    if lake.is_local:  # baselines save to local folders only
        model.save(Path(f"{lake.path(MODELS, run_date=day)}/{name}"))
    return model


def _counts(values: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}
