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

Modules: config (hyperparameters), common (save/load and shared helpers), popularity,
neighbours (EASE, ItemKNN), als, content (item features), registry (BASELINES, load_baseline).
"""

from tasks.models.baselines.als import ALS
from tasks.models.baselines.config import (
    ALSConfig,
    EASEConfig,
    FeatureGroupPopularConfig,
    ItemFeaturesConfig,
    ItemKNNConfig,
    MostPopularConfig,
    RecentPopularConfig,
)
from tasks.models.baselines.content import ItemFeatures
from tasks.models.baselines.neighbours import EASE, ItemKNN, ease_weights
from tasks.models.baselines.popularity import FeatureGroupPopular, MostPopular, RecentPopular
from tasks.models.baselines.registry import BASELINES, load_baseline

__all__ = [
    "ALS",
    "BASELINES",
    "EASE",
    "ALSConfig",
    "EASEConfig",
    "FeatureGroupPopular",
    "FeatureGroupPopularConfig",
    "ItemFeatures",
    "ItemFeaturesConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "MostPopular",
    "MostPopularConfig",
    "RecentPopular",
    "RecentPopularConfig",
    "ease_weights",
    "load_baseline",
]
