"""The baselines every night compares the meta-learner with: their configs and fitting.

Reads no table (the caller passes the training `Interactions` and side features); writes
nothing. The evaluate stage fits them on the holdout's training part, the score stage
refits the ones the gate chose on the full history; `tasks.serve.tuning` searches their
configs on a validation split (the yardstick).

Each night also tunes the cheap hyperparameters on its own holdout: the popularity window
and (on catalogues small enough for a few dense inverses) EASE's ridge become named
variants (`recent_popular_30d`, `ease_l2_3000`), so the per-segment gate picks the best
variant for each segment, and the score stage refits exactly that one.
"""

from __future__ import annotations

import dataclasses
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

    @classmethod
    def from_dict(cls, doc: dict) -> BaselineConfigs:
        """The configs from their `dataclasses.asdict` form (JSON lists back to tuples;
        a baseline missing from `doc` keeps its defaults)."""
        kw = {}
        for f in dataclasses.fields(cls):
            config_cls = type(getattr(cls(), f.name))
            kw[f.name] = config_cls(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in doc.get(f.name, {}).items()})  # fmt: skip
        return cls(**kw)


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


# The night's own grid (see the module docstring): windows in days, ridges.
NIGHT_WINDOWS_DAYS = (7.0, 14.0, 30.0, 90.0, 365.0)
NIGHT_EASE_L2 = (300.0, 3000.0, 30000.0)
NIGHT_EASE_MAX_ITEMS = 4000  # above it one EASE fit costs more than the night should


@dataclass(frozen=True)
class Candidate:
    """A baseline under a name of its own: which model, with which config."""

    baseline: str
    config: object


def night_candidates(n_items: int, side: SideFeatures | None) -> dict[str, Candidate]:
    """Every baseline at its default config plus the night's variants, by name."""
    side = side or SideFeatures()
    defaults = BaselineConfigs()
    out = {name: Candidate(name, getattr(defaults, name)) for name in BASELINES}
    if side.users is None:
        out.pop("feature_group_popular")
    if side.items is None:
        out.pop("item_features")
    for days in NIGHT_WINDOWS_DAYS:
        cfg = dataclasses.replace(defaults.recent_popular, window_days=days)
        out[f"recent_popular_{days:g}d"] = Candidate("recent_popular", cfg)
    out.pop("recent_popular")  # the default window is one of the variants
    for name in ("ease", "item_knn"):
        if n_items > getattr(defaults, name).max_items:
            out.pop(name)
    if "ease" in out and n_items <= NIGHT_EASE_MAX_ITEMS:
        for l2 in NIGHT_EASE_L2:
            out[f"ease_l2_{l2:g}"] = Candidate("ease", dataclasses.replace(defaults.ease, l2=l2))
    return out


def fit_candidates(
    candidates: dict[str, Candidate],
    train: Interactions,
    side: SideFeatures | None,
    now: dt.datetime,
) -> dict[str, Recommender]:
    """Fit each named candidate on `train` with now = `now`."""
    side = side or SideFeatures()
    return {name: BASELINES[c.baseline](c.config).fit(train, side, now)
            for name, c in candidates.items()}  # fmt: skip
