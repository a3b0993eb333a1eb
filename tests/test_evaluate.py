"""Evaluation: the temporal split on ML-100K, metrics against hand-computed values, the
champion gate both ways, and the metrics table in the lake."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Self

import numpy as np
import polars as pl
import pytest

from tasks.lake.storage import Lake
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.learn.metrics import coverage, ndcg_at_k, novelty, recall_at_k
from tasks.learn.split import temporal_split
from tasks.models.base import Recommender
from tasks.serve.evaluate import (
    ChampionDecision,
    TuningGrid,
    choose_champion,
    evaluate_models,
    evaluate_new_items,
    fit_baselines,
    tune_baselines,
    write_metrics,
)


def _ml100k(root: Path) -> tuple[Interactions, SideFeatures]:
    """ML-100K read in place from ../shared/data (never copied into the repo)."""
    frame = pl.read_csv(
        root / "ml-100k" / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user_id", "item_id", "value", "ts"],
        schema_overrides={"user_id": pl.String, "item_id": pl.String},
    ).with_columns(pl.from_epoch("ts", "s").dt.replace_time_zone("UTC"), pl.col("value") * 1.0)
    users = pl.read_csv(
        root / "ml-100k" / "u.user",
        separator="|",
        has_header=False,
        new_columns=["user_id", "age", "gender", "occupation", "zip"],
        schema_overrides={"user_id": pl.String, "zip": pl.String},
    )
    return Interactions.from_frame(frame), SideFeatures(users=users)


@pytest.fixture(scope="module")
def ml100k(shared_data: Path):
    return _ml100k(shared_data)


@pytest.fixture(scope="module")
def split(ml100k):
    return temporal_split(ml100k[0])


@pytest.fixture(scope="module")
def metrics(split, ml100k) -> pl.DataFrame:
    side = ml100k[1]
    models = fit_baselines(split.train, side, split.cutoff)
    models["metalearner"] = RandomFactors().fit(split.train, side, split.cutoff)
    return evaluate_models(models, split, side)


class RandomFactors(Recommender):
    """A deliberately broken candidate: random user and item factors."""

    name = "random"

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        self._items = train.item_ids
        self._item_f = np.random.default_rng(0).standard_normal((train.n_items, 8), np.float32)
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        return np.random.default_rng(1).standard_normal((history.n_users, 8), np.float32)

    def item_factors(self) -> np.ndarray:
        return self._item_f

    @property
    def item_ids(self) -> np.ndarray:
        return self._items

    def save(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, folder: Path) -> Self:
        raise NotImplementedError


# ---- the split -------------------------------------------------------------------------
def test_new_users_are_the_latest_fifth_and_never_trained_on(ml100k, split):
    data = ml100k[0]
    first = (
        pl.DataFrame({"user": data.user_ids[data.user].astype(str), "ts": data.ts})
        .group_by("user")
        .agg(pl.col("ts").min())
        .sort("ts")
    )
    assert len(split.new_user_ids) == round(0.2 * 943) == 189
    # The first arrival among new users is no earlier than the last one among warm users.
    new = first.filter(pl.col("user").is_in(list(split.new_user_ids)))
    old = first.filter(~pl.col("user").is_in(list(split.new_user_ids)))
    assert new["ts"].min() >= old["ts"].max()
    assert not set(split.train.user_ids) & set(split.new_user_ids)
    for name in ("new_n1", "new_n5", "new_n10"):
        assert set(split.segments[name].history.user_ids) <= set(split.new_user_ids)


def test_train_is_before_the_cutoff_and_warm_targets_after(ml100k, split):
    cutoff = int(split.cutoff.timestamp())
    assert split.train.ts.max() < cutoff
    warm = split.segments["warm"]
    assert warm.targets.ts.min() >= cutoff and warm.history.ts.max() < cutoff
    assert set(warm.history.user_ids) <= set(split.train.user_ids)
    # About 10% of the warm interactions are held out.
    warm_rows = ~np.isin(ml100k[0].user_ids[ml100k[0].user], split.new_user_ids)
    assert 0.09 < 1 - len(split.train) / warm_rows.sum() < 0.11
    # The catalogue is the whole vocabulary; some items only appear after the cutoff.
    assert list(split.train.item_ids) == list(ml100k[0].item_ids)
    assert (np.bincount(split.train.item, minlength=split.train.n_items) == 0).any()


def test_new_user_segments_see_exactly_n_first_interactions(split):
    for n in (1, 5, 10):
        seg = split.segments[f"new_n{n}"]
        assert (np.bincount(seg.history.user, minlength=seg.history.n_users) == n).all()
        last_support = np.maximum.reduceat(seg.history.ts, seg.history.user_slices()[:-1])
        first_target = np.minimum.reduceat(seg.targets.ts, seg.targets.user_slices()[:-1])
        assert (first_target >= last_support).all()
        overlap = seg.history.csr(binary=True).multiply(seg.targets.csr(binary=True))
        assert overlap.nnz == 0


def test_split_is_deterministic(ml100k, split):
    again = temporal_split(ml100k[0])
    assert again.cutoff == split.cutoff
    np.testing.assert_array_equal(again.new_user_ids, split.new_user_ids)
    np.testing.assert_array_equal(again.train.item, split.train.item)


# ---- metrics ---------------------------------------------------------------------------
def test_zero_shot_and_new_item_segments(ml100k, shared_data):
    from tasks.sources.movielens import _read_ml100k

    data = ml100k[0]
    side = SideFeatures(ml100k[1].users, _read_ml100k(shared_data / "ml-100k")[2])
    full = temporal_split(data, n_values=(0, 1, 3, 5, 10), new_items=True)
    zero = full.segments["new_n0"]
    assert len(zero.history) == 0 and zero.history.n_users > 100
    assert set(zero.history.user_ids) <= set(full.new_user_ids)
    assert set(full.segments) == {f"new_n{n}" for n in (0, 1, 3, 5, 10)} | {"warm", "new_items"}
    assert full.pooled == ("warm", "new_n5")
    # New items have no training row; the new_items targets are only those items.
    trained = np.bincount(full.train.item, minlength=full.train.n_items) > 0
    assert len(full.new_items) > 10 and not trained[full.new_items].any()
    seg = full.segments["new_items"]
    assert len(seg.targets) > 0 and np.isin(seg.targets.item, full.new_items).all()
    # A content model shows new items; popularity cannot (they have no training rows).
    models = fit_baselines(full.train, side, full.cutoff, names=("most_popular", "item_features"))
    table = {r["model"]: r for r in evaluate_new_items(models, full, side).iter_rows(named=True)}
    assert table["most_popular"]["new_item_coverage"] == 0.0
    assert table["most_popular"]["lists_with_new"] == 0.0
    assert table["item_features"]["new_item_coverage"] > 0.0
    assert 0.0 <= table["item_features"]["recall@20_new"] <= 1.0
    assert table["item_features"]["users"] == seg.history.n_users


def test_recall_and_ndcg_by_hand():
    hits = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
    n_rel = np.array([2, 3, 6])
    np.testing.assert_allclose(recall_at_k(hits, n_rel, 4), [1.0, 0.0, 0.25])
    np.testing.assert_allclose(recall_at_k(hits, n_rel, 2), [0.5, 0.0, 0.5])
    d = [1 / math.log2(r + 2) for r in range(4)]
    want = [(d[0] + d[2]) / (d[0] + d[1]), 0.0, d[1] / sum(d)]
    np.testing.assert_allclose(ndcg_at_k(hits, n_rel, 4), want)
    np.testing.assert_allclose(ndcg_at_k(hits[:1], np.array([1]), 1), [1.0])


def test_coverage_and_novelty_by_hand():
    items = np.array([[0, 1], [1, 2]])
    valid = np.array([[True, True], [True, False]])
    assert coverage(items, valid, 10) == pytest.approx(0.2)
    info = np.array([1.0, 2.0, 8.0])
    assert novelty(items, valid, info) == pytest.approx((1 + 2 + 2) / 3)


def test_metrics_table_on_ml100k(split, metrics):
    segments = {"new_n1", "new_n5", "new_n10", "warm", "all"}
    assert set(metrics["segment"]) == segments
    assert set(metrics["model"]) == {
        "most_popular",
        "recent_popular",
        "ease",
        "item_knn",
        "als",
        "feature_group_popular",
        "metalearner",
    }
    users = dict(metrics.filter(pl.col("model") == "ease").select("segment", "users").iter_rows())
    assert users["all"] == users["warm"] + users["new_n5"]
    assert users["warm"] == split.segments["warm"].history.n_users > 100
    for col in ("recall@20", "ndcg@10", "coverage"):
        assert metrics[col].is_between(0, 1).all()
    pop = metrics.filter(pl.col("model") == "most_popular", pl.col("segment") == "all").row(
        0, named=True
    )
    rnd = metrics.filter(pl.col("model") == "metalearner", pl.col("segment") == "all").row(
        0, named=True
    )
    assert pop["ndcg@10"] > 5 * rnd["ndcg@10"] and pop["ndcg@10"] > 0.2
    # Popularity recommends a few head items; random lists cover most of the catalogue.
    assert pop["coverage"] < 0.1 < 0.3 < rnd["coverage"]
    assert pop["novelty"] < rnd["novelty"]


# ---- the gate --------------------------------------------------------------------------
def test_broken_candidate_is_refused_with_the_numbers(metrics):
    decision = choose_champion(metrics)
    assert isinstance(decision, ChampionDecision) and not decision.published_from_candidate
    at = {
        m: v
        for m, v in metrics.filter(pl.col("segment") == "all")
        .select("model", "ndcg@10")
        .iter_rows()
    }
    best = max((v, m) for m, v in at.items() if m != "metalearner")
    assert decision.model == best[1] and decision.value == best[0]
    assert f"metalearner NDCG@10 {at['metalearner']:.3f}" in decision.reason
    assert f"most_popular {at['most_popular']:.3f}" in decision.reason
    assert f"publishing {best[1]} (best baseline, {best[0]:.3f})" in decision.reason


def test_better_candidate_is_published():
    frame = pl.DataFrame(
        {
            "model": ["most_popular", "ease", "metalearner"] * 2,
            "segment": ["all"] * 3 + ["warm"] * 3,
            "ndcg@10": [0.082, 0.091, 0.095, 0.5, 0.5, 0.0],
        }
    )
    decision = choose_champion(frame)
    assert decision.model == "metalearner" and decision.published_from_candidate
    assert "0.095 beats most_popular 0.082" in decision.reason
    refused = choose_champion(frame, segment="warm")  # ties never pass; best by name on ties
    assert refused.model == "ease" and not refused.published_from_candidate
    missing = choose_champion(frame.filter(pl.col("model") != "metalearner"))
    assert missing.model == "ease" and "no metrics" in missing.reason


def test_candidate_must_also_beat_every_other_model():
    frame = pl.DataFrame(
        {"model": ["most_popular", "ease", "metalearner"], "segment": ["all"] * 3,
         "ndcg@10": [0.082, 0.099, 0.095]}
    )  # fmt: skip
    decision = choose_champion(frame)
    assert decision.model == "ease" and not decision.published_from_candidate
    assert "beats most_popular 0.082 but not ease" in decision.reason


# ---- fitting, tuning, writing ---------------------------------------------------------
def test_fit_baselines_without_features_skips_the_feature_model(split):
    few_users = split.train.subset_users(np.arange(50))  # only the choice is tested here
    models = fit_baselines(few_users, None, split.cutoff, names=None)
    assert "feature_group_popular" not in models and "als" in models


def test_tune_baselines_picks_the_best_grid_point(ml100k, split):
    validation = temporal_split(split.train)
    grid = TuningGrid(
        ease_l2=(5.0, 1000.0),
        als_factors=(8,),
        als_regularization=(0.1,),
        als_alpha=(1.0,),
        recent_window_days=(1.0, 30.0),
        knn_neighbors=(20,),
    )
    best, table = tune_baselines(validation, grid, ml100k[1])
    assert table.height == 2 + 1 + 2 + 1
    ease = table.filter(pl.col("model") == "ease").sort("ndcg@10", descending=True)
    assert f'"l2": {best.ease.l2}' in ease["config"][0]
    assert not set(validation.train.user_ids) & set(split.new_user_ids)


def test_write_metrics_partition(tmp_path: Path, metrics):
    lake = Lake(str(tmp_path / "lake"))
    decision = choose_champion(metrics)
    path = write_metrics(lake, "2024-03-01", metrics, decision)
    assert path.endswith("gold/metrics/run_date=2024-03-01/part-0.parquet")
    back = lake.read_partition("gold/metrics", run_date="2024-03-01")
    assert back.columns == [
        "run_date",
        "model",
        "segment",
        "users",
        "recall_at_20",
        "ndcg_at_10",
        "coverage",
        "novelty",
        "is_champion",
    ]
    assert back.height == metrics.height
    assert set(back.filter("is_champion")["model"]) == {decision.model}
    assert back["run_date"].unique().to_list() == [dt.date(2024, 3, 1)]
