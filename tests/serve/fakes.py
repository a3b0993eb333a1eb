"""Stand-in recommenders for the serve tests: random factors, no training."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Self

import numpy as np

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender


class RandomFactors(Recommender):
    """Random item factors; a user is the mean of their items' factors (zero if none)."""

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


class Exploring(RandomFactors):
    """RandomFactors whose items 0..9 are "new": offered the exploration slot."""

    def exploration_items(self) -> np.ndarray:
        return np.arange(10)


class BrokenCandidate(Recommender):
    """A deliberately broken candidate: random user and item factors, whatever the history."""

    name = "random"

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        self._items = train.item_ids
        self._item_f = np.random.default_rng(0).standard_normal((train.n_items, 8), np.float32)
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        return np.random.default_rng(1).standard_normal((history.n_users, 8), np.float32)

    def item_factors(self) -> np.ndarray:
        return self._item_f

    @property
    def item_ids(self) -> np.ndarray:
        return self._items

    def save(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, folder: Path) -> Self:
        raise NotImplementedError
