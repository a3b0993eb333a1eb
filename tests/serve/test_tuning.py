"""Grid search of the baselines on a validation split carved from training data."""

from __future__ import annotations

import polars as pl

from tasks.learn.split import temporal_split
from tasks.serve.tuning import TuningGrid, tune_baselines


def test_tune_baselines_picks_the_best_grid_point(ml100k, split):
    validation = temporal_split(split.train)
    grid = TuningGrid(
        ease_l2=(5.0, 1000.0),
        als_factors=(8,),
        als_regularization=(0.1,),
        als_alpha=(1.0,),
        recent_window_days=(1.0, 30.0),
        knn_neighbors=(20,),
    )
    best, table = tune_baselines(validation, grid, ml100k[1])
    assert table.height == 2 + 1 + 2 + 1
    assert table.columns[:2] == ["model", "config"]
    ease = table.filter(pl.col("model") == "ease").sort("ndcg@10", descending=True)
    assert f'"l2": {best.ease.l2}' in ease["config"][0]
    recent = table.filter(pl.col("model") == "recent_popular").sort("ndcg@10", descending=True)
    assert f'"window_days": {best.recent_popular.window_days}' in recent["config"][0]
    assert not set(validation.train.user_ids) & set(split.new_user_ids)
