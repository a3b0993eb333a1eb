"""An amortised meta-learned rating model and the MeLU-style user-cold-start protocol it is
measured on (explicit ratings, one user = one task).

Protocol (MeLU, Lee et al. KDD 2019, as re-implemented by RecBole-MetaRec):
  users     those with 13..100 ratings (both ends included); a seeded permutation of them
            is cut 8:1:1 into train / validation / test users (disjoint)
  task      per user, 10 rated items drawn at random are the query set, the rest the
            support set; the model sees the support (item, rating) pairs and predicts the
            query ratings
  metrics   MAE over query ratings; nDCG@5 and Precision@5 *inside* the query set, with
            RecBole-MetaRec's relevance rule: the 5 query items with the highest true
            ratings are relevant (see `query_metrics` for ties)

Model (one forward pass per user, no inner-loop fine-tuning, like tasks.models.metalearner):
  prior          r0 = mu + b_i + b_u: b_i fitted in closed form (alternating, shrunk) on the
                 training users' ratings and frozen; b_u = sum_j (r_j - mu - b_j) / (n + lam_u)
                 from the support; lam_i, lam_u picked on the validation users' MAE (the
                 "support mean + item bias" baseline). The network only learns a correction.
  support, correction: see rating/model.py (a kNN term, attention over the support,
                 a user vector; training starts at the prior)
  training       L1 loss over the query items of episodes drawn from the training users
                 (several draws per user per epoch, random support sub-sampling); a training
                 pair's b_i is refitted without that user's own rating (leave-one-out) and
                 its similarities come from the other folds of training users, so the
                 residuals it learns from look like a new user's. Early stopping on the
                 validation users' MAE (their one fixed draw); an average of 3 inits;
                 predictions clipped to the rating scale.

Modules: data (filter, split, episodes), metrics, prior (bias prior, similarity), model
(the network), training (train_rating_model).
"""

from tasks.models.rating.data import (
    MAX_RATINGS,
    MIN_RATINGS,
    N_QUERY,
    Episodes,
    RatingData,
    build_rating_data,
    draw_episodes,
    rows_of,
    split_users,
)
from tasks.models.rating.metrics import TOP_K, query_metrics
from tasks.models.rating.model import RatingConfig, RatingEnsemble, RatingModel, predict
from tasks.models.rating.prior import (
    ITEM_SHRINK,
    USER_SHRINK,
    BiasFit,
    fit_biases,
    item_similarity,
    residual_matrix,
    select_biases,
    support_user_bias,
)
from tasks.models.rating.training import TrainInfo, config_dict, train_rating_model

__all__ = [
    "ITEM_SHRINK",
    "MAX_RATINGS",
    "MIN_RATINGS",
    "N_QUERY",
    "TOP_K",
    "USER_SHRINK",
    "BiasFit",
    "Episodes",
    "RatingConfig",
    "RatingData",
    "RatingEnsemble",
    "RatingModel",
    "TrainInfo",
    "build_rating_data",
    "config_dict",
    "draw_episodes",
    "fit_biases",
    "item_similarity",
    "predict",
    "query_metrics",
    "residual_matrix",
    "rows_of",
    "select_biases",
    "split_users",
    "support_user_bias",
    "train_rating_model",
]
