"""Every table of the lake, declared once: where it lives, how it is partitioned, its Arrow
schema and its grain. `tasks.lake.Lake` resolves paths and casts writes from these.

A table whose `schema` is None holds files in formats of their own (raw landing files as
delivered, model checkpoints, JSON evidence); every other table is Hive-partitioned
Parquet that DuckDB, Polars, Spark or Trino read as-is.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from schemas import interactions, recommendations, runs


@dataclass(frozen=True)
class Table:
    """One table: `name` is its path under the lake root, `keys` its partition keys."""

    name: str
    keys: tuple[str, ...]
    schema: pa.Schema | None
    grain: str

    def __str__(self) -> str:
        return self.name


EPISODES_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("episode_id", pa.string()),
        ("support_size", pa.int32()),
        ("cut", pa.int32()),
        ("n_events", pa.int32()),
        ("support_items", pa.list_(pa.string())),
        ("support_weights", pa.list_(pa.float64())),
        ("support_ts", pa.list_(interactions.TS)),
        ("query_items", pa.list_(pa.string())),
        ("query_weights", pa.list_(pa.float64())),
        ("query_ts", pa.list_(interactions.TS)),
    ]
)

RAW_INTERACTIONS = Table(
    "raw/interactions", ("dt",), None,
    "landing files (CSV / JSONL / Parquet, optionally gzip) as delivered, never modified",
)  # fmt: skip
RAW_USERS = Table("raw/users", (), None, "one row per user: user_id + feature columns")
RAW_ITEMS = Table("raw/items", (), None, "one row per item: item_id + feature columns")
BRONZE = Table(
    "bronze/interactions", ("dt",), interactions.BRONZE,
    "one row per raw row read, typed, with its source file and line",
)  # fmt: skip
SILVER = Table(
    "silver/interactions", ("dt",), interactions.SILVER,
    "one row per (user_id, item_id, event_type, ts) that passed every rule",
)  # fmt: skip
QUARANTINE = Table(
    "quarantine/interactions", ("dt",), interactions.QUARANTINE,
    "one row per rejected raw row, with its reason and the expectation that states the rule",
)  # fmt: skip
VALIDATION = Table(
    "gold/validation", ("batch",), None,
    "one Great Expectations result (JSON) per validation batch of dates",
)  # fmt: skip
EPISODES = Table(
    "gold/episodes", ("run_date",), EPISODES_SCHEMA,
    "one row per (user, support size): support = earlier events, query = the next ones",
)  # fmt: skip
MODELS = Table(
    "models", ("run_date",), None,
    "one checkpoint folder per night: config, state dict, catalogue, training log",
)  # fmt: skip
METRICS = Table(
    "gold/metrics", ("run_date",), None,
    "one row per (model, segment) of the night's holdout evaluation; metric columns vary "
    "with the evaluated segments",
)  # fmt: skip
STAGING_RECOMMENDATIONS = Table(
    "staging/recommendations", ("run_date", "model"), recommendations.SCORED,
    "scored lists waiting for the publish stage's audit; readers never look here",
)  # fmt: skip
RECOMMENDATIONS = Table(
    "gold/recommendations", ("run_date",), recommendations.RECOMMENDATIONS,
    "one row per (run_date, user_id, rank): the published top-K lists",
)  # fmt: skip
RUNS = Table(
    "gold/runs", ("stage", "dt"), runs.RUNS,
    "one row per (stage, date): a validated partition's accounting or a night's record",
)  # fmt: skip

ALL: tuple[Table, ...] = (
    RAW_INTERACTIONS, RAW_USERS, RAW_ITEMS, BRONZE, SILVER, QUARANTINE, VALIDATION,
    EPISODES, MODELS, METRICS, STAGING_RECOMMENDATIONS, RECOMMENDATIONS, RUNS,
)  # fmt: skip
BY_NAME = {t.name: t for t in ALL}
