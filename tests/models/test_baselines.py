"""The baselines (tasks.models.baselines): the recommender contract on the checkerboard,
plus the closed forms (EASE against per-column ridge regressions, ALS fold-in by hand)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from tasks.learn.interactions import SideFeatures
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
)
from tests.models.contract import (
    A_ITEMS,
    B_ITEMS,
    CATALOGUE,
    NOW,
    RecommenderContract,
    checkerboard,
    new_users,
    top,
)


class TestMostPopular(RecommenderContract):
    expected = ("a", "a")  # A items: most users of all time

    def make_model(self):
        return MostPopular()


class TestRecentPopular(RecommenderContract):
    expected = ("b", "b")  # B items: the only ones of the last week

    def make_model(self):
        return RecentPopular(RecentPopularConfig(window_days=7))


class TestRecentPopularDecayed(TestRecentPopular):
    def make_model(self):
        return RecentPopular(RecentPopularConfig(window_days=365, half_life_days=3))


class TestEASE(RecommenderContract):
    def make_model(self):
        return EASE(EASEConfig(l2=10.0))


class TestItemKNN(RecommenderContract):
    def make_model(self):
        return ItemKNN(ItemKNNConfig(k_neighbors=5))


class TestALS(RecommenderContract):
    def make_model(self):
        return ALS(ALSConfig(factors=4, regularization=0.1, alpha=10.0, iterations=10))


class TestFeatureGroupPopular(RecommenderContract):
    # Tastes come from the users' features only: their histories play no part.
    def make_model(self):
        return FeatureGroupPopular(FeatureGroupPopularConfig(columns=("taste",), prior_users=1))


class TestItemFeaturesWithoutItemTable(RecommenderContract):
    expected = ("a", "a")  # no item features: every profile is empty, popularity decides

    def make_model(self):
        return ItemFeatures()


def test_item_features_score_new_items_from_their_tags():
    train, side = checkerboard()
    kinds = {i: i[0] for i in CATALOGUE}
    kinds.update(new0="a", new1="b")  # the two items without interactions
    items = pl.DataFrame(
        {"item_id": list(CATALOGUE), "kind": [kinds[i] for i in CATALOGUE],
         "tags": [f"{kinds[i]}|shared" for i in CATALOGUE], "title": list(CATALOGUE)}
    )  # fmt: skip
    side = SideFeatures(users=side.users, items=items)
    model = ItemFeatures().fit(train, side, NOW)
    hist = new_users()
    scores = model.user_factors(hist, side) @ model.item_factors().T
    col = {i: k for k, i in enumerate(CATALOGUE)}
    # new_a (A history) prefers the A-tagged new item, new_b the B-tagged one.
    assert scores[0, col["new0"]] > scores[0, col["new1"]]
    assert scores[1, col["new1"]] > scores[1, col["new0"]]
    assert scores[0, col["new0"]] > scores[0, col["b1"]]
    got = top(model, hist, side, 3)
    assert all(str(i)[0] == "a" or i == "new0" for i in got[0])
    assert model.item_factors().shape[0] == len(CATALOGUE)


def test_feature_groups_are_chosen_and_bucketed():
    train, side = checkerboard()
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
    train, side = checkerboard()
    cfg = ALSConfig(factors=4, regularization=0.5, alpha=5.0, iterations=5)
    model = ALS(cfg).fit(train, side, NOW)
    history = new_users()
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
    train, side = checkerboard()
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
