"""The meta-learner as a Recommender (tasks.models.metalearner.learner): the contract on
the checkerboard, and adaptation on two groups of users who like two disjoint item sets."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.metalearner import MetaConfig, MetaLearner
from tasks.models.metalearner.item_item import N_MIX, mix_bucket
from tasks.models.metalearner.item_item_tuning import MIX_GRID
from tests.models.contract import RecommenderContract, dense
from tests.models.worlds import N_ITEMS_PER_GROUP, catalogue, history, two_groups


class TestMetaLearnerContract(RecommenderContract):
    """30 steps suffice on the checkerboard. Its validation users (the latest to arrive)
    are all group B, so the recent-popularity part, tuned on them, would rank B items for
    everyone (as it should for them): the contract runs without it."""

    maps_other_catalogues = True

    def make_model(self):
        config = MetaConfig(dim=16, hidden=32, batch_users=32, eval_every=10, patience=100,
                            item_item_kinds=("cosine", "sequence"))  # fmt: skip
        return MetaLearner(config, budget_seconds=120.0, max_steps=30, seed=0)

    def load(self, folder: Path):
        return MetaLearner.load(folder)


@pytest.fixture(scope="module")
def trained() -> tuple[MetaLearner, pl.DataFrame, SideFeatures]:
    frame, side = two_groups()
    train = Interactions.from_frame(frame, item_ids=catalogue(side))
    config = MetaConfig(dim=16, hidden=32, batch_users=64, eval_every=50, patience=100,
                        item_item_max_items=20_000)  # fmt: skip
    model = MetaLearner(config, budget_seconds=120.0, max_steps=150, seed=0)  # steps decide
    model.fit(train, side, dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    return model, frame, side


def scores_of(model: MetaLearner, hist: Interactions, side: SideFeatures) -> np.ndarray:
    return dense(model.user_factors(hist, side)) @ dense(model.item_factors()).T


def test_factor_shapes(trained):
    model, _, side = trained
    assert list(model.item_ids) == list(catalogue(side))
    v = dense(model.item_factors())
    n_items = 2 * N_ITEMS_PER_GROUP + 1
    # [u, 1, prior weights, per item-item part: its rows (n_items, or 1 for "recent")]
    ii = sum(1 if p.kind.startswith("recent") else n_items for p in model.item_item)
    width = 16 + 1 + len(model.config.prior_windows_days) + ii
    assert v.shape == (n_items, width) and v.dtype == np.float32
    hist = history([], ["nobody"], model.item_ids)
    u = dense(model.user_factors(hist, SideFeatures()))
    assert u.shape == (1, width) and np.isfinite(u).all() and u[0, 16] == 1.0


def test_new_user_adapts_from_three_support_items(trained):
    model, _, _ = trained
    support = [("new", "a3"), ("new", "a7"), ("new", "a11")]
    hist = history(support, ["new"], model.item_ids)
    s = scores_of(model, hist, SideFeatures())[0]  # no side features: support alone
    s[np.isin(model.item_ids, ["a3", "a7", "a11"])] = -np.inf
    top = model.item_ids[np.argsort(-s)[:10]]
    assert all(str(i).startswith("a") for i in top[:5]), top
    assert sum(str(i).startswith("a") for i in top) >= 9, top
    # The same user seen as a b-lover gets b items: adaptation, not a global ranking.
    hist_b = history([("new", "b3"), ("new", "b7"), ("new", "b11")], ["new"], model.item_ids)
    top_b = model.item_ids[np.argsort(-scores_of(model, hist_b, SideFeatures())[0])[:10]]
    assert sum(str(i).startswith("b") for i in top_b) >= 8, top_b


def test_zero_shot_user_from_side_features(trained):
    model, _, side = trained
    hist = history([], ["zs_b"], model.item_ids)
    s = scores_of(model, hist, side)[0]
    assert np.isfinite(s).all()
    top = model.item_ids[np.argsort(-s)[:10]]
    assert sum(str(i).startswith("b") for i in top) >= 8, top


def test_new_item_scored_from_features(trained):
    model, _, _ = trained
    users = ["ua", "ub"]
    hist = history([("ua", "a1"), ("ua", "a2"), ("ub", "b1"), ("ub", "b2")], users,
                   model.item_ids)  # fmt: skip
    s = scores_of(model, hist, SideFeatures())
    j = list(model.item_ids).index("a_new")
    assert np.isfinite(s[:, j]).all()
    assert s[0, j] != s[1, j]
    # It looks like an `a` item, so the a-lover ranks it higher than the b-lover does.
    rank = (s > s[:, [j]]).sum(1)
    assert rank[0] < rank[1]


def test_unknown_items_in_a_history_are_ignored(trained):
    model, _, _ = trained
    rows = [("x", "a3"), ("x", "a7"), ("x", "zz_unknown")]
    other = np.array(["zz_unknown", "a7", "a3"], dtype=object)
    u1 = dense(model.user_factors(history(rows, ["x"], other), SideFeatures()))
    u2 = dense(model.user_factors(history(rows[:2], ["x"], model.item_ids), SideFeatures()))
    np.testing.assert_allclose(u1, u2, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip(trained, tmp_path):
    model, frame, side = trained
    model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json", "encoders.json", "item_ids.json", "item_item.pt", "model.pt"
    ]  # fmt: skip
    back = MetaLearner.load(tmp_path / "ckpt")
    hist = Interactions.from_frame(frame, item_ids=model.item_ids)
    np.testing.assert_array_equal(dense(back.item_factors()), dense(model.item_factors()))
    np.testing.assert_array_equal(dense(back.user_factors(hist, side)),
                                  dense(model.user_factors(hist, side)))  # fmt: skip
    assert list(back.item_ids) == list(model.item_ids)
    assert back.config == model.config
    assert [p.kind for p in back.item_item] == [p.kind for p in model.item_item]
    for a, b in zip(back.item_item, model.item_item, strict=True):
        np.testing.assert_array_equal(a.mix, b.mix)
    with pytest.raises(Exception, match="not a metalearner"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text('{"model": "ease"}')
        MetaLearner.load(tmp_path / "other")


def test_time_prior_moves_with_now(trained):
    model, frame, _ = trained
    prior = slice(17, 20)  # after [v (16), b]
    before = dense(model.item_factors())[:, prior].copy()
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    # A history where only b3 was taken in the last week: its 7-day prior is the top one.
    late = history([("x", "b3")] * 3, ["x"], model.item_ids)
    late = dataclasses.replace(late, ts=np.full(3, int(now.timestamp()) - 3600))
    model.set_time_prior(late, now)
    week = dense(model.item_factors())[:, 17]
    assert model.item_ids[np.argmax(week)] == "b3" and model.prior_now == int(now.timestamp())
    model.set_time_prior(Interactions.from_frame(frame, item_ids=model.item_ids), now)
    np.testing.assert_allclose(dense(model.item_factors())[:, prior], before, rtol=1e-5, atol=1e-6)


def test_item_item_parts_are_mixed_per_support_size(trained):
    model, _, _ = trained
    assert model.item_item, "the two-group data should make some item-item part pay"
    summary = model.train_info["item_item"]
    for part in model.item_item:
        assert part.mix.shape == (N_MIX,) and part.mix.any()
        assert np.isin(part.mix, MIX_GRID).all()
        assert summary["mix"][part.kind] == part.mix.tolist()
    # Coordinate ascent starts at the model alone: never below it on the tuning users.
    assert all(row["ndcg_best"] >= row["ndcg_base"] for row in summary["tuning"])
    # Scores = the model's own factors + sum over parts of mix(bucket) * (r_u M): a user
    # whose 3 events are recent (not stale) is in the 3-5 bucket.
    hist = history([("u", "a3"), ("u", "a7"), ("u", "a11")], ["u"], model.item_ids)
    hist = dataclasses.replace(hist, ts=np.full(3, model.prior_now, np.int64))
    full = scores_of(model, hist, SideFeatures())[0]
    saved = model.item_item
    try:
        model.item_item = []
        plain = scores_of(model, hist, SideFeatures())[0]
    finally:
        model.item_item = saved
    b3 = int(mix_bucket(np.array([3]))[0])
    x = np.isin(model.item_ids, ["a3", "a7", "a11"]).astype(np.float32)
    expected = plain.copy()
    for part in saved:
        if part.kind == "cosine":
            expected += part.mix[b3] * (part.weights.T @ x)
        elif part.kind.startswith("recent"):
            expected += part.mix[b3] * part.weights.toarray()[0]
    if all(
        p.kind == "cosine" or p.kind.startswith("recent") for p in saved
    ):  # sequence rows: test_item_item.py
        np.testing.assert_allclose(full, expected, rtol=1e-4, atol=1e-4)
    # Whatever the parts, a group-a user's list starts with group-a items.
    top = model.item_ids[np.argsort(-np.where(x > 0, -np.inf, full))[:5]]
    assert all(str(i).startswith("a") for i in top), top


def test_item_item_off_for_large_catalogues():
    frame, side = two_groups(n_per_group=10)
    train = Interactions.from_frame(frame, item_ids=catalogue(side))
    config = MetaConfig(dim=8, hidden=16, batch_users=16, item_item_max_items=10)
    model = MetaLearner(config, budget_seconds=60.0, max_steps=2, seed=0)
    model.fit(train, side, dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    assert model.item_item == [] and "skipped" in model.train_info["item_item"]
    assert dense(model.item_factors()).shape[1] == 8 + 1 + len(config.prior_windows_days)
