"""Publish: the recommendations contract, atomic replace, plain-Parquet readers, and the
publish stage (staging -> gold/recommendations + gold/runs + warehouse) on ML-100K lists."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from schemas.recommendations import RECOMMENDATIONS as CONTRACT
from schemas.tables import RECOMMENDATIONS, RUNS, STAGING_RECOMMENDATIONS
from tasks.config import Settings
from tasks.lake.storage import Lake
from tasks.serve.gate import ChampionDecision, SegmentGate
from tasks.serve.publish import publish_stage, write_recommendations
from tasks.serve.score import STAGED, ScoreStageResult
from tasks.serve.warehouse import connect_warehouse, warehouse_path

K = 10
DAY1, DAY2 = dt.date(1998, 4, 22), dt.date(1998, 4, 23)
NOW = dt.datetime(1998, 4, 23, 3, 0, tzinfo=dt.UTC)


@pytest.fixture()
def lake(lake_root: str) -> Lake:
    return Lake(lake_root)


def test_write_recommendations_contract(lake: Lake, lists: dict[int, pl.DataFrame]) -> None:
    path = write_recommendations(lake, DAY2, lists[1], "ease", "v1", NOW.replace(tzinfo=None))

    assert path == lake.partition_file(RECOMMENDATIONS, run_date=DAY2)
    table = pq.read_table(path)
    assert table.schema.equals(CONTRACT)
    assert table.num_rows == 943 * K
    frame = pl.from_arrow(table)
    assert frame["run_date"].unique().to_list() == [DAY2]  # the date is inside the file too
    assert frame["rank"].min() == 1 and frame["rank"].max() == K
    assert frame["model"].unique().to_list() == ["ease"]
    assert frame["model_version"].unique().to_list() == ["v1"]
    assert frame["generated_at"].unique().to_list() == [NOW]  # naive taken as UTC
    assert set(frame["user_segment"]) <= {"new", "warm", "cold_zero_shot"}
    assert frame["user_id"].is_sorted()  # sorted by user: row-group pruning for lookups
    # The rows are the lists, unchanged.
    mine = frame.select("user_id", "rank", "item_id").sort("user_id", "rank")
    assert mine.equals(lists[1].select("user_id", "rank", "item_id").sort("user_id", "rank"))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda f: f.drop("user_segment"), "lack columns"),
        (lambda f: f.filter(pl.col("rank") != 3), "ranks are not"),
        (lambda f: f.with_columns(pl.col("rank") + 1), "ranks are not"),
        (lambda f: f.with_columns(item_id=pl.lit("50")), "item twice"),
        (lambda f: f.with_columns(pl.col("user_id").replace("1", None)), "null"),
        (lambda f: f.with_columns(pl.col("score").replace(f["score"][0], float("nan"))), "finite"),
        (lambda f: f.with_columns(user_segment=pl.lit("vip")), "user_segment"),
    ],
    ids=["missing-col", "rank-gap", "rank-shift", "dup-item", "null-user", "nan", "segment"],
)
def test_write_recommendations_rejects_broken_lists(
    lake: Lake, lists: dict[int, pl.DataFrame], breakage, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_recommendations(lake, DAY1, breakage(lists[1]), "ease", "v1", NOW)
    assert not lake.exists(RECOMMENDATIONS, run_date=DAY1)


def test_rerun_replaces_the_partition_whole(lake: Lake, lists: dict[int, pl.DataFrame]) -> None:
    write_recommendations(lake, DAY1, lists[1], "ease", "v1", NOW)
    write_recommendations(lake, DAY1, lists[2].head(5 * K), "metalearner", "v2", NOW)

    folder = Path(lake.path(RECOMMENDATIONS, run_date=DAY1))
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]  # no temp left
    frame = lake.read_partition(RECOMMENDATIONS, run_date=DAY1)
    assert frame.height == 5 * K and frame["model"].unique().to_list() == ["metalearner"]


def test_pyarrow_dataset_reads_the_table_without_duckdb(
    lake: Lake, lists: dict[int, pl.DataFrame]
) -> None:
    write_recommendations(lake, DAY1, lists[1], "ease", "v1", NOW)
    write_recommendations(lake, DAY2, lists[2], "metalearner", "v2", NOW)
    part = ds.partitioning(pa.schema([("run_date", pa.date32())]), flavor="hive")
    dataset = ds.dataset(lake.path(RECOMMENDATIONS), format="parquet", partitioning=part)
    table = dataset.to_table(filter=ds.field("run_date") == DAY2)
    assert table.schema.field("run_date").type == pa.date32()
    assert table.num_rows == 943 * K
    assert set(table.column("model").to_pylist()) == {"metalearner"}


def test_publish_stage(lake: Lake, lists: dict[int, pl.DataFrame]) -> None:
    """Staged lists of two models: the gate's model is published, the night's staging is
    gone, the run is recorded with the stage timings, and DuckDB serves the table."""
    staged = lists[1].with_columns(model=pl.lit("ease"), model_version=pl.lit("ease@1998-04-23"))
    lake.write_partition(STAGING_RECOMMENDATIONS, staged, run_date=DAY2, model=STAGED)
    scored = ScoreStageResult(
        run_date=DAY2, staged_path="", model="ease", model_version="ease@1998-04-23",
        users=943, rows=943 * K, segments={}, users_by_model={"ease": 943},
        users_by_gate_segment={},
    )  # fmt: skip
    decision = ChampionDecision("ease", False, "metalearner does not beat ease", "ndcg@10", 0.1)
    started = dt.datetime(1998, 4, 24, 1, tzinfo=dt.UTC)
    timings = {"ingest_validate": 1.5, "train": 20.0, "score": 2.0}

    result = publish_stage(lake, DAY2, Settings(storage=lake.root, top_k=K), scored, decision,
                           timings, started_at=started)  # fmt: skip

    assert result.path == lake.partition_file(RECOMMENDATIONS, run_date=DAY2)
    assert (result.model, result.rows, result.users) == ("ease", 943 * K, 943)
    assert result.status == "published_baseline"
    assert result.warehouse == warehouse_path(lake)
    assert len(result.preview) == 3 * K and result.preview[0]["rank"] == 1
    published = lake.read_partition(RECOMMENDATIONS, run_date=DAY2)
    assert published["model"].unique().to_list() == ["ease"]
    assert published["model_version"].unique().to_list() == ["ease@1998-04-23"]
    assert published.height == 943 * K
    assert not Path(lake.path(STAGING_RECOMMENDATIONS, run_date=DAY2)).exists()
    run = lake.read_partition(RUNS, stage="nightly", dt=DAY2).row(0, named=True)
    assert run["status"] == "published_baseline" and run["published_from_candidate"] is False
    assert run["published_model"] == "ease" and run["gate_reason"] == decision.reason
    assert (run["top_k"], run["users_scored"], run["rows_published"]) == (K, 943, 943 * K)
    assert (run["seconds_train"], run["seconds_score"], run["seconds_evaluate"]) == (
        20.0, 2.0, None,
    )  # fmt: skip
    assert run["started_at"] == started and run["duration_seconds"] > 0
    with connect_warehouse(lake) as con:
        got = con.execute("SELECT stage, dt, run_date, status FROM runs").fetchall()
        assert got == [("nightly", DAY2, DAY2, "published_baseline")]
        assert con.execute("SELECT count(*) FROM recommendations_latest").fetchall() == [(943 * K,)]


def test_publish_stage_with_an_unknown_stage_timing_publishes_nothing(
    lake: Lake, lists: dict[int, pl.DataFrame]
) -> None:
    staged = lists[1].with_columns(model=pl.lit("ease"), model_version=pl.lit("ease@1998-04-23"))
    lake.write_partition(STAGING_RECOMMENDATIONS, staged, run_date=DAY2, model=STAGED)
    scored = ScoreStageResult(DAY2, "", "ease", "ease@1998-04-23", 943, 943 * K, {}, {}, {})
    decision = ChampionDecision("ease", False, "reason", "ndcg@10", 0.1)
    with pytest.raises(ValueError, match="unknown stages"):
        publish_stage(lake, DAY2, Settings(storage=lake.root, top_k=K), scored, decision,
                      {"ingest": 1.0})  # fmt: skip
    assert not lake.exists(RECOMMENDATIONS, run_date=DAY2)
    assert lake.exists(STAGING_RECOMMENDATIONS, run_date=DAY2, model=STAGED)


def test_publish_stage_keeps_each_rows_model_from_the_per_segment_gate(
    lake: Lake, lists: dict[int, pl.DataFrame]
) -> None:
    """Lists composed by the score stage from two models: each published row names the
    model that served its user; the run record names both and the per-segment reasons."""
    users = sorted(lists[1]["user_id"].unique())
    half = set(users[: len(users) // 2])
    staged = (
        lists[1]
        .with_columns(
            model=pl.when(pl.col("user_id").is_in(half))
            .then(pl.lit("metalearner"))
            .otherwise(pl.lit("recent_popular_30d"))
        )
        .with_columns(model_version=pl.col("model") + "@1998-04-23")
    )
    lake.write_partition(STAGING_RECOMMENDATIONS, staged, run_date=DAY2, model=STAGED)
    scored = ScoreStageResult(DAY2, "", "metalearner+recent_popular_30d", "v", len(users),
                              staged.height, {}, {}, {})  # fmt: skip
    pooled = ChampionDecision("recent_popular_30d", False, "pooled reason", "ndcg@10", 0.2)
    gate = SegmentGate(pooled, {"n3_5": "metalearner"}, {"n3_5": "metalearner wins n3_5"})

    result = publish_stage(lake, DAY2, Settings(storage=lake.root, top_k=K), scored, gate, {})

    published = lake.read_partition(RECOMMENDATIONS, run_date=DAY2)
    got = published.group_by("model").agg(pl.col("user_id").n_unique()).sort("model")
    assert got.rows() == [
        ("metalearner", len(half)),
        ("recent_popular_30d", len(users) - len(half)),
    ]
    assert set(published["model_version"]) == {"metalearner@1998-04-23",
                                               "recent_popular_30d@1998-04-23"}  # fmt: skip
    assert result.status == "published"  # the candidate serves a segment
    run = lake.read_partition(RUNS, stage="nightly", dt=DAY2).row(0, named=True)
    assert run["published_model"] == "metalearner+recent_popular_30d"
    assert run["champion_model"] == "recent_popular_30d" and run["published_from_candidate"]
    assert run["gate_reason"] == "n3_5: metalearner wins n3_5; pooled: pooled reason"
