"""`metarec demo`: land the bundled MovieLens sample, run its last nights, show the result.

Composition only: import (tasks.sources.movielens) -> backfill flow over the last `days`
dates of the sample -> a short report read back from the published tables with DuckDB.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from flows.backfill import backfill_flow
from schemas import tables
from tasks.config import Settings
from tasks.lake.storage import lake_from
from tasks.learn.side_tables import read_side_tables
from tasks.serve.warehouse import connect_warehouse
from tasks.sources.movielens import bundled_sample_path, import_movielens


def run_demo(settings: Settings, days: int = 1, sample: Path | None = None) -> int:
    """Run the demo end to end on the bundled sample (or another MovieLens folder);
    returns the process exit code."""
    lake = lake_from(settings.storage)
    source = sample or bundled_sample_path()
    print(f"[demo] landing the MovieLens sample {source} into {lake.root}")
    imported = import_movielens(source, lake)
    print(f"[demo] {imported}")
    end = imported.last_date
    start = end - dt.timedelta(days=days - 1)
    print(
        f"[demo] backfill {start} .. {end}: ingest, validate, episodes, train, evaluate, "
        "score, publish for each night"
    )
    state = backfill_flow(
        start=start,
        end=end,
        storage=lake.root,
        top_k=settings.top_k,
        return_state=True,
    )
    if not state.is_completed():
        print("[demo] the backfill did not complete; see the log above", flush=True)
        return 1
    _report(lake, connect_warehouse(lake))
    return 0


def _report(lake, con) -> None:
    print("\n=== what was produced ===")
    for table in (
        tables.SILVER,
        tables.QUARANTINE,
        tables.EPISODES,
        tables.RECOMMENDATIONS,
        tables.METRICS,
        tables.MODELS,
    ):
        print(f"  {lake.path(table)}  ({len(lake.partitions(table))} partitions)")
    print(f"  {lake.base.rstrip('/')}/warehouse.duckdb  (DuckDB views for SQL)")

    print("\n=== the nightly runs ===")
    runs = con.sql(
        "SELECT dt AS run_date, status, published_model, gate_reason FROM runs "
        "WHERE stage = 'nightly' ORDER BY dt"
    ).pl()
    with pl.Config(fmt_str_lengths=200, tbl_width_chars=200):
        print(runs.select("run_date", "status", "published_model"))
        print(f"gate, last night: {runs['gate_reason'][-1]}")

    latest = con.sql("SELECT max(run_date) FROM recommendations_latest").fetchall()[0][0]
    user = con.sql(
        "SELECT user_id FROM recommendations_latest WHERE user_segment = 'warm' "
        "ORDER BY user_id LIMIT 1"
    ).fetchall()[0][0]
    print(f"\n=== recommendations for user {user} on {latest} ===")
    recs = con.sql(
        "SELECT rank, item_id, round(score, 3) AS score, model FROM recommendations_latest "
        "WHERE user_id = ? ORDER BY rank LIMIT 10",
        params=[user],
    ).pl()
    titles = _titles(lake)
    if titles is not None:
        recs = recs.join(titles, on="item_id", how="left").select(
            "rank", "item_id", "title", "score", "model"
        )
    with pl.Config(tbl_rows=20, fmt_str_lengths=60):
        print(recs)

    print("\n=== evaluation on the holdout (all users; NDCG@10, Recall@20) ===")
    metrics = con.sql(
        "SELECT model, round(ndcg_at_10, 4) AS ndcg_at_10, round(recall_at_20, 4) AS recall_at_20,"
        " is_champion FROM metrics WHERE run_date = ? AND segment = 'all' ORDER BY ndcg_at_10 DESC",
        params=[latest],
    ).pl()
    with pl.Config(tbl_rows=20):
        print(metrics)

    print(f"""
=== query it yourself ===
  .venv/bin/metarec sql --storage {lake.root} -c \\
    "SELECT rank, item_id, score FROM recommendations_latest WHERE user_id = '{user}' ORDER BY rank"
  duckdb {lake.base.rstrip("/")}/warehouse.duckdb   (any DuckDB client; views read the Parquet)

=== watch it in the Prefect UI ===
  .venv/bin/metarec server --storage {lake.root}
      a Prefect server on 127.0.0.1:4200 (open http://127.0.0.1:4200), a CPU and a GPU work
      pool with one worker each, and the nightly deployment on its schedule; Ctrl-C stops it.
  Runs made with PREFECT_API_URL=http://127.0.0.1:4200/api appear there too (docs/operations.md).
""")


def _titles(lake) -> pl.DataFrame | None:
    items = read_side_tables(lake).items
    if items is None or "title" not in items.columns:
        return None
    return items.select(pl.col("item_id").cast(pl.String), "title")
