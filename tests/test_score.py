"""Scoring: top_k against brute force (both code paths), recommend() on ML-100K histories
with a random-factor stand-in model, and user segments."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Self

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender
from tasks.serve.score import assign_segments, recommend
from tasks.serve.topk import TILE_ITEMS, ranked_lists, top_k

K = 10


class RandomFactors(Recommender):
    """Stand-in model: random item factors; a user is the mean of their items' factors."""

    name = "random_factors"

    def __init__(self, item_ids: np.ndarray, dim: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._item_ids = item_ids
        self._items = rng.standard_normal((len(item_ids), dim), dtype=np.float32)

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        csr = history.csr(binary=True)
        counts = np.maximum(np.asarray(csr.sum(axis=1)).ravel(), 1.0)
        return np.asarray(csr @ self._items / counts[:, None], dtype=np.float32)

    def item_factors(self) -> np.ndarray:
        return self._items

    @property
    def item_ids(self) -> np.ndarray:
        return self._item_ids

    def save(self, folder: Path) -> None:  # not needed by scoring
        raise NotImplementedError

    @classmethod
    def load(cls, folder: Path) -> Self:
        raise NotImplementedError


@pytest.fixture(scope="module")
def ml100k(shared_data: Path) -> Interactions:
    """ML-100K histories plus two users with no interaction (zero-shot)."""
    frame = pl.read_csv(
        shared_data / "ml-100k" / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user_id", "item_id", "value", "ts"],
        schema_overrides={"user_id": pl.String, "item_id": pl.String},
    )
    users = np.sort(np.concatenate([frame["user_id"].unique().to_numpy(), ["zs1", "zs2"]]))
    return Interactions.from_frame(frame, user_ids=users.astype(str))


def _brute_force(users, items, exclude, k):
    scores = users @ items.T
    if exclude is not None:
        scores[exclude.nonzero()] = -np.inf
    return np.sort(scores, axis=1)[:, ::-1][:, :k]


@pytest.mark.parametrize(
    ("n_items", "k", "dim"),
    [(1682, K, 16), (3 * TILE_ITEMS + 77, 20, 32), (4 * TILE_ITEMS, 50, 8)],
    ids=["dense", "tiled", "tiled-big-k"],
)
def test_top_k_matches_brute_force(n_items: int, k: int, dim: int) -> None:
    rng = np.random.default_rng(n_items)
    users = rng.standard_normal((700, dim), dtype=np.float32)
    items = rng.standard_normal((n_items, dim), dtype=np.float32)
    nnz = 700 * 40
    rows, cols = rng.integers(0, 700, nnz), rng.integers(0, n_items, nnz)
    exclude = sp.csr_matrix((np.ones(nnz, np.float32), (rows, cols)), shape=(700, n_items))
    # The best items of user 0 are seen: they must be skipped, not just ranked lower.
    best0 = np.argsort(-(users[0] @ items.T))[:k]
    exclude = (exclude + sp.csr_matrix((np.ones(k), ([0] * k, best0)), shape=exclude.shape)).tocsr()
    threads = torch.get_num_threads()

    idx, scores = top_k(users, items, k, exclude=exclude, block_users=96, device="cpu")

    assert torch.get_num_threads() == threads  # the tiled path restores the thread count
    assert idx.shape == scores.shape == (700, k)
    assert idx.dtype == np.int32 and scores.dtype == np.float32
    np.testing.assert_allclose(scores, _brute_force(users, items, exclude, k), rtol=1e-5, atol=1e-4)
    # Items agree with their scores, are never excluded, never repeated within a list.
    np.testing.assert_allclose(
        np.einsum("ud,ukd->uk", users, items[idx]), scores, rtol=1e-5, atol=1e-4
    )
    assert exclude[np.repeat(np.arange(700), k), idx.ravel()].sum() == 0
    assert (np.sort(idx, axis=1)[:, 1:] != np.sort(idx, axis=1)[:, :-1]).all()
    assert not set(best0) & set(idx[0])


@pytest.mark.parametrize("n_items", [500, 3 * TILE_ITEMS], ids=["dense", "tiled"])
def test_top_k_user_who_has_seen_almost_everything(n_items: int) -> None:
    rng = np.random.default_rng(1)
    users = rng.standard_normal((3, 8), dtype=np.float32)
    items = rng.standard_normal((n_items, 8), dtype=np.float32)
    seen = np.ones((3, n_items), np.float32)
    seen[0] = 0.0  # user 0 has seen nothing, user 1 all but 3 items, user 2 everything
    seen[1, [5, 17, n_items - 1]] = 0.0
    idx, scores = top_k(users, items, 10, exclude=sp.csr_matrix(seen), device="cpu")
    assert np.isfinite(scores[0]).all()
    assert np.isfinite(scores[1]).sum() == 3
    assert set(idx[1][np.isfinite(scores[1])]) == {5, 17, n_items - 1}
    assert np.isneginf(scores[2]).all()
    assert ((idx >= 0) & (idx < n_items)).all()  # even the -inf tail indexes the catalogue


def test_recommend_contract_on_ml100k(ml100k: Interactions) -> None:
    model = RandomFactors(ml100k.item_ids)
    recs = recommend(model, ml100k, SideFeatures(), K, segments=None, block_users=128)

    assert recs.columns == ["user_id", "rank", "item_id", "score"]
    assert recs.schema["rank"] == pl.Int16 and recs.schema["score"] == pl.Float32
    assert recs.schema["user_id"] == pl.String and recs.schema["item_id"] == pl.String
    # Every user (zero-shot ones too) has K rows ranked 1..K, best first.
    per_user = recs.group_by("user_id").agg(
        pl.len().alias("n"), pl.col("rank").sort().alias("ranks"), pl.col("score").alias("s")
    )
    assert set(per_user["user_id"]) == set(ml100k.user_ids)
    assert (per_user["n"] == K).all()
    assert per_user["ranks"].to_list() == [list(range(1, K + 1))] * per_user.height
    ordered = recs.sort("user_id", "rank")
    assert ordered.group_by("user_id").agg(pl.col("score").diff().max() <= 0)["score"].all()
    # No seen item: the anti-join against the histories keeps everything.
    seen = pl.DataFrame(
        {"user_id": ml100k.user_ids[ml100k.user], "item_id": ml100k.item_ids[ml100k.item]}
    ).unique()
    assert recs.join(seen, on=["user_id", "item_id"], how="semi").height == 0
    # Scores are the model's dot products.
    u = {uid: i for i, uid in enumerate(ml100k.user_ids)}
    i = {iid: j for j, iid in enumerate(ml100k.item_ids)}
    sample = recs.sample(200, seed=0)
    uf = model.user_factors(ml100k, SideFeatures())[[u[x] for x in sample["user_id"]]]
    itf = model.item_factors()[[i[x] for x in sample["item_id"]]]
    np.testing.assert_allclose((uf * itf).sum(1), sample["score"].to_numpy(), rtol=1e-4, atol=1e-5)


def test_recommend_with_segments(ml100k: Interactions) -> None:
    last = dt.datetime.fromtimestamp(int(ml100k.ts.max()), dt.UTC).date()
    segments = assign_segments(ml100k, last, new_user_days=30)
    recs = recommend(RandomFactors(ml100k.item_ids), ml100k, SideFeatures(), 5, segments, None)
    assert recs.columns[-1] == "user_segment"
    got = dict(recs.select("user_id", "user_segment").unique().iter_rows())
    assert got == dict(zip(ml100k.user_ids, segments, strict=True))


class Exploring(RandomFactors):
    """RandomFactors whose items 0..9 are "new": offered the exploration slot."""

    def exploration_items(self) -> np.ndarray:
        return np.arange(10)


def test_ranked_lists_give_new_items_the_last_slot(ml100k: Interactions) -> None:
    model = Exploring(ml100k.item_ids)
    user_f, item_f = model.user_factors(ml100k, SideFeatures()), model.item_factors()
    seen = ml100k.csr(binary=True)
    plain, _ = top_k(user_f, item_f, K, exclude=seen)
    items, scores = ranked_lists(model, user_f, item_f, K, exclude=seen)
    new = np.arange(10)
    had = np.isin(plain, new).any(1)
    # Lists that held a new item are untouched; every other list gets the best unseen new
    # item at rank K, and ranks 1..K-1 never change (NDCG@10 of a top-20 list neither).
    np.testing.assert_array_equal(items[had], plain[had])
    np.testing.assert_array_equal(items[:, :-1], plain[:, :-1])
    assert np.isin(items, new).any(1).all()
    s = user_f @ item_f[new].T
    s[seen[:, new].toarray() > 0] = -np.inf
    np.testing.assert_array_equal(items[~had, -1], new[s.argmax(1)][~had])
    assert (np.diff(scores, axis=1) <= 0).all()  # still sorted
    rec = recommend(model, ml100k, SideFeatures(), K)
    per_user = rec.group_by("user_id").agg(pl.col("item_id").is_in(ml100k.item_ids[new]).any())
    assert per_user["item_id"].all()  # every published list shows a new item


def test_recommend_rejects_a_foreign_catalogue(ml100k: Interactions) -> None:
    model = RandomFactors(ml100k.item_ids[::-1].copy())
    with pytest.raises(ValueError, match="catalogue"):
        recommend(model, ml100k, SideFeatures(), K, None, None)


def test_assign_segments_on_ml100k(ml100k: Interactions) -> None:
    last = dt.datetime.fromtimestamp(int(ml100k.ts.max()), dt.UTC).date()
    segments = assign_segments(ml100k, last.isoformat(), new_user_days=30)

    assert segments.shape == (ml100k.n_users,)
    by_user = dict(zip(ml100k.user_ids, segments, strict=True))
    assert by_user["zs1"] == by_user["zs2"] == "cold_zero_shot"
    # Cross-check with Polars: first interaction within 30 days before the end of run_date.
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    first = (
        pl.DataFrame({"u": ml100k.user, "ts": ml100k.ts})
        .group_by("u")
        .agg(pl.col("ts").min())
        .with_columns(new=pl.col("ts") >= int(end.timestamp()) - 30 * 86_400)
    )
    expected = np.full(ml100k.n_users, "cold_zero_shot", dtype=object)
    expected[first["u"].to_numpy()] = np.where(first["new"].to_numpy(), "new", "warm")
    assert (segments == expected).all()
    assert {"new", "warm"} <= set(segments)  # ML-100K has both on its last day
    # A later run date turns today's new users warm.
    later = assign_segments(ml100k, last + dt.timedelta(days=400))
    assert set(later) == {"warm", "cold_zero_shot"}
