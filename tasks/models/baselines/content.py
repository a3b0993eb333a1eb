"""The content-based baseline: tf-idf profiles of the items' side features, so items
without interactions are scored (the features-only new-item baseline)."""

from __future__ import annotations

import datetime as dt
from typing import Self

import numpy as np
import scipy.sparse as sp

from tasks.learn.features import FeatureEncoder
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.baselines.common import Baseline, popularity, with_popularity
from tasks.models.baselines.config import ItemFeaturesConfig


class ItemFeatures(Baseline):
    """Content-based: user profile = mean tf-idf feature vector of the history's items.

    Item factor = [L2-normalised tf-idf token vector, popularity]; user factor = [mean of
    the history's item vectors, tie-break weight] (popularity alone for empty histories).
    Without an item side table every item vector is zero and this is most-popular.
    """

    name = "item_features"
    config_cls = ItemFeaturesConfig

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
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
        pop = popularity(x)
        pop = pop / max(pop.max(), 1.0)
        self._state = {"item_factors": np.ascontiguousarray(np.hstack([feats, pop[:, None]]))}
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        x = self._history_matrix(history)
        feats = self._state["item_factors"][:, :-1]
        count = np.diff(x.indptr)
        profile = (x @ feats) / np.maximum(count, 1)[:, None]
        return with_popularity(profile, count == 0)
