"""The one contract every recommender implements.

Every model (popularity, EASE, ALS, the meta-learner) reduces to factors: a user block
gets `user_factors(history)` of shape (n_users, d) and the catalogue `item_factors()` of
shape (n_items, d); scores are their product. Scoring and evaluation (tasks/serve)
therefore treat all models alike: blocked matmul + top-k.

A model may give factors with a sparse tail (`SplitFactors`: the meta-learner's item-item
parts): scores are then dense @ dense.T + sparse @ sparse.T, still one product per block.

Histories are `tasks.learn.Interactions`, so a user the model never saw is scored from
their history alone (fold-in for ALS, the support-set encoder for the meta-learner).
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp

from tasks.learn.interactions import Interactions, SideFeatures


@dataclass(frozen=True)
class SplitFactors:
    """Factors in two parts: a dense (n, d) block and a sparse (n, s) tail. For users u and
    items i, score = u.dense @ i.dense.T + u.sparse @ i.sparse.T."""

    dense: np.ndarray
    sparse: sp.csr_matrix

    def __len__(self) -> int:
        return len(self.dense)

    def __getitem__(self, rows) -> SplitFactors:
        return SplitFactors(self.dense[rows], sp.csr_matrix(self.sparse[rows]))

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.dense), self.dense.shape[1] + self.sparse.shape[1])


Factors = np.ndarray | sp.csr_matrix | SplitFactors


class Recommender(ABC):
    """What every model offers: fit on histories, then factors for any user's history."""

    name: ClassVar[str]

    @abstractmethod
    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        """Learn from `train` (its item_ids become the model's catalogue)."""

    @abstractmethod
    def user_factors(self, history: Interactions, side: SideFeatures) -> Factors:
        """(history.n_users, d) float32 for users given only their history (may be empty)."""

    @abstractmethod
    def item_factors(self) -> Factors:
        """(n_items, d) float32 over the catalogue seen at fit."""

    @property
    @abstractmethod
    def item_ids(self) -> np.ndarray:
        """The catalogue, aligned with item_factors()."""

    def exploration_items(self) -> np.ndarray:
        """Catalogue indices of items offered the last slot of every list (items the model
        can only place by their features); empty = none (tasks.serve.topk.ranked_lists)."""
        return np.zeros(0, np.int64)

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the model as JSON config + arrays/state dict (no pickle)."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path) -> Self:
        """Rebuild a saved model from its folder alone."""
