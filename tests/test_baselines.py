"""Baselines: one contract mixin run against every model on a checkerboard with known answers,
plus the closed forms (EASE against per-column ridge regressions, ALS fold-in by hand)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender
from tasks.models.baselines import (
    ALS,
    BASELINES,
    EASE,
    ALSConfig,
    EASEConfig,
    FeatureGroupPopular,
    FeatureGroupPopularConfig,
    ItemFeatures,
    ItemKNN,
    ItemKNNConfig,
    MostPopular,
    RecentPopular,
    RecentPopularConfig,
    ease_weights,
    load_baseline,
)
from tasks.serve.topk import top_k

DAY = 86_400
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(days=56)
A_ITEMS = [f"a{i}" for i in range(10)]
B_ITEMS = [f"b{i}" for i in range(10)]
CATALOGUE = np.array(sorted([*A_ITEMS, *B_ITEMS, "new0", "new1"]), dtype=object)


def _rows(user: str, items: list[str], day0: float) -> list[dict]:
    return [
        {"user_id": user, "item_id": it, "ts": T0 + dt.timedelta(days=day0 + k / 10), "value": 4.0}
        for k, it in enumerate(items)
    ]


def _checkerboard() -> tuple[Interactions, SideFeatures]:
    """30 group-A users (old activity) and 12 group-B users (the last week), disjoint tastes.

    A items are the most popular of all time, B items of the last 7 days; two catalogue
    items (`new0`, `new1`) have no interactions.
    """
    rng = np.random.default_rng(0)
    rows, users = [], []
    for group, n_users, items, day0 in (("A", 30, A_ITEMS, 5), ("B", 12, B_ITEMS, 50)):
        for u in range(n_users):
            picked = list(rng.choice(items, size=6, replace=False))
            rows += _rows(f"{group}{u}", picked, day0 + u % 5)
            users.append({"user_id": f"{group}{u}", "taste": group, "age": 20 + u})
    users += [
        {"user_id": "new_a", "taste": "A", "age": 30},
        {"user_id": "new_b", "taste": "B", "age": 30},
        {"user_id": "nobody", "taste": None, "age": None},
    ]
    frame = pl.DataFrame(rows)
    return Interactions.from_frame(frame, item_ids=CATALOGUE), SideFeatures(
        users=pl.DataFrame(users)
    )


def _new_users() -> Interactions:
    """Users unseen at fit: A-history, B-history, and one with no history."""
    frame = pl.DataFrame(_rows("new_a", ["a1", "a2", "a3"], 55) + _rows("new_b", ["b1", "b2"], 55))
    users = np.array(["new_a", "new_b", "nobody"], dtype=object)
    return Interactions.from_frame(frame, item_ids=CATALOGUE, user_ids=users)


def _top(model: Recommender, history: Interactions, side: SideFeatures, k: int) -> np.ndarray:
    items, _ = top_k(
        model.user_factors(history, side), model.item_factors(), k, history.csr(binary=True)
    )
    return model.item_ids[items]


class BaselineContract:
    """What every baseline must do. `expected`: the group each new user's top items come
    from: their own (personalised models), or one group for everyone (popularity models)."""

    expected: tuple[str, str] = ("a", "b")  # prefixes for new_a, new_b

    def make_model(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def fitted(self) -> tuple[Recommender, SideFeatures]:
        train, side = _checkerboard()
        return self.make_model().fit(train, side, NOW), side

    def test_new_users_get_their_groups_items(self, fitted):
        model, side = fitted
        top = _top(model, _new_users(), side, 5)
        for row, prefix in enumerate(self.expected):
            assert all(it.startswith(prefix) for it in top[row]), (row, top[row])

    def test_seen_items_are_excluded(self, fitted):
        model, side = fitted
        history = _new_users()
        top = _top(model, history, side, 8)
        assert not {"a1", "a2", "a3"} & set(top[0])
        assert not {"b1", "b2"} & set(top[1])

    def test_empty_history_gets_popular_items(self, fitted):
        model, side = fitted
        factors = _dense(model.user_factors(_new_users(), side))
        assert factors.dtype == np.float32 and np.isfinite(factors).all()
        top = _top(model, _new_users(), side, 3)[2]
        assert all(it[0] in "ab" for it in top), top  # never the items nobody touched

    def test_factor_shapes(self, fitted):
        model, side = fitted
        items = model.item_factors()
        assert items.dtype == np.float32 and items.shape[0] == len(CATALOGUE)
        assert model.user_factors(_new_users(), side).shape == (3, items.shape[1])
        assert list(model.item_ids) == list(CATALOGUE)

    def test_save_load_round_trip(self, fitted, tmp_path: Path):
        model, side = fitted
        model.save(tmp_path / "m")
        again = load_baseline(tmp_path / "m")
        assert type(again) is type(model) and again.config == model.config
        np.testing.assert_array_equal(again.item_factors(), model.item_factors())
        np.testing.assert_array_equal(
            _dense(again.user_factors(_new_users(), side)),
            _dense(model.user_factors(_new_users(), side)),
        )
        assert list(again.item_ids) == list(model.item_ids)
        assert json.loads((tmp_path / "m" / "config.json").read_text())["model"] == model.name

    def test_other_catalogue_is_refused(self, fitted):
        model, side = fitted
        history = _new_users()
        other = dataclasses.replace(history, item_ids=history.item_ids[::-1].copy())
        with pytest.raises(ValueError, match="catalogue"):
            model.user_factors(other, side)


class TestMostPopular(BaselineContract):
    expected = ("a", "a")  # A items: most users of all time

    def make_model(self):
        return MostPopular()


class TestRecentPopular(BaselineContract):
    expected = ("b", "b")  # B items: the only ones of the last week

    def make_model(self):
        return RecentPopular(RecentPopularConfig(window_days=7))


class TestRecentPopularDecayed(TestRecentPopular):
    def make_model(self):
        return RecentPopular(RecentPopularConfig(window_days=365, half_life_days=3))


class TestEASE(BaselineContract):
    def make_model(self):
        return EASE(EASEConfig(l2=10.0))


class TestItemKNN(BaselineContract):
    def make_model(self):
        return ItemKNN(ItemKNNConfig(k_neighbors=5))


class TestALS(BaselineContract):
    def make_model(self):
        return ALS(ALSConfig(factors=4, regularization=0.1, alpha=10.0, iterations=10))


class TestFeatureGroupPopular(BaselineContract):
    # Tastes come from the users' features only: their histories play no part.
    def make_model(self):
        return FeatureGroupPopular(FeatureGroupPopularConfig(columns=("taste",), prior_users=1))


class TestItemFeaturesWithoutItemTable(BaselineContract):
    expected = ("a", "a")  # no item features: every profile is empty, popularity decides

    def make_model(self):
        return ItemFeatures()


def test_item_features_score_new_items_from_their_tags():
    train, side = _checkerboard()
    kinds = {i: i[0] for i in CATALOGUE}
    kinds.update(new0="a", new1="b")  # the two items without interactions
    items = pl.DataFrame(
        {"item_id": list(CATALOGUE), "kind": [kinds[i] for i in CATALOGUE],
         "tags": [f"{kinds[i]}|shared" for i in CATALOGUE], "title": list(CATALOGUE)}
    )  # fmt: skip
    side = SideFeatures(users=side.users, items=items)
    model = ItemFeatures().fit(train, side, NOW)
    hist = _new_users()
    scores = model.user_factors(hist, side) @ model.item_factors().T
    col = {i: k for k, i in enumerate(CATALOGUE)}
    # new_a (A history) prefers the A-tagged new item, new_b the B-tagged one.
    assert scores[0, col["new0"]] > scores[0, col["new1"]]
    assert scores[1, col["new1"]] > scores[1, col["new0"]]
    assert scores[0, col["new0"]] > scores[0, col["b1"]]
    top = _top(model, hist, side, 3)
    assert all(str(i)[0] == "a" or i == "new0" for i in top[0])
    assert model.item_factors().shape[0] == len(CATALOGUE)


def test_feature_groups_are_chosen_and_bucketed():
    train, side = _checkerboard()
    model = FeatureGroupPopular().fit(train, side, NOW)  # auto columns: taste and age
    assert model._meta["columns"] == ["taste", "age"] and model._meta["numeric"] == ["age"]
    assert all(g.startswith("taste=") and "|age=q" in g for g in model._state["groups"])
    without = FeatureGroupPopular().fit(train, SideFeatures(), NOW)
    np.testing.assert_array_equal(  # no features: plain popularity
        without.item_factors()[:, -1],
        MostPopular().fit(train, side, NOW).item_factors()[:, 0] / train.n_users,
    )


def test_ease_matches_per_column_ridge_regressions():
    """EASE's B column j = ridge regression of item j on the other items (diag(B) = 0)."""
    rng = np.random.default_rng(1)
    x = sp.csr_matrix((rng.random((40, 7)) < 0.4).astype(np.float32))
    l2 = 3.0
    b = ease_weights(x, l2)
    dense = x.toarray().astype(np.float64)
    for j in range(7):
        others = [i for i in range(7) if i != j]
        xo = dense[:, others]
        coef = np.linalg.solve(xo.T @ xo + l2 * np.eye(6), xo.T @ dense[:, j])
        np.testing.assert_allclose(b[others, j], coef, rtol=1e-3, atol=1e-5)
        assert b[j, j] == 0.0


def test_als_fold_in_is_the_closed_form_least_squares():
    """An unseen user's factor = (Y'Y + Y'(C-I)Y + reg I)^-1 Y'C p, C = alpha on their items."""
    train, side = _checkerboard()
    cfg = ALSConfig(factors=4, regularization=0.5, alpha=5.0, iterations=5)
    model = ALS(cfg).fit(train, side, NOW)
    history = _new_users()
    got = model.user_factors(history, side)
    y = model.item_factors().astype(np.float64)
    for row in (0, 1):
        seen = history.csr(binary=True)[row].indices
        c_minus_1 = np.zeros(len(y))
        c_minus_1[seen] = cfg.alpha - 1.0
        a = y.T @ y + y.T @ (c_minus_1[:, None] * y) + cfg.regularization * np.eye(4)
        want = np.linalg.solve(a, cfg.alpha * y[seen].sum(axis=0))
        np.testing.assert_allclose(got[row], want, rtol=1e-3, atol=1e-5)
    assert np.abs(got[:2]).sum() > 0
    # A fresh user is scored without refitting: new_b's B items score above the A items.
    scores = got[1] @ y.T
    assert scores[np.isin(CATALOGUE, B_ITEMS)].mean() > scores[np.isin(CATALOGUE, A_ITEMS)].mean()


def test_dense_models_refuse_oversized_catalogues():
    train, side = _checkerboard()
    for model in (EASE(EASEConfig(max_items=10)), ItemKNN(ItemKNNConfig(max_items=10))):
        with pytest.raises(ValueError, match="max_items"):
            model.fit(train, side, NOW)


def test_registry_names_match_classes():
    assert set(BASELINES) == {
        "most_popular",
        "recent_popular",
        "ease",
        "item_knn",
        "als",
        "feature_group_popular",
        "item_features",
    }
    assert all(cls.name == name for name, cls in BASELINES.items())


def _dense(factors) -> np.ndarray:
    """History-row models (EASE, ItemKNN) return sparse user factors."""
    return factors.toarray() if sp.issparse(factors) else np.asarray(factors)
