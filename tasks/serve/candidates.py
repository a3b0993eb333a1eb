"""The baselines every night compares the meta-learner with: their configs and fitting.

Reads no table (the caller passes the training `Interactions` and side features); writes
nothing. The evaluate stage fits them on the split's training part, the score stage refits
the published one on the full history; `tasks.serve.tuning` searches their configs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender
from tasks.models.baselines import (
    BASELINES,
    ALSConfig,
    EASEConfig,
    FeatureGroupPopularConfig,
    ItemFeaturesConfig,
    ItemKNNConfig,
    MostPopularConfig,
    RecentPopularConfig,
)


@dataclass(frozen=True)
class BaselineConfigs:
    """Hyperparameters of every baseline (defaults: see each config's comments)."""

    most_popular: MostPopularConfig = field(default_factory=MostPopularConfig)
    recent_popular: RecentPopularConfig = field(default_factory=RecentPopularConfig)
    ease: EASEConfig = field(default_factory=EASEConfig)
    item_knn: ItemKNNConfig = field(default_factory=ItemKNNConfig)
    als: ALSConfig = field(default_factory=ALSConfig)
    feature_group_popular: FeatureGroupPopularConfig = field(
        default_factory=FeatureGroupPopularConfig
    )
    item_features: ItemFeaturesConfig = field(default_factory=ItemFeaturesConfig)


def fit_baselines(
    train: Interactions,
    side: SideFeatures | None,
    now: dt.datetime,
    configs: BaselineConfigs | None = None,
    names: tuple[str, ...] | None = None,
) -> dict[str, Recommender]:
    """Fit every baseline (or those in `names`); feature_group_popular only with user
    features, item_features only with item features.

    EASE and ItemKNN are skipped (not failed) when the catalogue exceeds their max_items.
    """
    side = side or SideFeatures()
    configs = configs or BaselineConfigs()
    chosen = names or tuple(BASELINES)
    out: dict[str, Recommender] = {}
    for name in chosen:
        # The default set leaves out a feature model whose features are absent; one asked
        # for by name is fitted as asked.
        if name == "feature_group_popular" and names is None and side.users is None:
            continue
        if name == "item_features" and names is None and side.items is None:
            continue
        cfg = getattr(configs, name)
        if name in ("ease", "item_knn") and train.n_items > cfg.max_items:
            continue
        out[name] = BASELINES[name](cfg).fit(train, side, now)
    return out
