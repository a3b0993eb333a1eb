"""The baselines' hyperparameters, one frozen dataclass per model (saved in config.json).

Defaults: the points tune_baselines chose on the ML-100K validation split
(temporal_split of the training part of temporal_split(ML-100K)), ndcg@10 on the holdout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MostPopularConfig:
    """No hyperparameters."""


@dataclass(frozen=True)
class RecentPopularConfig:
    """Popularity window (and optional decay inside it)."""

    window_days: float = 7.0  # grid {7, 30, 90, 365}: 7 won (0.338 vs 0.317-0.319)
    half_life_days: float | None = None  # exponential decay inside the window; None = flat


@dataclass(frozen=True)
class EASEConfig:
    """Ridge strength of the closed form, and the catalogue cap of its dense inverse."""

    l2: float = 1000.0  # grid {50, 200, 500, 1000}: 1000 won (0.291; 50 gave 0.258)
    max_items: int = 20_000  # dense n_items^2 inverse: ~1.6 GB and ~1 min at 20k items


@dataclass(frozen=True)
class ItemKNNConfig:
    """Neighbourhood size and similarity shrinkage."""

    k_neighbors: int = 200  # grid {50, 200}: 200 won (0.290 vs 0.257)
    shrink: float = 10.0  # added to the cosine denominator: damps rare-item similarity
    max_items: int = 20_000  # dense n_items^2 similarity


@dataclass(frozen=True)
class ALSConfig:
    """implicit's ALS hyperparameters."""

    factors: int = 32  # grid {32, 64, 128}: 32 won (0.272; 128 gave <= 0.227)
    regularization: float = 0.01  # grid {0.01, 0.1}: equal within 0.001
    alpha: float = 1.0  # confidence of an observed interaction; grid {1, 10, 40}: 1 won
    iterations: int = 15
    seed: int = 0


@dataclass(frozen=True)
class FeatureGroupPopularConfig:
    """Which user features define a group, and how far small groups are shrunk."""

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
    """Vocabulary of the content profile."""

    max_tokens: int = 2000  # most frequent feature tokens kept (dense n_items x tokens)
    min_count: int = 2  # a token must occur on this many items
