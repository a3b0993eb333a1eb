"""Every baseline by name (the `model` field of its config.json), and loading by folder."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.models.base import Recommender
from tasks.models.baselines.als import ALS
from tasks.models.baselines.common import Baseline
from tasks.models.baselines.content import ItemFeatures
from tasks.models.baselines.neighbours import EASE, ItemKNN
from tasks.models.baselines.popularity import FeatureGroupPopular, MostPopular, RecentPopular

BASELINES: dict[str, type[Baseline]] = {
    m.name: m
    for m in (MostPopular, RecentPopular, EASE, ItemKNN, ALS, FeatureGroupPopular, ItemFeatures)
}


def load_baseline(folder: Path) -> Recommender:
    """Rebuild any saved baseline from its folder (the model name is in config.json)."""
    name = json.loads((Path(folder) / "config.json").read_text())["model"]
    return BASELINES[name].load(folder)
