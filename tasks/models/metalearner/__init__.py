"""The meta-learner: an amortised, set-encoder recommender that adapts to a user from a few
interactions in one forward pass (no per-user inner loop), in the spirit of neural
processes / prototypical networks for cold-start recommendation.

Reads the history up to D and the previous checkpoint; writes `models/run_date=D/`
(stage.py). Modules, each importing only those above it:

  config            MetaConfig (saved with every checkpoint), ItemItemConfig, FORMAT_VERSION
  cooccurrence      the parts' sparse matrices: shrunk cosine, sequence co-occurrence
  item_item         the item-item parts (cosine, sequence, recent popularity), user rows
  item_item_tuning  fitting the parts and tuning their mixing weights per support size
  network           torch modules: item tower, support encoder, time prior, loss
  inputs            histories -> catalogue indices, support sets, event weights
  training          episode sampler and the training loop (network + arrays only)
  warm_start        copying a previous network's weights into a new one
  checkpoint        the checkpoint files (no pickle)
  learner           MetaLearner, the `Recommender` adapter: fit, factors, save/load
  stage             train_metalearner, checkpoints in the lake, the nightly train_stage

The score, as factors:
  s(u, i) = u . v_i + b_i + w(n) . p_i(now) + sum over parts of mix_part(bucket) (r_u M_part)_i
          = [u, 1, w(n), mix(bucket) r_u ...] . [v_i, b_i, p_i(now), M_:i ...]
The set encoder alone pulls a 3-film user back to the popularity list; the item-item parts
carry the evidence of so few events directly (each mixed in with a weight per support-size
bucket and for stale users, tuned on held-out users; 0 is in the grid, so a part never
hurts there). New items: rank k of each list goes to the best item without interactions
at fit (exploration_items; tasks.serve.topk.ranked_lists).
"""

from tasks.models.metalearner.config import FORMAT_VERSION, N_BUCKETS, MetaConfig
from tasks.models.metalearner.learner import FitReport, MetaLearner
from tasks.models.metalearner.network import (
    FeatureTower,
    ItemTower,
    MetaRecModel,
    SupportEncoder,
    bucket,
    prior_features,
    seen_mask,
)
from tasks.models.metalearner.stage import (
    TrainResult,
    TrainStageResult,
    latest_checkpoint,
    save_checkpoint,
    train_metalearner,
    train_stage,
)
from tasks.models.metalearner.training import (
    EpisodeSampler,
    TrainingRun,
    select_device,
    train_network,
)

__all__ = [
    "FORMAT_VERSION",
    "N_BUCKETS",
    "EpisodeSampler",
    "FeatureTower",
    "FitReport",
    "ItemTower",
    "MetaConfig",
    "MetaLearner",
    "MetaRecModel",
    "SupportEncoder",
    "TrainResult",
    "TrainStageResult",
    "TrainingRun",
    "bucket",
    "latest_checkpoint",
    "prior_features",
    "save_checkpoint",
    "seen_mask",
    "select_device",
    "train_metalearner",
    "train_network",
    "train_stage",
]
