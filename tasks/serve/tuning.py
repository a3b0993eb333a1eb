"""Grid search of the baselines' hyperparameters on a validation split.

Reads no table (the caller passes a `Split` built from training data only); writes
nothing. Used by the yardstick (benchmarks/quality) and to choose the defaults of
`tasks.models.baselines`; the nightly itself fits the defaults.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass

import numpy as np
import polars as pl

from tasks.learn.interactions import SideFeatures
from tasks.learn.split import Split
from tasks.models.baselines import (
    BASELINES,
    ALSConfig,
    EASEConfig,
    ItemKNNConfig,
    RecentPopularConfig,
)
from tasks.serve.candidates import BaselineConfigs
from tasks.serve.evaluate import evaluate_models
from tasks.serve.gate import POOLED


@dataclass(frozen=True)
class TuningGrid:
    """Small documented grids (a few dozen fits on ML-100K)."""

    ease_l2: tuple[float, ...] = (50.0, 200.0, 500.0, 1000.0)
    als_factors: tuple[int, ...] = (32, 64, 128)
    als_regularization: tuple[float, ...] = (0.01, 0.1)
    als_alpha: tuple[float, ...] = (1.0, 10.0, 40.0)
    recent_window_days: tuple[float, ...] = (7.0, 30.0, 90.0, 365.0)
    recent_half_life_days: tuple[float | None, ...] = (None,)
    knn_neighbors: tuple[int, ...] = (50, 200)


def tune_baselines(
    split: Split,
    grid: TuningGrid | None = None,
    side: SideFeatures | None = None,
    metric: str = "ndcg@10",
) -> tuple[BaselineConfigs, pl.DataFrame]:
    """Grid-search each baseline on a validation split; best config per model by `metric`
    on the pooled holdout.

    Pass a validation split built from training data only (e.g.
    `temporal_split(test_split.train)`), never the split used to report results.

    Returns:
        (best configs, table: model, config (JSON), users and metrics of each grid point).
    """
    grid = grid or TuningGrid()
    candidates: dict[str, list] = {
        "recent_popular": [
            RecentPopularConfig(w, h)
            for w, h in itertools.product(grid.recent_window_days, grid.recent_half_life_days)
        ],
        "ease": [dataclasses.replace(EASEConfig(), l2=l2) for l2 in grid.ease_l2],
        "item_knn": [
            dataclasses.replace(ItemKNNConfig(), k_neighbors=k) for k in grid.knn_neighbors
        ],
        "als": [
            dataclasses.replace(ALSConfig(), factors=f, regularization=r, alpha=a)
            for f, r, a in itertools.product(
                grid.als_factors, grid.als_regularization, grid.als_alpha
            )
        ],
    }
    best = BaselineConfigs()
    tables = []
    for name, configs in candidates.items():
        scores = []
        for cfg in configs:
            model = BASELINES[name](cfg).fit(split.train, side or SideFeatures(), split.cutoff)
            row = evaluate_models({name: model}, split, side).filter(pl.col("segment") == POOLED)
            tables.append(
                row.with_columns(pl.lit(json.dumps(dataclasses.asdict(cfg))).alias("config"))
            )
            scores.append(row[metric][0])
        best = dataclasses.replace(best, **{name: configs[int(np.nanargmax(scores))]})
    return best, pl.concat(tables).select("model", "config", pl.exclude("model", "config"))
