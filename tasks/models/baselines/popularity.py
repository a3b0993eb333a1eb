"""Popularity baselines: all-time, recent (windowed, optionally decayed) and per
user-feature group (the zero-shot baseline)."""

from __future__ import annotations

import datetime as dt
from typing import Self

import numpy as np
import polars as pl
import scipy.sparse as sp

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.baselines.common import Baseline, popularity
from tasks.models.baselines.config import (
    FeatureGroupPopularConfig,
    MostPopularConfig,
    RecentPopularConfig,
)

# Free-text display columns never define a group.
_DISPLAY_COLUMNS = frozenset({"title", "name"})


class MostPopular(Baseline):
    """Everyone gets the items most users interacted with in train."""

    name = "most_popular"
    config_cls = MostPopularConfig

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        self._state = {"item_factors": popularity(self._start_fit(train))[:, None]}
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        self._history_matrix(history)
        return np.ones((history.n_users, 1), np.float32)


class RecentPopular(Baseline):
    """Popularity over the last `window_days` before `now` (all-time popularity breaks ties)."""

    name = "recent_popular"
    config_cls = RecentPopularConfig

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        x = self._start_fit(train)
        age_days = (now.timestamp() - train.ts) / 86_400.0
        keep = (age_days >= 0) & (age_days <= self.config.window_days)
        weight = np.ones(keep.sum(), np.float64)
        if self.config.half_life_days is not None:
            weight = 0.5 ** (age_days[keep] / self.config.half_life_days)
        recent = np.bincount(train.item[keep], weights=weight, minlength=train.n_items)
        alltime = popularity(x)
        # All-time popularity orders the items the window did not see, and breaks ties,
        # at well under the smallest recent weight.
        floor = recent[recent > 0].min() if (recent > 0).any() else 1.0
        tie = alltime / (alltime.max() + 1.0) * 1e-3 * floor
        self._state = {"item_factors": (recent + tie).astype(np.float32)[:, None]}
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        self._history_matrix(history)
        return np.ones((history.n_users, 1), np.float32)


class FeatureGroupPopular(Baseline):
    """Popularity within the user's side-feature group; global popularity without features.

    User factor: one-hot over the groups seen at fit plus a last "global" column; item
    factor: per-group share of users who interacted with the item (shrunk to global).
    """

    name = "feature_group_popular"
    config_cls = FeatureGroupPopularConfig

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        x = self._start_fit(train)
        n_users = max(train.n_users, 1)
        global_share = popularity(x) / n_users
        self._meta = {"columns": [], "numeric": []}
        groups = np.array([], dtype=str)
        per_group = np.zeros((0, train.n_items), np.float32)
        users = _usable_users(side.users, self.config)
        if users is not None:
            self._meta = {"columns": list(users.columns[1:]), "numeric": []}
            for c in users.columns[1:]:
                if users.schema[c].is_numeric():
                    qs = np.linspace(0, 1, self.config.n_bins + 1)[1:-1]
                    edges = np.unique(np.nanquantile(users[c].cast(pl.Float64).to_numpy(), qs))
                    self._state[f"edges__{c}"] = edges.astype(np.float64)
                    self._meta["numeric"].append(c)
            keys = self._group_keys(train.user_ids, users)
            groups, member = np.unique(keys[keys != ""], return_inverse=True)
            rows = np.flatnonzero(keys != "")
            g = sp.csr_matrix(
                (np.ones(len(rows), np.float32), (member, rows)), shape=(len(groups), n_users)
            )
            counts = np.asarray((g @ x).todense(), np.float32)  # (n_groups, n_items)
            sizes = np.asarray(g.sum(axis=1), np.float32)
            prior = self.config.prior_users
            per_group = (counts + prior * global_share) / (sizes + prior)
        factors = np.vstack([per_group, global_share[None, :]]).T.astype(np.float32)
        self._state.update(item_factors=np.ascontiguousarray(factors), groups=groups.astype(str))
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        self._history_matrix(history)
        groups = self._state["groups"]
        out = np.zeros((history.n_users, len(groups) + 1), np.float32)
        col = np.full(history.n_users, len(groups))
        cols = ["user_id", *self._meta["columns"]]
        if len(groups) and side.users is not None and set(cols) <= set(side.users.columns):
            keys = self._group_keys(history.user_ids, side.users.select(cols))
            pos = np.searchsorted(groups, keys).clip(0, len(groups) - 1)
            col = np.where(groups[pos] == keys, pos, len(groups))  # unknown group: global
        out[np.arange(history.n_users), col] = 1.0
        return out

    def _group_keys(self, user_ids: np.ndarray, users: pl.DataFrame) -> np.ndarray:
        """'col=value|col=value' per user ('' when a feature is missing or unknown)."""
        frame = pl.DataFrame({"user_id": user_ids.astype(str)}).join(
            users.with_columns(pl.col("user_id").cast(pl.String)).unique("user_id"),
            on="user_id",
            how="left",
            maintain_order="left",
        )
        exprs = []
        for c in self._meta["columns"]:
            if c in self._meta["numeric"]:
                value = frame[c].cast(pl.Float64).fill_nan(None)
                bucket = np.searchsorted(
                    self._state[f"edges__{c}"], value.fill_null(0.0).to_numpy(), side="right"
                )
                frame = frame.with_columns(pl.Series(f"__bucket_{c}", bucket))
                missing = pl.col(c).cast(pl.Float64).fill_nan(None).is_null()
                label = pl.lit(f"{c}=q") + pl.col(f"__bucket_{c}").cast(pl.String)
                exprs.append(pl.when(missing).then(None).otherwise(label))
            else:
                exprs.append(pl.lit(f"{c}=") + pl.col(c).cast(pl.String))
        keys = frame.select(pl.concat_str(exprs, separator="|").fill_null("")).to_series()
        return keys.to_numpy().astype(str)


def _usable_users(
    users: pl.DataFrame | None, cfg: FeatureGroupPopularConfig
) -> pl.DataFrame | None:
    """user_id + the grouping columns (given, or every low-cardinality feature column)."""
    if users is None or "user_id" not in users.columns:
        return None
    candidates = cfg.columns or tuple(
        c for c in users.columns if c != "user_id" and c not in _DISPLAY_COLUMNS
    )
    keep = [
        c
        for c in candidates
        if c in users.columns
        and (users.schema[c].is_numeric() or users[c].n_unique() <= cfg.max_levels)
    ]
    return users.select(["user_id", *keep]) if keep else None
