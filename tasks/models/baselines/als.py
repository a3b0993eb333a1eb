"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008) through the `implicit` library, with
closed-form fold-in for any user's history."""

from __future__ import annotations

import datetime as dt
from typing import Self

import numpy as np
import torch
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.baselines.common import Baseline, popularity
from tasks.models.baselines.config import ALSConfig


class ALS(Baseline):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) through the `implicit` library."""

    name = "als"
    config_cls = ALSConfig

    def __init__(self, config: ALSConfig | None = None) -> None:
        super().__init__(config)
        # implicit model holding the item factors, for fold-in (built on first use)
        self._solver: AlternatingLeastSquares | None = None

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        x = self._start_fit(train)
        # implicit's own solver threads; BLAS threads inside it make it ~10x slower.
        with threadpool_limits(1, "blas"):
            model = self._implicit()
            model.fit(x, show_progress=False)
        items = np.asarray(model.item_factors, np.float32)
        items[popularity(x) == 0] = 0.0  # items without training rows: no signal, score 0
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

    def _implicit(self) -> AlternatingLeastSquares:
        with threadpool_limits(1, "blas"):
            return AlternatingLeastSquares(
                factors=self.config.factors,
                regularization=self.config.regularization,
                alpha=self.config.alpha,
                iterations=self.config.iterations,
                num_threads=torch.get_num_threads(),
                random_state=self.config.seed,
            )
