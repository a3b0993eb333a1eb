"""Episodes: per-user few-shot tasks (support -> query) cut from the silver interactions.

Reads `silver/interactions/dt=*/` up to the run date (inclusive); writes
`gold/episodes/run_date=D/part-0.parquet`.

Grain: one row per episode = (user_id, support_size); the columns are declared in
schemas/tables.py (EPISODES): the `support_*` lists hold the s events just before the
cut, oldest first, the `query_*` lists the next up to query_size events from the cut on.
A user's history is every silver event ordered by (ts, item_id, event_type); support is
therefore strictly earlier than query in that order (ties in ts are split by the order,
never shared). A user with n events gets an episode for each size s < n. The cut is drawn
uniformly from [s, n-1] by a stable hash (md5) of (seed, user_id, s): the same seed gives
the same table on any machine and any version of the engines.

The table is written with pseudonymous user ids (`tasks.lake.pseudonyms`): `user_id` is
the keyed pseudonym and `episode_id` is `<pseudonym>:<support size>`. Cuts are drawn from
the real id, so the key changes the names, never the episodes (docs/privacy.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from schemas.tables import EPISODES
from tasks.config import Settings
from tasks.lake.pseudonyms import Pseudonyms, pseudonyms_for
from tasks.lake.storage import Lake
from tasks.learn.history import read_silver

SUPPORT_SIZES = (1, 3, 5, 10, 20)

_EPISODES_SQL = """
WITH events AS (
    SELECT user_id, item_id, ts, coalesce(value, 1.0) AS w,
           row_number() OVER (PARTITION BY user_id ORDER BY ts, item_id, event_type) - 1 AS pos
    FROM interactions
),
users AS (SELECT user_id, count(*) AS n FROM events GROUP BY user_id),
cuts AS (
    SELECT u.user_id, u.n, s.size AS support_size,
           s.size + (md5_number(concat($seed::VARCHAR, ':', u.user_id, ':', s.size::VARCHAR))
                     % (u.n - s.size)::HUGEINT)::BIGINT AS cut
    FROM users u JOIN sizes s ON u.n > s.size
)
SELECT c.user_id,
       concat(c.user_id, ':', c.support_size::VARCHAR) AS episode_id,
       c.support_size::INTEGER AS support_size,
       c.cut::INTEGER AS cut,
       c.n::INTEGER AS n_events,
       list(e.item_id ORDER BY e.pos) FILTER (WHERE e.pos < c.cut) AS support_items,
       list(e.w ORDER BY e.pos) FILTER (WHERE e.pos < c.cut) AS support_weights,
       list(e.ts ORDER BY e.pos) FILTER (WHERE e.pos < c.cut) AS support_ts,
       list(e.item_id ORDER BY e.pos) FILTER (WHERE e.pos >= c.cut) AS query_items,
       list(e.w ORDER BY e.pos) FILTER (WHERE e.pos >= c.cut) AS query_weights,
       list(e.ts ORDER BY e.pos) FILTER (WHERE e.pos >= c.cut) AS query_ts
FROM cuts c
JOIN events e
  ON e.user_id = c.user_id AND e.pos >= c.cut - c.support_size AND e.pos < c.cut + $query_size
GROUP BY c.user_id, c.support_size, c.cut, c.n
ORDER BY c.user_id, c.support_size
"""


@dataclass(frozen=True)
class EpisodesResult:
    """What build_episodes wrote."""

    path: str
    run_date: dt.date
    n_interactions: int
    n_users: int
    n_episodes: int
    episodes_per_size: dict[int, int]


def make_episodes(
    interactions: pl.DataFrame,
    support_sizes: Sequence[int] = SUPPORT_SIZES,
    query_size: int = 20,
    seed: int = 0,
) -> pl.DataFrame:
    """Cut one episode per (user, support size) from interactions (user_id, item_id, ts,
    event_type?, value?); see the module docstring for the output contract."""
    if query_size < 1 or any(s < 1 for s in support_sizes):
        raise ValueError("support sizes and query_size must be >= 1")
    frame = interactions.select(
        pl.col("user_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        pl.col("ts"),
        (pl.col("event_type") if "event_type" in interactions.columns else pl.lit(""))
        .cast(pl.String)
        .alias("event_type"),
        (pl.col("value") if "value" in interactions.columns else pl.lit(None))
        .cast(pl.Float64)
        .alias("value"),
    )
    sizes = pl.DataFrame({"size": sorted(set(int(s) for s in support_sizes))})
    with duckdb.connect(config={"autoinstall_known_extensions": False}) as con:
        con.register("interactions", frame.to_arrow())
        con.register("sizes", sizes.to_arrow())
        params = {"seed": int(seed), "query_size": int(query_size)}
        out = pl.from_arrow(con.sql(_EPISODES_SQL, params=params).to_arrow_table())
    # DuckDB names the zone Etc/UTC; the lake says UTC everywhere.
    return out.with_columns(
        pl.col("support_ts", "query_ts").cast(pl.List(pl.Datetime("us", "UTC")))
    )


def build_episodes(lake: Lake, day: dt.date, settings: Settings) -> EpisodesResult:
    """Silver up to `day` -> gold/episodes/run_date=D/ (atomic, deterministic for the
    seed in settings and the lake's pseudonym key; user ids are pseudonyms)."""
    silver = read_silver(lake, day)
    if silver.height == 0:
        raise ValueError(f"no silver interactions up to {day}")
    episodes = make_episodes(silver, SUPPORT_SIZES, query_size=20, seed=settings.seed)
    episodes = pseudonymous_episodes(episodes, pseudonyms_for(lake, settings))
    path = lake.write_partition(EPISODES, episodes, run_date=day)
    per_size = episodes.group_by("support_size").len().sort("support_size")
    return EpisodesResult(
        path=path,
        run_date=day,
        n_interactions=silver.height,
        n_users=silver["user_id"].n_unique(),
        n_episodes=episodes.height,
        episodes_per_size=dict(zip(per_size["support_size"], per_size["len"], strict=True)),
    )


def pseudonymous_episodes(episodes: pl.DataFrame, pseudonyms: Pseudonyms) -> pl.DataFrame:
    """Episodes with `user_id` replaced by its pseudonym and `episode_id` renamed to match
    (`<pseudonym>:<support size>`); every other column as it was."""
    named = pseudonyms.frame(episodes)
    return named.with_columns(
        episode_id=pl.concat_str(pl.col("user_id"), pl.lit(":"),
                                 pl.col("support_size").cast(pl.String))
    )  # fmt: skip
