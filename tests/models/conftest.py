"""Data shared by the model tests, built once per session: ML-100K read in place and the
small two-group world the meta-learner's training tests run on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.sources.movielens import read_ml100k
from tests.models.worlds import catalogue, two_groups


@pytest.fixture(scope="session")
def ml100k_tables(shared_data: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """ML-100K's (ratings, users, items) tables."""
    return read_ml100k(shared_data / "ml-100k")


@pytest.fixture(scope="session")
def ml100k(ml100k_tables) -> Interactions:
    """ML-100K's ratings over its full item catalogue."""
    ratings, _, items = ml100k_tables
    return Interactions.from_frame(ratings, item_ids=np.sort(items["item_id"].to_numpy()))


@pytest.fixture(scope="session")
def small_world() -> tuple[Interactions, SideFeatures]:
    """The two-group world with 15 users per group (fast training runs)."""
    frame, side = two_groups(n_per_group=15)
    return Interactions.from_frame(frame, item_ids=catalogue(side)), side
