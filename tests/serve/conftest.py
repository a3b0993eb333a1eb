"""ML-100K, read in place from ../shared/data (never copied into the repo), as the serve
tests use it: interactions with user features, a temporal split, and its metrics table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from schemas.interactions import SILVER as SILVER_SCHEMA
from schemas.tables import SILVER
from tasks.lake.storage import Lake
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.learn.split import Split, temporal_split
from tasks.serve.candidates import fit_baselines
from tasks.serve.evaluate import evaluate_models
from tasks.serve.score import assign_segments, recommend
from tests.serve.fakes import BrokenCandidate, RandomFactors

ML100K_LAST_DAY = dt.date(1998, 4, 22)


@pytest.fixture()
def silver_lake(tmp_path: Path, shared_data: Path) -> Lake:
    """A lake whose silver holds every ML-100K rating in one partition, its last day."""
    lake = Lake(str(tmp_path / "lake"))
    silver = (
        _ratings(shared_data)
        .with_columns(
            pl.from_epoch("ts", "s").dt.replace_time_zone("UTC"),
            pl.col("value") * 1.0,
            event_type=pl.lit("rating"),
            source_file=pl.lit("u.data"),
            source_line=pl.int_range(1, pl.len() + 1),
        )
        .select(SILVER_SCHEMA.names)
    )
    lake.write_partition(SILVER, silver, dt=ML100K_LAST_DAY)
    return lake


def _ratings(root: Path) -> pl.DataFrame:
    return pl.read_csv(
        root / "ml-100k" / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user_id", "item_id", "value", "ts"],
        schema_overrides={"user_id": pl.String, "item_id": pl.String},
    )


@pytest.fixture(scope="session")
def ml100k(shared_data: Path) -> tuple[Interactions, SideFeatures]:
    """The 943 users' ratings (timestamps as UTC datetimes) and the user side table."""
    frame = _ratings(shared_data).with_columns(
        pl.from_epoch("ts", "s").dt.replace_time_zone("UTC"), pl.col("value") * 1.0
    )
    users = pl.read_csv(
        shared_data / "ml-100k" / "u.user",
        separator="|",
        has_header=False,
        new_columns=["user_id", "age", "gender", "occupation", "zip"],
        schema_overrides={"user_id": pl.String, "zip": pl.String},
    )
    return Interactions.from_frame(frame), SideFeatures(users=users)


@pytest.fixture(scope="session")
def histories(shared_data: Path) -> Interactions:
    """ML-100K histories plus two users with no interaction (zero-shot: zs1, zs2)."""
    frame = _ratings(shared_data)
    users = np.sort(np.concatenate([frame["user_id"].unique().to_numpy(), ["zs1", "zs2"]]))
    return Interactions.from_frame(frame, user_ids=users.astype(str))


@pytest.fixture(scope="session")
def split(ml100k) -> Split:
    return temporal_split(ml100k[0])


@pytest.fixture(scope="session")
def metrics(split, ml100k) -> pl.DataFrame:
    """Every default baseline and a broken `metalearner` on the split's holdout."""
    side = ml100k[1]
    models = fit_baselines(split.train, side, split.cutoff)
    models["metalearner"] = BrokenCandidate().fit(split.train, side, split.cutoff)
    return evaluate_models(models, split, side)


PUBLISH_K = 10
LIST_DAY = dt.date(1998, 4, 23)


@pytest.fixture(scope="session")
def lists(ml100k) -> dict[int, pl.DataFrame]:
    """Two nights of top-10 lists for the 943 ML-100K users (different models: churn)."""
    hist = ml100k[0]
    segments = assign_segments(hist, LIST_DAY)
    models = {seed: RandomFactors(hist.item_ids, dim=8, seed=seed) for seed in (1, 2)}
    return {
        seed: recommend(model, hist, SideFeatures(), PUBLISH_K, segments)
        for seed, model in models.items()
    }
