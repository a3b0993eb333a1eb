"""The data every model consumes: interaction histories and side tables.

`Interactions` are index arrays over a user vocabulary and a model's item catalogue, so a
user a model never saw is scored from their history alone, with no retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp


@dataclass(frozen=True)
class SideFeatures:
    """Optional side tables: `users` keyed by user_id, `items` keyed by item_id.

    Columns other than the key are features: numeric, categorical (string) or
    multi-valued categorical (`|`-separated strings such as `Action|Comedy`).
    """

    users: pl.DataFrame | None = None
    items: pl.DataFrame | None = None


@dataclass(frozen=True)
class Interactions:
    """Interactions as parallel arrays over fixed user and item vocabularies.

    `user[k]`, `item[k]` index `user_ids` / `item_ids`; rows are sorted by (user, ts).
    Users may have no rows (zero-shot users); items may have no rows (new items).
    """

    user_ids: np.ndarray  # (n_users,) str
    item_ids: np.ndarray  # (n_items,) str: the catalogue
    user: np.ndarray  # (nnz,) int32
    item: np.ndarray  # (nnz,) int32
    weight: np.ndarray  # (nnz,) float32: event value (rating, count), 1 when absent
    ts: np.ndarray  # (nnz,) int64 epoch seconds
    _csr: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)

    def csr(self, binary: bool = False) -> sp.csr_matrix:
        """(n_users, n_items) matrix of summed weights (or 1.0 where any interaction)."""
        key = "binary" if binary else "weight"
        if key not in self._csr:
            data = np.ones(len(self), np.float32) if binary else self.weight
            m = sp.csr_matrix(
                (data, (self.user, self.item)), shape=(self.n_users, self.n_items), dtype=np.float32
            )
            m.sum_duplicates()
            if binary:
                m.data[:] = 1.0
            self._csr[key] = m
        return self._csr[key]

    def user_slices(self) -> np.ndarray:
        """indptr of length n_users + 1: user u's rows are [indptr[u], indptr[u+1])."""
        counts = np.bincount(self.user, minlength=self.n_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def subset_users(self, users: np.ndarray) -> Interactions:
        """The histories of some users (by index), re-indexed 0..len(users)-1."""
        users = np.asarray(users, dtype=np.int64)
        remap = np.full(self.n_users, -1, np.int64)
        remap[users] = np.arange(len(users))
        keep = remap[self.user] >= 0
        new_user = remap[self.user[keep]].astype(np.int32)
        order = np.lexsort((self.ts[keep], new_user))
        return Interactions(
            user_ids=self.user_ids[users],
            item_ids=self.item_ids,
            user=new_user[order],
            item=self.item[keep][order],
            weight=self.weight[keep][order],
            ts=self.ts[keep][order],
        )

    def filter(self, mask: np.ndarray) -> Interactions:
        """Keep the rows where mask is true (same vocabularies)."""
        return Interactions(
            self.user_ids,
            self.item_ids,
            self.user[mask],
            self.item[mask],
            self.weight[mask],
            self.ts[mask],
        )

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        item_ids: np.ndarray | None = None,
        user_ids: np.ndarray | None = None,
    ) -> Interactions:
        """Build from a frame with user_id, item_id, ts (datetime or int), value.

        Given vocabularies fix the indexing (rows with unknown ids are dropped: an item
        outside the catalogue cannot be scored); otherwise they are taken from the frame,
        sorted.
        """
        if item_ids is None:
            item_ids = np.sort(frame["item_id"].unique().to_numpy().astype(str))
        if user_ids is None:
            user_ids = np.sort(frame["user_id"].unique().to_numpy().astype(str))
        users = pl.DataFrame({"user_id": user_ids, "u": np.arange(len(user_ids), dtype=np.int32)})
        items = pl.DataFrame({"item_id": item_ids, "i": np.arange(len(item_ids), dtype=np.int32)})
        ts = pl.col("ts")
        ts_expr = ts.dt.epoch("s") if frame.schema["ts"].is_temporal() else ts.cast(pl.Int64)
        value = pl.col("value") if "value" in frame.columns else pl.lit(None, pl.Float64)
        joined = (
            frame.lazy()
            .select(
                pl.col("user_id").cast(pl.String),
                pl.col("item_id").cast(pl.String),
                ts_expr.alias("ts"),
                value.fill_null(1.0).cast(pl.Float32).alias("w"),
            )
            .join(users.lazy(), on="user_id")
            .join(items.lazy(), on="item_id")
            .sort(["u", "ts", "i"])
            .collect()
        )
        return cls(
            user_ids=np.asarray(user_ids).astype(object),
            item_ids=np.asarray(item_ids).astype(object),
            user=joined["u"].to_numpy(),
            item=joined["i"].to_numpy(),
            weight=joined["w"].to_numpy(),
            ts=joined["ts"].to_numpy(),
        )
