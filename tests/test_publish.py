"""Publish: the recommendations contract, atomic replace, the run record, the DuckDB views
(also while tables are empty, while readers hold the file, while publishes happen), and
the analyst/service queries of docs/sql.md, on ML-100K top-K lists."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import tasks.publish as publish

from schemas.recommendations import RECOMMENDATIONS
from tasks.lake.storage import Lake
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender
from tasks.serve.publish import (
    DUCKDB_CONFIG,
    connect_warehouse,
    ensure_warehouse,
    record_run,
    warehouse_path,
    write_recommendations,
)
from tasks.serve.score import assign_segments, recommend

K = 10
DAY1, DAY2 = dt.date(1998, 4, 22), dt.date(1998, 4, 23)
NOW = dt.datetime(1998, 4, 23, 3, 0, tzinfo=dt.UTC)
SQL_DOC = Path(__file__).resolve().parents[1] / "docs" / "sql.md"


class _Random(Recommender):
    """Random item factors; a user is the sum of their items' factors."""

    name = "random"

    def __init__(self, item_ids: np.ndarray, seed: int) -> None:
        self._ids = item_ids
        self._f = np.random.default_rng(seed).standard_normal((len(item_ids), 8), np.float32)

    def fit(self, train, side, now) -> Self:
        return self

    def user_factors(self, history: Interactions, side: SideFeatures) -> np.ndarray:
        return np.asarray(history.csr(binary=True) @ self._f, np.float32)

    def item_factors(self) -> np.ndarray:
        return self._f

    @property
    def item_ids(self) -> np.ndarray:
        return self._ids

    def save(self, folder):
        raise NotImplementedError

    @classmethod
    def load(cls, folder):
        raise NotImplementedError


@pytest.fixture(scope="module")
def lists(shared_data: Path) -> dict[int, pl.DataFrame]:
    """Two nights of top-K lists for the 943 ML-100K users (different models: churn)."""
    frame = pl.read_csv(
        shared_data / "ml-100k" / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user_id", "item_id", "value", "ts"],
        schema_overrides={"user_id": pl.String, "item_id": pl.String},
    )
    hist = Interactions.from_frame(frame)
    segments = assign_segments(hist, DAY2)
    return {
        seed: recommend(_Random(hist.item_ids, seed), hist, SideFeatures(), K, segments, None)
        for seed in (1, 2)
    }


@pytest.fixture()
def lake(lake_root: str) -> Lake:
    return Lake(lake_root)


def _publish_two_days(lake: Lake, lists: dict[int, pl.DataFrame]) -> None:
    write_recommendations(lake, DAY1, lists[1], "ease", "v1", NOW)
    write_recommendations(lake, DAY2, lists[2], "metalearner", "v2", NOW)


def test_write_recommendations_contract(lake: Lake, lists: dict[int, pl.DataFrame]) -> None:
    path = write_recommendations(lake, DAY2, lists[1], "ease", "v1", NOW.replace(tzinfo=None))

    assert path == lake.partition_file("gold/recommendations", run_date=DAY2)
    table = pq.read_table(path)
    assert table.schema.equals(RECOMMENDATIONS)
    assert table.num_rows == 943 * K
    frame = pl.from_arrow(table)
    assert frame["run_date"].unique().to_list() == [DAY2]  # the date is inside the file too
    assert frame["rank"].min() == 1 and frame["rank"].max() == K
    assert frame["model"].unique().to_list() == ["ease"]
    assert frame["generated_at"].unique().to_list() == [NOW]  # naive taken as UTC
    assert set(frame["user_segment"]) <= {"new", "warm", "cold_zero_shot"}
    assert frame["user_id"].is_sorted()  # sorted by user: row-group pruning for lookups


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
    assert not lake.exists("gold/recommendations", run_date=DAY1)


def test_rerun_replaces_the_partition_whole(lake: Lake, lists: dict[int, pl.DataFrame]) -> None:
    write_recommendations(lake, DAY1, lists[1], "ease", "v1", NOW)
    write_recommendations(lake, DAY1, lists[2].head(5 * K), "metalearner", "v2", NOW)

    folder = Path(lake.path("gold/recommendations", run_date=DAY1))
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]  # no temp left
    frame = lake.read_partition("gold/recommendations", run_date=DAY1)
    assert frame.height == 5 * K and frame["model"].unique().to_list() == ["metalearner"]


def test_pyarrow_dataset_reads_the_table_without_duckdb(
    lake: Lake, lists: dict[int, pl.DataFrame]
) -> None:
    _publish_two_days(lake, lists)
    part = ds.partitioning(pa.schema([("run_date", pa.date32())]), flavor="hive")
    dataset = ds.dataset(lake.path("gold/recommendations"), format="parquet", partitioning=part)
    table = dataset.to_table(filter=ds.field("run_date") == DAY2)
    assert table.schema.field("run_date").type == pa.date32()
    assert table.num_rows == 943 * K
    assert set(table.column("model").to_pylist()) == {"metalearner"}


def test_record_run(lake: Lake) -> None:
    start = dt.datetime(2024, 5, 2, 1, 0, tzinfo=dt.UTC)
    record = {
        "status": "published_baseline",
        "champion_model": "metalearner",
        "published_model": "ease",
        "published_from_candidate": False,
        "gate_reason": "metalearner NDCG@10 0.031 <= most_popular 0.035",
        "users_scored": 943,
        "rows_published": 9430,
        "started_at": start,
        "finished_at": start + dt.timedelta(minutes=4),
        "stage_seconds": {"ingest": 2.5, "train": 180.0},
    }
    path = record_run(lake, "2024-05-02", record)

    assert path == lake.partition_file("gold/runs", stage="nightly", dt="2024-05-02")
    row = lake.read_partition("gold/runs", stage="nightly", dt="2024-05-02").row(0, named=True)
    assert row["run_date"] == dt.date(2024, 5, 2) and row["duration_seconds"] == 240.0
    assert row["seconds_train"] == 180.0 and row["published_from_candidate"] is False
    with pytest.raises(ValueError, match="unknown"):
        record_run(lake, "2024-05-02", {**record, "stauts": "typo"})
    with pytest.raises(ValueError, match="lacks"):
        record_run(lake, "2024-05-02", {"status": "failed"})


def test_views_on_an_empty_lake(lake: Lake) -> None:
    path = ensure_warehouse(lake)
    assert path == warehouse_path(lake) and os.path.exists(path)
    with connect_warehouse(lake) as con:
        for view in ("recommendations", "recommendations_latest", "metrics", "runs"):
            assert con.execute(f"SELECT count(*) FROM {view}").fetchall() == [(0,)]
        assert con.execute("SELECT * FROM quarantine_summary").fetchall() == []
        cols = con.execute("DESCRIBE recommendations").fetchall()
        assert [(c[0], c[1]) for c in cols][:3] == [
            ("run_date", "DATE"),
            ("user_id", "VARCHAR"),
            ("rank", "SMALLINT"),
        ]
        assert con.execute("SELECT schema_version FROM metarec_schema").fetchall() == [("1",)]


def test_views_over_published_data(lake: Lake, lists: dict[int, pl.DataFrame]) -> None:
    ensure_warehouse(lake)  # built while everything is empty: views must pick data up later
    _publish_two_days(lake, lists)
    quarantine = pl.DataFrame(
        {"user_id": ["1", "2", "3"], "reason": ["null_id", "null_id", "future_ts"]}
    )
    lake.write_partition("quarantine/interactions", quarantine, dt="1998-04-23")
    metrics = pl.DataFrame({"model": ["ease", "metalearner"], "ndcg_at_10": [0.03, 0.04]})
    lake.write_partition("gold/metrics", metrics, run_date="1998-04-23")
    validate = pl.DataFrame({"rows_raw": [100], "rows_silver": [97]})
    lake.write_partition("gold/runs", validate, stage="validate", dt="1998-04-23")
    start = dt.datetime(1998, 4, 23, 1, tzinfo=dt.UTC)
    record_run(lake, DAY2, {"status": "published", "started_at": start, "finished_at": start})

    with connect_warehouse(lake) as con:
        latest = con.execute(
            "SELECT run_date, model, count(*), count(DISTINCT user_id) "
            "FROM recommendations_latest GROUP BY ALL"
        ).fetchall()
        assert latest == [(DAY2, "metalearner", 943 * K, 943)]
        assert con.execute("SELECT count(*) FROM recommendations").fetchall() == [(2 * 943 * K,)]
        summary = con.execute("SELECT * FROM quarantine_summary ORDER BY reason").fetchall()
        assert summary == [(DAY2, "future_ts", 1), (DAY2, "null_id", 2)]
        assert con.execute(
            "SELECT run_date, max(ndcg_at_10) FROM metrics GROUP BY ALL"
        ).fetchall() == [(DAY2, 0.04)]
        runs = con.execute("SELECT stage, dt, status, rows_raw FROM runs ORDER BY stage").fetchall()
        assert runs == [("nightly", DAY2, "published", None), ("validate", DAY2, None, 100)]


def test_ensure_warehouse_rebuilds_only_on_version_change(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ensure_warehouse(lake)
    inode = os.stat(path).st_ino
    assert ensure_warehouse(lake) == path and os.stat(path).st_ino == inode  # untouched

    monkeypatch.setattr(publish, "VERSION", "2")
    ensure_warehouse(lake)
    assert os.stat(path).st_ino != inode  # replaced by a rename
    with connect_warehouse(lake) as con:
        assert con.execute("SELECT schema_version FROM metarec_schema").fetchall() == [("2",)]
    assert [p for p in os.listdir(lake.base) if p.endswith(".tmp")] == []


def test_a_reader_holding_the_file_does_not_block_the_nightly(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ensure_warehouse(lake)
    # Worst case: a session holding the file read-write (the DuckDB CLI's default).
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], config="
            + repr(DUCKDB_CONFIG)
            + "); c.execute('SELECT count(*) FROM recommendations').fetchall(); "
            "print('open', flush=True); time.sleep(60)",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        monkeypatch.setattr(publish, "VERSION", "2")
        assert ensure_warehouse(lake) == path  # returns at once instead of waiting
        con = duckdb.connect(path, read_only=True, config=DUCKDB_CONFIG)
        assert con.execute("SELECT schema_version FROM metarec_schema").fetchall() == [("2",)]
        con.close()
    finally:
        holder.kill()
        holder.wait()


def test_concurrent_reader_never_sees_half_a_partition(
    lake: Lake, lists: dict[int, pl.DataFrame]
) -> None:
    write_recommendations(lake, DAY1, lists[1], "ease", "v1", NOW)
    ensure_warehouse(lake)
    seen: list[tuple] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        con = duckdb.connect(warehouse_path(lake), read_only=True, config=DUCKDB_CONFIG)
        try:
            while not stop.is_set():
                seen.append(
                    con.execute(
                        "SELECT max(run_date), count(*), count(DISTINCT user_id) "
                        "FROM recommendations_latest"
                    ).fetchall()[0]
                )
        except BaseException as exc:  # any error fails the test
            errors.append(exc)
        finally:
            con.close()

    reader = threading.Thread(target=read)
    reader.start()
    published, deadline = 0, time.monotonic() + 60
    try:  # mostly new dates (the race of a latest view), some same-date replaces
        while published < 30 or (len(seen) < 40 and time.monotonic() < deadline):
            day = DAY1 + dt.timedelta(days=published - published // 4)
            write_recommendations(lake, day, lists[1 + published % 2], "m", "v", NOW)
            published += 1
    finally:
        stop.set()
        reader.join(30)
    assert not errors, errors
    assert len(seen) >= 40
    for newest, rows, users in seen:
        assert newest is not None and rows == users * K == 943 * K
    assert len({newest for newest, _, _ in seen}) >= 2  # new dates appeared meanwhile
    with connect_warehouse(lake) as con:
        newest = con.execute("SELECT DISTINCT run_date FROM recommendations_latest").fetchall()
    last = published - 1
    assert newest == [(DAY1 + dt.timedelta(days=last - last // 4),)]


def _doc_queries() -> list[tuple[str, str, list]]:
    """(title, sql, params) of every ```sql block of docs/sql.md (params from `-- params:`)."""
    text = SQL_DOC.read_text()
    blocks = re.findall(r"^### (.+?)\n.*?```sql\n(.*?)```", text, flags=re.S | re.M)
    out = []
    for title, sql in blocks:
        params = re.search(r"^-- params: (.*)$", sql, flags=re.M)
        out.append((title.strip(), sql, json.loads(params.group(1)) if params else []))
    return out


def test_docs_sql_has_queries() -> None:
    titles = [t for t, _, _ in _doc_queries()]
    assert len(titles) >= 4, titles


@pytest.mark.parametrize(
    ("title", "sql", "params"), _doc_queries(), ids=[q[0] for q in _doc_queries()]
)
def test_docs_sql_query_runs(
    lake: Lake, lists: dict[int, pl.DataFrame], title: str, sql: str, params: list
) -> None:
    _publish_two_days(lake, lists)
    start = dt.datetime(1998, 4, 23, 1, tzinfo=dt.UTC)
    record_run(lake, DAY2, {"status": "published", "started_at": start, "finished_at": start})
    with connect_warehouse(lake) as con:
        rows = con.execute(sql, params).fetchall()
    assert rows, f"{title}: no rows"
