"""Baseline recommenders, each in the factor form of tasks/models/base.py.

Reads and writes no table: models are fitted on `Interactions` and saved by the caller
under `models/run_date=D/<name>/` as `config.json` + `arrays.npz` (no pickle).

  most_popular           user [1] x item popularity (users per item in train)
  recent_popular         popularity over the last `window_days` before `now`
                         (optionally exponentially decayed)
  ease                   Steck 2019: B = I - P/diag(P), P = (X'X + l2 I)^-1; scores = X B
  item_knn               cosine item-item similarity, top-k neighbours per item
  als                    implicit's ALS; any user (new ones included) folded in by the
                         closed-form least-squares solve against the item factors
  feature_group_popular  popularity within the user's side-feature group (zero-shot users)
  item_features          content-based: the user's mean item-feature profile (tf-idf of
                         the item side table's tokens) x each item's profile; scores items
                         that have no interactions yet (the features-only new-item baseline)

Every `user_factors` takes histories of users never seen at fit; an empty history falls
back to popularity. History-based models (EASE, ItemKNN) carry one extra factor: a
popularity column that breaks ties (weight 1e-6) and is the whole score for empty histories.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender

# Weight of the popularity tie-breaker added to history-based scores: small enough never
# to reorder items with different model scores on these data.
_TIE_BREAK = 1e-6
_DISPLAY_COLUMNS = frozenset({"title", "name"})


# ---- configs ---------------------------------------------------------------------------
# Defaults: the points tune_baselines chose on the ML-100K validation split
# (temporal_split of the training part of temporal_split(ML-100K)), ndcg@10 on the holdout.
@dataclass(frozen=True)
class MostPopularConfig:
    """No hyperparameters."""


@dataclass(frozen=True)
class RecentPopularConfig:
    window_days: float = 7.0  # grid {7, 30, 90, 365}: 7 won (0.338 vs 0.317-0.319)
    half_life_days: float | None = None  # exponential decay inside the window; None = flat


@dataclass(frozen=True)
class EASEConfig:
    l2: float = 1000.0  # grid {50, 200, 500, 1000}: 1000 won (0.291; 50 gave 0.258)
    max_items: int = 20_000  # dense n_items^2 inverse: ~1.6 GB and ~1 min at 20k items


@dataclass(frozen=True)
class ItemKNNConfig:
    k_neighbors: int = 200  # grid {50, 200}: 200 won (0.290 vs 0.257)
    shrink: float = 10.0  # added to the cosine denominator: damps rare-item similarity
    max_items: int = 20_000  # dense n_items^2 similarity


@dataclass(frozen=True)
class ALSConfig:
    factors: int = 32  # grid {32, 64, 128}: 32 won (0.272; 128 gave <= 0.227)
    regularization: float = 0.01  # grid {0.01, 0.1}: equal within 0.001
    alpha: float = 1.0  # confidence of an observed interaction; grid {1, 10, 40}: 1 won
    iterations: int = 15
    seed: int = 0


@dataclass(frozen=True)
class FeatureGroupPopularConfig:
    # Feature columns defining a group; None = every user column with at most
    # `max_levels` values (numeric columns are cut into `n_bins` quantile buckets).
    columns: tuple[str, ...] | None = None
    n_bins: int = 4
    max_levels: int = 32
    # Group popularity is shrunk towards global popularity by this many pseudo-users,
    # so a group of three users does not publish its three favourite films.
    prior_users: float = 20.0


@dataclass(frozen=True)
class ItemFeaturesConfig:
    max_tokens: int = 2000  # most frequent feature tokens kept (dense n_items x tokens)
    min_count: int = 2  # a token must occur on this many items


# ---- shared machinery ----------------------------------------------------------------
class _Baseline(Recommender):
    """Config + named arrays; save/load and the catalogue check are shared."""

    config_cls: ClassVar[type]

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_cls()
        self._item_ids: np.ndarray | None = None
        self._state: dict[str, np.ndarray] = {}
        self._meta: dict[str, Any] = {}

    @property
    def item_ids(self) -> np.ndarray:
        if self._item_ids is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return self._item_ids

    def item_factors(self) -> np.ndarray:
        return self._state["item_factors"]

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"model": self.name, "config": dataclasses.asdict(self.config), "meta": self._meta}
        (folder / "config.json").write_text(json.dumps(doc, indent=2))
        np.savez(folder / "arrays.npz", item_ids=self.item_ids.astype(str), **self._state)

    @classmethod
    def load(cls, folder: Path) -> Self:
        doc = json.loads((Path(folder) / "config.json").read_text())
        if doc["model"] != cls.name:
            raise ValueError(f"{folder} holds a {doc['model']} model, not {cls.name}")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["config"].items()}
        model = cls(cls.config_cls(**fields))
        with np.load(Path(folder) / "arrays.npz", allow_pickle=False) as arrays:
            model._state = {k: arrays[k] for k in arrays.files if k != "item_ids"}
            model._item_ids = arrays["item_ids"].astype(object)
        model._meta = doc["meta"]
        return model

    def _start_fit(self, train: Interactions) -> sp.csr_matrix:
        self._item_ids = train.item_ids
        return train.csr(binary=True)

    def _history_matrix(self, history: Interactions) -> sp.csr_matrix:
        same = history.item_ids is self.item_ids or np.array_equal(history.item_ids, self.item_ids)
        if not same:
            raise ValueError(f"{self.name}: history is over a different item catalogue")
        return history.csr(binary=True)


def _popularity(x: sp.csr_matrix) -> np.ndarray:
    """Users per item (binary relevance), float32."""
    return np.asarray(x.sum(axis=0), dtype=np.float32).ravel()


def _with_popularity(dense_history: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Append the popularity column's user weight: 1 for empty histories, else tie-break."""
    extra = np.where(empty, 1.0, _TIE_BREAK).astype(np.float32)[:, None]
    return np.hstack([dense_history.astype(np.float32), extra])


def _check_size(name: str, n_items: int, max_items: int) -> None:
    if n_items > max_items:
        raise ValueError(
            f"{name} builds a dense {n_items}x{n_items} matrix; the catalogue exceeds "
            f"max_items={max_items} (raise it in the config if memory allows)"
        )


# ---- popularity models -----------------------------------------------------------------
class MostPopular(_Baseline):
    """Everyone gets the items most users interacted with in train."""

    name = "most_popular"
    config_cls = MostPopularConfig

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        self._state = {"item_factors": _popularity(self._start_fit(train))[:, None]}
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        self._history_matrix(history)
        return np.ones((history.n_users, 1), np.float32)


class RecentPopular(_Baseline):
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
        alltime = _popularity(x)
        # All-time popularity orders the items the window did not see, and breaks ties,
        # at well under the smallest recent weight.
        floor = recent[recent > 0].min() if (recent > 0).any() else 1.0
        tie = alltime / (alltime.max() + 1.0) * 1e-3 * floor
        self._state = {"item_factors": (recent + tie).astype(np.float32)[:, None]}
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        self._history_matrix(history)
        return np.ones((history.n_users, 1), np.float32)


class FeatureGroupPopular(_Baseline):
    """Popularity within the user's side-feature group; global popularity without features.

    User factor: one-hot over the groups seen at fit plus a last "global" column; item
    factor: per-group share of users who interacted with the item (shrunk to global).
    """

    name = "feature_group_popular"
    config_cls = FeatureGroupPopularConfig

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        x = self._start_fit(train)
        n_users = max(train.n_users, 1)
        global_share = _popularity(x) / n_users
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


# ---- content-based ---------------------------------------------------------------------
class ItemFeatures(_Baseline):
    """Content-based: user profile = mean tf-idf feature vector of the history's items.

    Item factor = [L2-normalised tf-idf token vector, popularity]; user factor = [mean of
    the history's item vectors, tie-break weight] (popularity alone for empty histories).
    Without an item side table every item vector is zero and this is most-popular.
    """

    name = "item_features"
    config_cls = ItemFeaturesConfig

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        from tasks.learn.features import FeatureEncoder

        x = self._start_fit(train)
        n = train.n_items
        enc = FeatureEncoder.fit(side.items, "item_id", self.config.min_count)
        tokens = enc.encode(side.items, train.item_ids).tokens
        rows = np.repeat(np.arange(n), tokens.shape[1])
        flat = tokens.ravel()
        keep = flat > 0
        m = sp.csr_matrix(
            (np.ones(keep.sum(), np.float32), (rows[keep], flat[keep])),
            shape=(n, max(enc.n_tokens, 1)),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        df = np.asarray(m.sum(axis=0)).ravel()
        cols = np.argsort(-df, kind="stable")[: self.config.max_tokens]
        cols = cols[df[cols] > 0]
        idf = np.log((n + 1.0) / (df[cols] + 1.0)) + 1.0
        feats = (m[:, cols].toarray() * idf).astype(np.float32)
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-9)
        pop = _popularity(x)
        pop = pop / max(pop.max(), 1.0)
        self._state = {"item_factors": np.ascontiguousarray(np.hstack([feats, pop[:, None]]))}
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        x = self._history_matrix(history)
        feats = self._state["item_factors"][:, :-1]
        count = np.diff(x.indptr)
        profile = (x @ feats) / np.maximum(count, 1)[:, None]
        return _with_popularity(profile, count == 0)


# ---- history-based item-item models -------------------------------------------------------
class _ItemItem(_Baseline):
    """User factor = binary history row (+ popularity column); item factor = W^T."""

    def user_factors(self, history: Interactions, side: SideFeatures) -> sp.csr_matrix:
        # Sparse: a history row has ~100 nonzeros in thousands of columns, so scoring is a
        # sparse x dense product (nnz x n_items) rather than a dense n_items^2 matmul.
        x = self._history_matrix(history).astype(np.float32)
        empty = np.diff(x.indptr) == 0
        extra = np.where(empty, 1.0, _TIE_BREAK).astype(np.float32)[:, None]
        return sp.hstack([x, sp.csr_matrix(extra)], format="csr", dtype=np.float32)

    def _store(self, weights_t: np.ndarray, x: sp.csr_matrix) -> None:
        pop = _popularity(x)
        pop = pop / max(pop.max(), 1.0)
        self._state = {"item_factors": np.ascontiguousarray(np.hstack([weights_t, pop[:, None]]))}


class EASE(_ItemItem):
    """Embarrassingly shallow autoencoder: closed-form item-item weights with zero diagonal."""

    name = "ease"
    config_cls = EASEConfig

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        _check_size(self.name, train.n_items, self.config.max_items)
        x = self._start_fit(train)
        self._store(ease_weights(x, self.config.l2).T, x)
        return self


def ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """B = I - P / diag(P) with P = (X'X + l2 I)^-1 (so diag(B) = 0); float32 (n, n)."""
    gram = torch.from_numpy((x.T @ x).toarray().astype(np.float32))
    gram.diagonal().add_(l2)
    # Cholesky + cholesky_inverse: measured on this 2-core CPU at 9,742 items 3.3 s + 6.9 s,
    # against 19.5 s for cholesky_solve(I) and 27 s for linalg.inv (3x faster at 1.7k too).
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    b = -p / p.diagonal()  # column j divided by P_jj
    b.diagonal().zero_()
    return b.numpy()


class ItemKNN(_ItemItem):
    """Item-based kNN: shrunk cosine similarity, each item keeps its top-k neighbours."""

    name = "item_knn"
    config_cls = ItemKNNConfig

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        _check_size(self.name, train.n_items, self.config.max_items)
        x = self._start_fit(train)
        gram = torch.from_numpy((x.T @ x).toarray().astype(np.float32))
        norms = torch.from_numpy(np.sqrt(_popularity(x)))
        sim = gram / (torch.outer(norms, norms) + max(self.config.shrink, 1e-9))
        sim.fill_diagonal_(0.0)
        k = min(self.config.k_neighbors, train.n_items)
        # Row j of the item factor = similarities of item j to its k nearest neighbours,
        # so score(u, j) sums over the user's items among j's neighbours.
        top = torch.topk(sim, k, dim=1)
        kept = torch.zeros_like(sim).scatter_(1, top.indices, top.values)
        self._store(kept.numpy(), x)
        return self


# ---- matrix factorisation ------------------------------------------------------------------
class ALS(_Baseline):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) through the `implicit` library."""

    name = "als"
    config_cls = ALSConfig

    def __init__(self, config: ALSConfig | None = None) -> None:
        super().__init__(config)
        self._solver: Any = None  # implicit model holding the item factors, for fold-in

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        x = self._start_fit(train)
        # implicit's own solver threads; BLAS threads inside it make it ~10x slower.
        with threadpool_limits(1, "blas"):
            model = self._implicit()
            model.fit(x, show_progress=False)
        items = np.asarray(model.item_factors, np.float32)
        items[_popularity(x) == 0] = 0.0  # items without training rows: no signal, score 0
        users = np.asarray(model.user_factors, np.float32)
        active = np.diff(x.indptr) > 0
        mean_user = users[active].mean(axis=0) if active.any() else np.zeros(items.shape[1])
        self._state = {"item_factors": items, "mean_user": mean_user.astype(np.float32)}
        self._solver = None
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        x = self._history_matrix(history)
        if history.n_users == 0:
            return np.zeros((0, self.config.factors), np.float32)
        if self._solver is None:
            self._solver = self._implicit()
            self._solver.item_factors = self._state["item_factors"]
        with threadpool_limits(1, "blas"):
            out = self._solver.recalculate_user(np.arange(history.n_users), x)
        out = np.asarray(out, np.float32).reshape(history.n_users, -1)
        out[np.diff(x.indptr) == 0] = self._state["mean_user"]  # empty history: average user
        return out

    def _implicit(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):
            return AlternatingLeastSquares(
                factors=self.config.factors,
                regularization=self.config.regularization,
                alpha=self.config.alpha,
                iterations=self.config.iterations,
                num_threads=torch.get_num_threads(),
                random_state=self.config.seed,
            )


BASELINES: dict[str, type[_Baseline]] = {
    m.name: m
    for m in (MostPopular, RecentPopular, EASE, ItemKNN, ALS, FeatureGroupPopular, ItemFeatures)
}


def load_baseline(folder: Path) -> Recommender:
    """Rebuild any saved baseline from its folder (the model name is in config.json)."""
    name = json.loads((Path(folder) / "config.json").read_text())["model"]
    return BASELINES[name].load(folder)
