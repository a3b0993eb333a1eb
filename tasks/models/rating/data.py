"""The MeLU protocol's data: the user filter, the rating arrays, the user split and the
support/query episodes (one user = one task).

  users     those with 13..100 ratings (both ends included); a seeded permutation of them
            is cut 8:1:1 into train / validation / test users (disjoint)
  task      per user, 10 rated items drawn at random are the query set, the rest the
            support set; the model sees the support (item, rating) pairs and predicts the
            query ratings
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from tasks.learn.features import FeatureEncoder

MIN_RATINGS, MAX_RATINGS = 13, 100  # the MeLU user filter
N_QUERY = 10  # query items per task


@dataclass(frozen=True)
class RatingData:
    """The kept users' ratings as CSR-like arrays plus encoded side features.

    `item[indptr[u]:indptr[u + 1]]` are user u's rated items (indices into `item_ids`),
    `rating[...]` the ratings. Side-feature rows align with `user_ids` / `item_ids`.
    """

    user_ids: np.ndarray  # (n_users,) str
    item_ids: np.ndarray  # (n_items,) str
    indptr: np.ndarray  # (n_users + 1,) int64
    item: np.ndarray  # (nnz,) int64
    rating: np.ndarray  # (nnz,) float32
    user_tokens: np.ndarray  # (n_users, slots) int64
    user_numeric: np.ndarray  # (n_users, m) float32
    item_tokens: np.ndarray  # (n_items, slots) int64
    item_numeric: np.ndarray  # (n_items, m) float32
    n_user_tokens: int
    n_item_tokens: int
    rating_range: tuple[float, float]

    @property
    def n_users(self) -> int:
        """Kept users."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return len(self.item_ids)

    @property
    def counts(self) -> np.ndarray:
        """Ratings per user."""
        return np.diff(self.indptr)


def build_rating_data(
    ratings: pl.DataFrame,
    users: pl.DataFrame | None,
    items: pl.DataFrame | None,
    min_ratings: int = MIN_RATINGS,
    max_ratings: int = MAX_RATINGS,
) -> RatingData:
    """Keep users with min_ratings..max_ratings ratings (inclusive) and encode side features.

    Args:
        ratings: user_id, item_id (strings), value (the rating); other columns ignored.
        users: side table keyed by user_id (or None); items: keyed by item_id (or None).
        min_ratings, max_ratings: the user filter (MeLU: 13..100).

    Returns:
        RatingData whose catalogue is every item in `items` plus every rated item.
    """
    counts = ratings.group_by("user_id").len()
    keep = counts.filter(pl.col("len").is_between(min_ratings, max_ratings))["user_id"]
    kept = ratings.filter(pl.col("user_id").is_in(keep.implode()))
    item_ids = kept["item_id"].unique()
    if items is not None:
        item_ids = pl.concat([item_ids, items["item_id"].cast(pl.String)]).unique()
    item_ids = np.sort(item_ids.to_numpy().astype(str))
    user_ids = np.sort(keep.to_numpy().astype(str))
    frame = kept.select(
        pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), "value"
    ).sort("user_id", "item_id")
    user = np.searchsorted(user_ids, frame["user_id"].to_numpy().astype(str))
    item = np.searchsorted(item_ids, frame["item_id"].to_numpy().astype(str)).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=len(user_ids)))])
    u_enc = FeatureEncoder.fit(users, "user_id")
    i_enc = FeatureEncoder.fit(items, "item_id")
    u_feat, i_feat = u_enc.encode(users, user_ids), i_enc.encode(items, item_ids)
    value = frame["value"].to_numpy().astype(np.float32)
    return RatingData(
        user_ids=user_ids,
        item_ids=item_ids,
        indptr=indptr.astype(np.int64),
        item=item,
        rating=value,
        user_tokens=u_feat.tokens,
        user_numeric=u_feat.numeric,
        item_tokens=i_feat.tokens,
        item_numeric=i_feat.numeric,
        n_user_tokens=u_enc.n_tokens,
        n_item_tokens=i_enc.n_tokens,
        rating_range=(float(value.min()), float(value.max())),
    )


def split_users(
    n_users: int, seed: int, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint (train, val, test) user indices: a seeded permutation cut by `ratios`.

    The sizes follow RecBole's `_calcu_split_ids`: val and test get floor(ratio * n), the
    training part the rest.
    """
    order = np.random.default_rng(seed).permutation(n_users)
    total = sum(ratios)
    n_val, n_test = (int(r / total * n_users) for r in ratios[1:])
    n_train = n_users - n_val - n_test
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


@dataclass(frozen=True)
class Episodes:
    """One support/query draw for a block of users (padding: item -1, rating 0)."""

    users: np.ndarray  # (U,) indices into RatingData.user_ids
    support_items: np.ndarray  # (U, S) int64
    support_ratings: np.ndarray  # (U, S) float32
    query_items: np.ndarray  # (U, Q) int64
    query_ratings: np.ndarray  # (U, Q) float32

    @property
    def support_mask(self) -> np.ndarray:
        """True at real support pairs (False at padding)."""
        return self.support_items >= 0


def draw_episodes(
    data: RatingData, users: np.ndarray, rng: np.random.Generator, n_query: int = N_QUERY
) -> Episodes:
    """Per user: `n_query` rated items drawn uniformly as the query, the rest the support.

    Every user must have more than `n_query` ratings. Vectorised: each rating gets a random
    key, ratings are ordered by (user, key) and the first n_query of each user are its query.
    """
    users = np.asarray(users, np.int64)
    starts, counts = data.indptr[users], data.counts[users]
    if (counts <= n_query).any():
        raise ValueError(f"every user needs more than {n_query} ratings")
    owner = np.repeat(np.arange(len(users)), counts)
    pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    src = np.repeat(starts, counts) + pos  # row of each rating in data.item / data.rating
    order = np.lexsort((rng.random(len(src)), owner))
    src = src[order]  # users stay in blocks; within a block, a random order
    rank = pos  # the block layout is unchanged by the in-block shuffle
    is_q = rank < n_query
    s_max = int((counts - n_query).max())
    sup_items = np.full((len(users), s_max), -1, np.int64)
    sup_ratings = np.zeros((len(users), s_max), np.float32)
    sup_items[owner[~is_q], rank[~is_q] - n_query] = data.item[src[~is_q]]
    sup_ratings[owner[~is_q], rank[~is_q] - n_query] = data.rating[src[~is_q]]
    q_items = data.item[src[is_q]].reshape(len(users), n_query)
    q_ratings = data.rating[src[is_q]].reshape(len(users), n_query)
    return Episodes(users, sup_items, sup_ratings, q_items, q_ratings)


def rows_of(data: RatingData, users: np.ndarray) -> np.ndarray:
    """Rows of data.item / data.rating that belong to `users` (in `users` order)."""
    counts = data.counts[users]
    starts = np.repeat(data.indptr[users] - (np.cumsum(counts) - counts), counts)
    return starts + np.arange(counts.sum())
