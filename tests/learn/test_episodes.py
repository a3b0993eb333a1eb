"""Episodes: deterministic cuts, support strictly before query, sizes, and the lake stage."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from tasks.config import Settings
from tasks.lake.storage import lake_from
from tasks.learn.episodes import build_episodes, make_episodes
from tasks.learn.history import read_silver


def ml100k_silver(data: Path, n_users: int | None = None) -> pl.DataFrame:
    """u.data as silver rows (user_id, item_id, ts UTC, event_type, value)."""
    frame = pl.read_csv(
        data / "ml-100k" / "u.data", separator="\t", has_header=False,
        new_columns=["user_id", "item_id", "value", "ts"],
        schema_overrides={"user_id": pl.String, "item_id": pl.String, "value": pl.Float64},
    )  # fmt: skip
    if n_users is not None:
        frame = frame.filter(pl.col("user_id").cast(pl.Int64) <= n_users)
    return frame.select(
        "user_id", "item_id",
        pl.from_epoch("ts", "s").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC")),
        pl.lit("rating").alias("event_type"), "value",
        pl.lit("u.data").alias("source_file"), pl.int_range(pl.len()).alias("source_line"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def silver(shared_data: Path) -> pl.DataFrame:
    return ml100k_silver(shared_data, n_users=150)


def test_deterministic_and_seed_dependent(silver):
    a = make_episodes(silver, seed=7)
    b = make_episodes(silver.sample(fraction=1.0, shuffle=True, seed=3), seed=7)
    assert a.equals(b)  # row order of the input does not matter
    c = make_episodes(silver, seed=8)
    assert not a["cut"].equals(c["cut"])


def test_sizes_and_support_before_query(silver):
    eps = make_episodes(silver, support_sizes=(1, 3, 5, 10, 20), query_size=20, seed=0)
    n_events = silver.group_by("user_id").len()
    assert eps["episode_id"].is_unique().all()
    # Every user gets one episode per size it can afford (s < n).
    expected = sum(int((n_events["len"] > s).sum()) for s in (1, 3, 5, 10, 20))
    assert eps.height == expected
    assert (eps["support_items"].list.len() == eps["support_size"]).all()
    q = eps["query_items"].list.len()
    assert (q >= 1).all() and (q <= 20).all()
    left = (eps["n_events"] - eps["cut"]).clip(upper_bound=20)
    assert (q == left).all()
    last_support = eps["support_ts"].list.max()
    first_query = eps["query_ts"].list.min()
    assert (last_support <= first_query).all()
    ordered = eps["support_ts"].list.eval(pl.element().diff().dt.total_seconds().fill_null(0) >= 0)
    assert ordered.list.all().all()
    # Support + query is a contiguous window of the user's time-ordered history.
    user = eps.filter(pl.col("episode_id") == eps["episode_id"][3]).row(0, named=True)
    hist = silver.filter(pl.col("user_id") == user["user_id"]).sort("ts", "item_id")
    window = hist["item_id"][user["cut"] - user["support_size"] : user["cut"] + 20].to_list()
    assert user["support_items"] + user["query_items"] == window
    assert (
        user["support_weights"]
        == hist["value"][user["cut"] - user["support_size"] : user["cut"]].to_list()
    )


def test_short_histories_and_null_values():
    ts = [dt.datetime(2024, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3)]
    frame = pl.DataFrame(
        {"user_id": ["a", "a", "a", "b"], "item_id": ["x", "y", "z", "x"],
         "ts": [*ts, ts[0]], "event_type": ["click"] * 4, "value": [None, 2.0, None, 1.0]}
    )  # fmt: skip
    eps = make_episodes(frame, support_sizes=(1, 3), query_size=5, seed=0)
    assert eps["episode_id"].to_list() == ["a:1"]  # b has one event; a cannot afford s=3
    assert eps["support_weights"][0].to_list() + eps["query_weights"][0].to_list() == [
        1.0, 2.0, 1.0
    ][eps["cut"][0] - 1 :]  # fmt: skip


def test_build_episodes_reads_up_to_run_date(tmp_path, silver):
    lake = lake_from(tmp_path / "lake")
    day = silver.with_columns(d=pl.col("ts").dt.date())
    for (d,), part in day.partition_by("d", as_dict=True).items():
        lake.write_partition("silver/interactions", part.drop("d"), dt=d)
    run_date = day["d"].sort()[day.height // 2]
    res = build_episodes(lake, run_date, Settings(storage=str(tmp_path / "lake"), seed=1))
    assert lake.exists("gold/episodes", run_date=run_date)
    assert res.n_interactions == read_silver(lake, run_date).height < silver.height
    eps = lake.read_partition("gold/episodes", run_date=run_date)
    assert eps.height == res.n_episodes == sum(res.episodes_per_size.values())
    assert eps["query_ts"].list.max().max() < dt.datetime.combine(
        run_date + dt.timedelta(days=1), dt.time(), dt.UTC
    )
    again = build_episodes(lake, run_date, Settings(storage=str(tmp_path / "lake"), seed=1))
    assert again == res and lake.read_partition("gold/episodes", run_date=run_date).equals(eps)
