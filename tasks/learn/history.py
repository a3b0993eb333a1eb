"""The interaction history up to a run date, as model input.

Reads `silver/interactions/dt<=D`, `raw/users/*` and `raw/items/*` and returns
`Interactions` over the run's catalogue (every item seen in silver or listed in
raw/items, so items without interactions are scorable from features) and user vocabulary
(every user with history plus every user listed in raw/users: the zero-shot users).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from schemas.tables import SILVER
from tasks.lake.dates import end_of_day
from tasks.lake.storage import Lake
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.learn.side_tables import read_side_tables


@dataclass(frozen=True)
class History:
    """Everything known up to the end of `run_date`."""

    run_date: dt.date
    interactions: Interactions
    side: SideFeatures

    @property
    def now(self) -> dt.datetime:
        """The end of the run date (UTC): models treat it as the present."""
        return end_of_day(self.run_date)


def read_silver(lake: Lake, run_date: dt.date) -> pl.DataFrame:
    """Every silver interaction landed up to run_date (inclusive), in one scan."""
    frame = lake.scan(SILVER, until=run_date)
    return frame.drop("dt") if "dt" in frame.columns else frame


def load_history(lake: Lake, run_date: dt.date) -> History:
    """Silver interactions up to run_date plus side tables, over the run's vocabularies."""
    silver = read_silver(lake, run_date)
    if silver.is_empty():
        raise FileNotFoundError(
            f"no silver interactions up to {run_date} under {lake.path(SILVER)}"
            " — run `metarec ingest` first"
        )
    side = read_side_tables(lake)
    items = silver["item_id"].unique()
    users = silver["user_id"].unique()
    if side.items is not None:
        items = pl.concat([items, side.items["item_id"].cast(pl.String)]).unique()
    if side.users is not None:
        users = pl.concat([users, side.users["user_id"].cast(pl.String)]).unique()
    interactions = Interactions.from_frame(
        silver,
        item_ids=np.sort(items.to_numpy().astype(str)),
        user_ids=np.sort(users.to_numpy().astype(str)),
    )
    return History(run_date=run_date, interactions=interactions, side=side)
