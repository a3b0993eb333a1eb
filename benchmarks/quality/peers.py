"""The tuned baselines beside the published table: fitted on exactly what the nightly saw.

After the nightly ran, `load_history(lake, D)` reads the lake's silver (so ingest and
validation are the product's) and side tables. Each baseline is tuned by
`tasks.serve.tuning.tune_baselines` on a validation split carved from that history alone
(`temporal_split(history)`: the nightly's own holdout, NDCG@10 on its pooled segment) over
`GRID` (TuningGrid, with heavier EASE ridges: FIELD-NOTES saw lambda ~ 3e4 lead for new
users), then refitted on the whole history with now = the end of D, as the score stage
refits a baseline champion, and asked for its own top-20 of every user
(`tasks.serve.score.recommend`). Tuned configs are cached per dataset/protocol/seed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import polars as pl

from schemas.tables import MODELS
from tasks.lake.storage import Lake
from tasks.learn.history import History
from tasks.learn.split import temporal_split
from tasks.models.metalearner import MetaLearner
from tasks.serve import BaselineConfigs, fit_baselines, tune_baselines
from tasks.serve.score import recommend
from tasks.serve.tuning import TuningGrid

GRID = TuningGrid(ease_l2=(50.0, 200.0, 500.0, 1000.0, 3000.0, 10000.0, 30000.0))
NAMES = ("most_popular", "recent_popular", "ease", "item_knn", "als",
         "feature_group_popular", "item_features")  # fmt: skip
K = 20


def tuned_configs(
    history: History, cache: Path, seed: int, grid: TuningGrid = GRID
) -> tuple[BaselineConfigs, dict]:
    """Configs tuned over `grid` on the history's validation split (cached in `cache`, a
    JSON file): (configs with the ALS seed set, the cache document: configs, grid rows,
    seconds)."""
    if cache.exists():
        doc = json.loads(cache.read_text())
    else:
        t0 = time.perf_counter()
        best, table = tune_baselines(temporal_split(history.interactions), grid, history.side)
        doc = {"configs": dataclasses.asdict(best), "grid": table.to_dicts(),
               "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(doc, indent=1, default=str))
    configs = BaselineConfigs.from_dict(doc["configs"])
    als = dataclasses.replace(configs.als, seed=seed)
    return dataclasses.replace(configs, als=als), doc


def baseline_lists(
    history: History, configs: BaselineConfigs, names: tuple[str, ...] = NAMES
) -> dict[str, pl.DataFrame]:
    """Every named baseline fitted on the whole history (now = end of D) and its top-20 for
    every user the history knows (with history or in raw/users). EASE / ItemKNN are left
    out above their max_items, as in the nightly."""
    models = fit_baselines(history.interactions, history.side, history.now, configs, names)
    return {name: recommend(model, history.interactions, history.side, K)
            for name, model in models.items()}  # fmt: skip


def candidate_list(lake: Lake, history: History) -> pl.DataFrame | None:
    """The night's meta-learner checkpoint (models/run_date=D), scored as the score stage
    would score it, whether or not the gate published it (None without a checkpoint): a
    diagnostic beside the published table, never a substitute for it."""
    day = history.run_date
    if not lake.fs.exists(f"{lake.path(MODELS, run_date=day)}/model.pt"):
        return None
    model = MetaLearner.load(lake.url(MODELS, run_date=day))
    return recommend(model, history.interactions, history.side, K)


def names_for(history: History) -> tuple[str, ...]:
    """NAMES less the feature models whose features the lake lacks (a registry of bare
    user ids has no user features; feature_group_popular would be global popularity)."""
    users, items = history.side.users, history.side.items
    out = list(NAMES)
    if users is None or users.width <= 1:
        out.remove("feature_group_popular")
    if items is None or items.width <= 1:
        out.remove("item_features")
    return tuple(out)
