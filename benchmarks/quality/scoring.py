"""One function scores any list table: the published one or a baseline's, the same way.

A list table has user_id, rank (1..k) and item_id (the published gold/recommendations
partition, or `tasks.serve.score.recommend`'s output). Targets are (segment, user_id,
item_id) rows from `benchmarks.quality.lakes`. Binary relevance over the full catalogue:
Recall@20 = hits in the top 20 / min(20, targets), NDCG@10 with the ideal list of min(10,
targets) hits (tasks.learn.metrics' definitions). A segment user without a list scores 0
(and is counted in `unlisted`): a user the table forgot is a miss, not a gap.
"""

from __future__ import annotations

import numpy as np
import polars as pl

K_RECALL, K_NDCG = 20, 10
MIN_USERS = 30  # segments with fewer users are flagged in the report (not hidden)


def score_lists(
    lists: pl.DataFrame,
    targets: pl.DataFrame,
    n_items: int,
    self_information: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Per segment: users, unlisted, recall@20, ndcg@10, coverage, novelty.

    Args:
        lists: user_id, rank, item_id (ranks beyond K_RECALL are ignored).
        targets: segment, user_id, item_id; every (segment, user) has at least one row.
        n_items: the catalogue size (coverage = distinct listed items of the segment's
            users / n_items).
        self_information: optional item_id, info (-log2 popularity share in the lake):
            novelty = mean info of the segment's listed items (NaN without it).
    """
    top = lists.select(
        pl.col("user_id").cast(pl.String), pl.col("rank").cast(pl.Int64),
        pl.col("item_id").cast(pl.String),
    ).filter(pl.col("rank") <= K_RECALL)  # fmt: skip
    targets = targets.select("segment", "user_id", "item_id").unique()
    per_user = targets.group_by("segment", "user_id").agg(pl.len().alias("n_rel"))
    gain = (1.0 / (pl.col("rank") + 1).log(2)).filter(pl.col("rank") <= K_NDCG)
    hits = (
        targets.join(top, on=["user_id", "item_id"])
        .group_by("segment", "user_id")
        .agg(pl.len().alias("hits_r"), gain.sum().alias("dcg"))
    )
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, K_NDCG + 2)))])
    listed = top.select("user_id").unique().with_columns(pl.lit(True).alias("listed"))
    users = (
        per_user.join(hits, on=["segment", "user_id"], how="left")
        .join(listed, on="user_id", how="left")
        .with_columns(
            pl.col("hits_r", "dcg").fill_null(0),
            pl.col("listed").fill_null(False),
            pl.col("n_rel").clip(upper_bound=K_NDCG).alias("n_ideal"),
        )
        .with_columns(
            (pl.col("hits_r") / pl.col("n_rel").clip(upper_bound=K_RECALL)).alias("recall"),
            (pl.col("dcg") / pl.col("n_ideal").replace_strict(
                list(range(K_NDCG + 1)), ideal.tolist(), return_dtype=pl.Float64)).alias("ndcg"),
        )
    )  # fmt: skip
    shown = users.select("segment", "user_id").join(top, on="user_id")
    if self_information is not None:
        shown = shown.join(self_information, on="item_id", how="left")
    else:
        shown = shown.with_columns(pl.lit(None, pl.Float64).alias("info"))
    spread = shown.group_by("segment").agg(
        (pl.col("item_id").n_unique() / max(n_items, 1)).alias("coverage"),
        pl.col("info").mean().alias("novelty"),
    )
    return (
        users.group_by("segment")
        .agg(
            pl.len().alias("users"),
            (~pl.col("listed")).sum().alias("unlisted"),
            pl.col("recall").mean().alias(f"recall@{K_RECALL}"),
            pl.col("ndcg").mean().alias(f"ndcg@{K_NDCG}"),
        )
        .join(spread, on="segment", how="left")
        .with_columns(pl.col("coverage").fill_null(0.0), pl.col("users").cast(pl.Int64))
        .sort("segment")
    )


def new_item_stats(lists: pl.DataFrame, lake_items: pl.Series, fresh: pl.Series) -> dict:
    """How a list table treats items with no event in the lake: `new_item_coverage` (share
    of `fresh`, the new items that users took after D or the cutoff, in any list) and
    `lists_with_new` (share of users whose top-20 holds an item with no lake event)."""
    top = lists.filter(pl.col("rank") <= K_RECALL)
    is_new = ~pl.col("item_id").is_in(lake_items.cast(pl.String).implode())
    per_user = top.group_by("user_id").agg(is_new.any().alias("has_new"))
    shown = top.filter(is_new)["item_id"].unique()
    return {
        "new_item_coverage": float(shown.is_in(fresh.implode()).sum() / max(fresh.len(), 1)),
        "lists_with_new": float(per_user["has_new"].mean()) if per_user.height else 0.0,
        "new_items": int(fresh.len()),
    }


def self_information(events: pl.DataFrame, catalogue: pl.Series) -> pl.DataFrame:
    """item_id, info = -log2((users with the item + 1) / (users + 1)) over the lake's events
    for every catalogue item (tasks.learn.metrics.item_self_information on frames)."""
    n_users = events["user_id"].n_unique()
    per_item = events.group_by("item_id").agg(pl.col("user_id").n_unique().alias("u"))
    items = pl.DataFrame({"item_id": catalogue.cast(pl.String).unique()})
    return items.join(per_item, on="item_id", how="left").select(
        "item_id", (-((pl.col("u").fill_null(0) + 1.0) / (n_users + 1.0)).log(2)).alias("info")
    )
