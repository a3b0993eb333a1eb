"""The models layer: one contract (base.Recommender), the baselines, the meta-learner and
the MeLU-style rating model.

Reads the interaction history up to a run date (tasks.learn.history) and the previous
night's checkpoint; writes `models/run_date=D/`: the meta-learner's checkpoint (model.pt,
config.json, item_ids.json, encoders.json, item_item.pt, train_log.json, metrics.json;
tasks.models.metalearner.stage). Baselines are fitted in memory and saved by the caller
(`config.json` + `arrays.npz`). Imports tasks.learn, tasks.lake, tasks.config and schemas
only; tasks.serve and flows import from here.

  base         Recommender, the factor contract every model implements
  baselines    popularity, EASE / ItemKNN, ALS, feature groups, item features; BASELINES
  metalearner  MetaLearner, its training, checkpoints and the nightly train_stage
  rating       the rating model and the MeLU protocol (benchmarks/quality/melu.py)
"""

from tasks.models.base import Recommender
from tasks.models.baselines import (
    ALS,
    BASELINES,
    EASE,
    ALSConfig,
    EASEConfig,
    FeatureGroupPopular,
    FeatureGroupPopularConfig,
    ItemFeatures,
    ItemFeaturesConfig,
    ItemKNN,
    ItemKNNConfig,
    MostPopular,
    MostPopularConfig,
    RecentPopular,
    RecentPopularConfig,
    ease_weights,
    load_baseline,
)
from tasks.models.metalearner import (
    MetaConfig,
    MetaLearner,
    TrainResult,
    TrainStageResult,
    latest_checkpoint,
    save_checkpoint,
    select_device,
    train_metalearner,
    train_stage,
)

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
    "MetaConfig",
    "MetaLearner",
    "MostPopular",
    "MostPopularConfig",
    "RecentPopular",
    "RecentPopularConfig",
    "Recommender",
    "TrainResult",
    "TrainStageResult",
    "ease_weights",
    "latest_checkpoint",
    "load_baseline",
    "save_checkpoint",
    "select_device",
    "train_metalearner",
    "train_stage",
]
