"""The DuckDB views: also while tables are empty, while readers hold the file, while
publishes happen, and the analyst/service queries of docs/sql.md, on ML-100K lists."""

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

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.serve.warehouse as warehouse
from schemas.interactions import QUARANTINE as QUARANTINE_SCHEMA
from schemas.runs import RUNS as RUNS_SCHEMA
from schemas.runs import runs_row
from schemas.tables import METRICS, QUARANTINE, RUNS
from tasks.lake.storage import Lake
from tasks.serve.publish import write_recommendations
from tasks.serve.runs import record_run
from tasks.serve.warehouse import (
    DUCKDB_CONFIG,
    connect_warehouse,
    ensure_warehouse,
    warehouse_path,
)

K = 10
DAY1, DAY2 = dt.date(1998, 4, 22), dt.date(1998, 4, 23)
NOW = dt.datetime(1998, 4, 23, 3, 0, tzinfo=dt.UTC)
START = dt.datetime(1998, 4, 23, 1, tzinfo=dt.UTC)
SQL_DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"


@pytest.fixture()
def lake(lake_root: str) -> Lake:
    return Lake(lake_root)


def _publish_two_days(lake: Lake, lists: dict[int, pl.DataFrame]) -> None:
    write_recommendations(lake, DAY1, lists[1], "ease", "v1", NOW)
    write_recommendations(lake, DAY2, lists[2], "metalearner", "v2", NOW)


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
        # `runs` has its keys and every column of the one gold/runs schema before any run.
        runs = [(c[0], c[1]) for c in con.execute("DESCRIBE runs").fetchall()]
        assert runs[:3] == [("stage", "VARCHAR"), ("dt", "DATE"), ("run_date", "DATE")]
        assert [name for name, _ in runs[2:]] == RUNS_SCHEMA.names
        assert ("seconds_train", "DOUBLE") in runs and ("top_k", "INTEGER") in runs
        assert con.execute("SELECT schema_version FROM metarec_schema").fetchall() == [("1",)]


def test_views_over_published_data(lake: Lake, lists: dict[int, pl.DataFrame]) -> None:
    ensure_warehouse(lake)  # built while everything is empty: views must pick data up later
    _publish_two_days(lake, lists)
    rejected = [{"user_id": u, "reason": r} for u, r in
                (("1", "null_id"), ("2", "null_id"), ("3", "future_ts"))]  # fmt: skip
    quarantine = pa.Table.from_pylist(rejected, schema=QUARANTINE_SCHEMA)
    lake.write_partition(QUARANTINE, quarantine, dt=DAY2)
    metrics = pl.DataFrame({"model": ["ease", "metalearner"], "ndcg_at_10": [0.03, 0.04]})
    lake.write_partition(METRICS, metrics, run_date=DAY2)
    validate = runs_row({"run_date": DAY2, "status": "ok", "raw_rows": 100, "silver_rows": 97})
    lake.write_partition(RUNS, validate, stage="validate", dt=DAY2)
    record_run(lake, DAY2, {"status": "published", "started_at": START, "finished_at": START})

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
        runs = con.execute(
            "SELECT stage, dt, run_date, status, raw_rows, silver_rows FROM runs ORDER BY stage"
        ).fetchall()
        assert runs == [
            ("nightly", DAY2, DAY2, "published", None, None),
            ("validate", DAY2, DAY2, "ok", 100, 97),
        ]


def test_runs_view_still_shows_rows_written_before_the_one_schema(lake: Lake) -> None:
    """A lake from before schemas.runs: validate rows keyed `date`, with `validated_at`."""
    old = pa.table({"date": [DAY1], "status": ["ok"], "raw_rows": [5], "validated_at": [NOW]})
    path = lake.partition_file(RUNS, stage="validate", dt=DAY1)
    Path(path).parent.mkdir(parents=True)
    pq.write_table(old, path)
    record_run(lake, DAY2, {"status": "published", "started_at": START, "finished_at": START})
    with connect_warehouse(lake) as con:
        rows = con.execute(
            "SELECT stage, dt, run_date, date, status, raw_rows FROM runs ORDER BY dt"
        ).fetchall()
    assert rows == [
        ("validate", DAY1, None, DAY1, "ok", 5),
        ("nightly", DAY2, DAY2, None, "published", None),
    ]


def test_ensure_warehouse_rebuilds_only_on_version_change(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ensure_warehouse(lake)
    inode = os.stat(path).st_ino
    assert ensure_warehouse(lake) == path and os.stat(path).st_ino == inode  # untouched

    monkeypatch.setattr(warehouse, "VERSION", "2")
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
        monkeypatch.setattr(warehouse, "VERSION", "2")
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
    assert len(titles) == SQL_DOC.read_text().count("```sql")  # none escapes the parser


@pytest.mark.parametrize(
    ("title", "sql", "params"), _doc_queries(), ids=[q[0] for q in _doc_queries()]
)
def test_docs_sql_query_runs(
    lake: Lake, lists: dict[int, pl.DataFrame], title: str, sql: str, params: list
) -> None:
    _publish_two_days(lake, lists)
    record_run(lake, DAY2, {"status": "published", "started_at": START, "finished_at": START})
    with connect_warehouse(lake) as con:
        rows = con.execute(sql, params).fetchall()
    assert rows, f"{title}: no rows"
    # Not a row of nulls: every query reads real data from the published table or runs.
    assert any(v is not None for row in rows for v in row), f"{title}: only nulls"


def test_docs_sql_queries_run_on_an_empty_lake(lake: Lake) -> None:
    """Before the first night every documented query still binds (the views are typed)."""
    failed = {}
    with connect_warehouse(lake) as con:
        for title, sql, params in _doc_queries():
            try:
                con.execute(sql, params).fetchall()
            except duckdb.Error as exc:  # a Binder Error: the view lacks a column
                failed[title] = str(exc)
    assert not failed, failed
