"""The contract every recommender passes, on a world with known answers.

The checkerboard: two disjoint item clusters. 30 group-A users (old activity) and 12
group-B users (the last week) each took 6 items of their own cluster; A items are the most
popular of all time, B items of the last 7 days; two catalogue items (`new0`, `new1`) have
no interactions. New users: `new_a` (3 A items), `new_b` (2 B items), `nobody` (no history).

A test class mixes in `RecommenderContract`, says how to build (and load) its model and
which cluster each new user's list must come from (`expected`).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender, SplitFactors
from tasks.models.baselines import load_baseline
from tasks.serve.topk import top_k

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


def checkerboard() -> tuple[Interactions, SideFeatures]:
    """The training histories and user side table (taste = the cluster, and an age)."""
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


def new_users(items: np.ndarray = CATALOGUE) -> Interactions:
    """Users unseen at fit: A-history, B-history, and one with no history (over `items`)."""
    frame = pl.DataFrame(_rows("new_a", ["a1", "a2", "a3"], 55) + _rows("new_b", ["b1", "b2"], 55))
    users = np.array(["new_a", "new_b", "nobody"], dtype=object)
    return Interactions.from_frame(frame, item_ids=items, user_ids=users)


def top(model: Recommender, history: Interactions, side: SideFeatures, k: int) -> np.ndarray:
    """Each user's top-k item ids, history items excluded."""
    items, _ = top_k(
        model.user_factors(history, side), model.item_factors(), k, history.csr(binary=True)
    )
    return model.item_ids[items]


def dense(factors) -> np.ndarray:
    """History-row models (EASE, ItemKNN) return sparse user factors, the meta-learner split
    ones (a dense block and a sparse tail)."""
    if isinstance(factors, SplitFactors):
        return np.hstack([factors.dense, factors.sparse.toarray()]).astype(np.float32)
    return factors.toarray() if sp.issparse(factors) else np.asarray(factors)


class RecommenderContract:
    """What every recommender must do. `expected`: the cluster each new user's top items
    come from: their own (personalised models), or one for everyone (popularity models)."""

    expected: tuple[str, str] = ("a", "b")  # prefixes for new_a, new_b
    # A history over another item catalogue: mapped by item id (True) or refused (False).
    maps_other_catalogues = False

    def make_model(self) -> Recommender:
        raise NotImplementedError

    def load(self, folder: Path) -> Recommender:
        return load_baseline(folder)

    @pytest.fixture(scope="class")
    def fitted(self) -> tuple[Recommender, SideFeatures]:
        train, side = checkerboard()
        return self.make_model().fit(train, side, NOW), side

    def test_new_users_get_their_clusters_items(self, fitted):
        model, side = fitted
        got = top(model, new_users(), side, 5)
        for row, prefix in enumerate(self.expected):
            assert all(it.startswith(prefix) for it in got[row]), (row, got[row])

    def test_seen_items_are_excluded(self, fitted):
        model, side = fitted
        got = top(model, new_users(), side, 8)
        assert not {"a1", "a2", "a3"} & set(got[0])
        assert not {"b1", "b2"} & set(got[1])

    def test_empty_history_gets_finite_factors_and_popular_items(self, fitted):
        model, side = fitted
        factors = dense(model.user_factors(new_users(), side))
        assert factors.dtype == np.float32 and np.isfinite(factors).all()
        got = top(model, new_users(), side, 3)[2]
        assert all(it[0] in "ab" for it in got), got  # never the items nobody touched

    def test_factor_shapes(self, fitted):
        model, side = fitted
        items = dense(model.item_factors())
        assert items.dtype == np.float32 and items.shape[0] == len(CATALOGUE)
        assert np.isfinite(items).all()
        assert model.user_factors(new_users(), side).shape == (3, items.shape[1])
        assert list(model.item_ids) == list(CATALOGUE)

    def test_save_load_round_trip(self, fitted, tmp_path: Path):
        model, side = fitted
        model.save(tmp_path / "m")
        again = self.load(tmp_path / "m")
        assert type(again) is type(model) and again.config == model.config
        np.testing.assert_array_equal(dense(again.item_factors()), dense(model.item_factors()))
        np.testing.assert_array_equal(
            dense(again.user_factors(new_users(), side)),
            dense(model.user_factors(new_users(), side)),
        )
        assert list(again.item_ids) == list(model.item_ids)
        assert json.loads((tmp_path / "m" / "config.json").read_text())["model"] == model.name

    def test_other_catalogue_is_mapped_or_refused(self, fitted):
        model, side = fitted
        other = new_users(CATALOGUE[::-1].copy())  # the same events, indexed differently
        if self.maps_other_catalogues:
            np.testing.assert_allclose(
                dense(model.user_factors(other, side)),
                dense(model.user_factors(new_users(), side)),
                rtol=1e-5,
                atol=1e-6,
            )
        else:
            with pytest.raises(ValueError, match="catalogue"):
                model.user_factors(other, side)
