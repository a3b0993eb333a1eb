"""Evaluation: the temporal split on ML-100K, metrics against hand-computed values, the
metrics table, and the evaluate stage on a lake (gold/metrics)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from schemas.tables import METRICS, SILVER
from tasks.config import Settings
from tasks.lake.dates import end_of_day
from tasks.lake.storage import Lake
from tasks.learn.holdout import SEGMENTS
from tasks.learn.interactions import SideFeatures
from tasks.learn.metrics import coverage, ndcg_at_k, novelty, recall_at_k
from tasks.learn.split import temporal_split
from tasks.serve import evaluate as evaluate_module
from tasks.serve.candidates import fit_baselines
from tasks.serve.evaluate import (
    EVAL_SHOTS,
    evaluate_new_items,
    evaluate_stage,
    write_metrics,
)
from tasks.serve.gate import POOLED, choose_champion
from tasks.sources.movielens import read_ml100k
from tests.serve.conftest import ML100K_LAST_DAY


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
    data = ml100k[0]
    side = SideFeatures(ml100k[1].users, read_ml100k(shared_data / "ml-100k")[2])
    full = temporal_split(data, n_values=EVAL_SHOTS, new_items=True)
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
    segments = {"new_n1", "new_n5", "new_n10", "warm", POOLED}
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
    assert users[POOLED] == users["warm"] + users["new_n5"]
    assert users["warm"] == split.segments["warm"].history.n_users > 100
    for col in ("recall@20", "ndcg@10", "coverage"):
        assert metrics[col].is_between(0, 1).all()
    at_all = metrics.filter(pl.col("segment") == POOLED)
    pop = at_all.filter(pl.col("model") == "most_popular").row(0, named=True)
    rnd = at_all.filter(pl.col("model") == "metalearner").row(0, named=True)
    assert pop["ndcg@10"] > 5 * rnd["ndcg@10"] and pop["ndcg@10"] > 0.2
    # Popularity recommends a few head items; random lists cover most of the catalogue.
    assert pop["coverage"] < 0.1 and rnd["coverage"] > 0.3
    assert pop["novelty"] < rnd["novelty"]


# ---- gold/metrics and the stage --------------------------------------------------------
METRIC_COLUMNS = [
    "run_date", "model", "segment", "users", "recall_at_20", "ndcg_at_10", "coverage",
    "novelty", "is_champion",
]  # fmt: skip


def test_write_metrics_partition(tmp_path: Path, metrics):
    lake = Lake(str(tmp_path / "lake"))
    decision = choose_champion(metrics)
    path = write_metrics(lake, dt.date(2024, 3, 1), metrics, decision)
    assert path.endswith("gold/metrics/run_date=2024-03-01/part-0.parquet")
    back = lake.read_partition(METRICS, run_date="2024-03-01")
    assert back.columns == METRIC_COLUMNS
    assert back.height == metrics.height
    assert set(back.filter("is_champion")["model"]) == {decision.model}
    assert back["run_date"].unique().to_list() == [dt.date(2024, 3, 1)]
    # The numbers are the evaluation's, renamed only.
    got = back.filter(pl.col("segment") == POOLED).sort("model")["ndcg_at_10"]
    want = metrics.filter(pl.col("segment") == POOLED).sort("model")["ndcg@10"]
    assert got.to_list() == want.to_list()


def test_evaluate_stage_without_a_checkpoint(silver_lake: Lake, monkeypatch):
    """No meta-learner tonight: every baseline is evaluated, the gate says the candidate
    has no metrics, and gold/metrics holds what the result reports."""
    lake, day = silver_lake, ML100K_LAST_DAY

    fitted_on = []  # what every candidate was fitted on: nothing after the holdout's cut
    real_fit = evaluate_module.fit_candidates
    monkeypatch.setattr(evaluate_module, "fit_candidates",
                        lambda c, train, side, now: fitted_on.append((train, now))
                        or real_fit(c, train, side, now))  # fmt: skip

    result = evaluate_stage(lake, day, Settings(storage=lake.root))

    ((train, now),) = fitted_on
    assert now == result.cutoff and train.ts.max() < result.cutoff.timestamp()
    assert len(train) < lake.scan(SILVER).height  # the weeks after the cut are held out

    assert result.run_date == day and result.path == lake.partition_file(METRICS, run_date=day)
    assert not result.decision.published_from_candidate
    assert "metalearner has no metrics" in result.decision.reason
    rows = pl.DataFrame(result.table)
    assert rows.columns == METRIC_COLUMNS
    assert "metalearner" not in set(rows["model"])
    # The night's holdout: its segments, every case pooled, the cut before the run date.
    assert set(rows["segment"]) <= {*SEGMENTS, POOLED} and POOLED in set(rows["segment"])
    assert result.cutoff < end_of_day(day) - dt.timedelta(days=result.horizon_days - 1)
    pooled = rows.filter(pl.col("segment") == POOLED)["users"].unique().to_list()
    assert pooled == [sum(result.holdout_users.values())]
    # Each segment's champion row is the model the gate chose to serve it.
    for seg, model in rows.filter("is_champion").select("segment", "model").iter_rows():
        want = result.decision.model if seg == POOLED else result.gate.model_for(seg)
        assert model == want, seg
    assert rows.filter("is_champion")["segment"].n_unique() == rows["segment"].n_unique()
    best = rows.filter(pl.col("segment") == POOLED).sort("ndcg_at_10", descending=True)
    assert best["model"][0] == result.decision.model
    assert result.decision.value == pytest.approx(best["ndcg_at_10"][0])
