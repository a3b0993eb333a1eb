"""Publish: the nightly top-K table, the nightly run record, and the SQL warehouse.

Writes `gold/recommendations/run_date=D/` (contract: schemas.recommendations),
`gold/runs/stage=nightly/dt=D/` (one row per nightly run, NIGHTLY_RUN below) and
`warehouse.duckdb` at the lake root: views over gold/recommendations, gold/metrics,
gold/runs and quarantine/interactions, read live from the Parquet files.

The warehouse holds views only, so publishing a partition never opens it: the file is
rebuilt (into a temporary file renamed over it) only when it is missing, unreadable, or
records another schema version or lake root. Readers holding the old file keep reading
it, and a nightly never waits for a reader's lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from schemas.recommendations import RECOMMENDATIONS, SEGMENTS, VERSION
from tasks.config import Settings
from tasks.lake.dates import parse_date
from tasks.lake.storage import Lake

log = logging.getLogger(__name__)

RECOMMENDATIONS_TABLE = "gold/recommendations"
RUNS_TABLE = "gold/runs"
METRICS_TABLE = "gold/metrics"
QUARANTINE_TABLE = "quarantine/interactions"
WAREHOUSE_FILE = "warehouse.duckdb"
# Offline DuckDB: Parquet/JSON are built in; never try to download an extension.
DUCKDB_CONFIG = {
    "autoinstall_known_extensions": False,
    "extension_directory": str(Path(tempfile.gettempdir()) / "metarec-duckdb-extensions"),
}

# One row per nightly run (gold/runs/stage=nightly/dt=D/); stage timings are added as
# `seconds_<stage>` columns. Candidate for schemas/ (see the report to the lead).
NIGHTLY_RUN = pa.schema(
    [
        ("run_date", pa.date32()),
        ("status", pa.string()),  # published | published_baseline | failed | ...
        ("champion_model", pa.string()),  # best model on the holdout
        ("published_model", pa.string()),  # the model whose table was published
        ("published_from_candidate", pa.bool_()),  # False: the gate fell back to a baseline
        ("gate_reason", pa.string()),
        ("model_version", pa.string()),
        ("top_k", pa.int32()),
        ("users_scored", pa.int64()),
        ("rows_published", pa.int64()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("duration_seconds", pa.float64()),
        ("error", pa.string()),
    ]
)
_REQUIRED_RUN_KEYS = ("status", "started_at", "finished_at")

_DUCKDB_TYPES = {
    pa.date32(): "DATE",
    pa.string(): "VARCHAR",
    pa.int16(): "SMALLINT",
    pa.float32(): "FLOAT",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


# ---- gold/recommendations ---------------------------------------------------------
def write_recommendations(
    lake: Lake,
    run_date: str | dt.date,
    recs: pl.DataFrame,
    model_name: str,
    model_version: str,
    generated_at: dt.datetime,
) -> str:
    """Write (or replace) the top-K partition of `run_date`; returns the file path.

    Args:
        lake: the lake.
        run_date: the nightly date D (also stored as a column inside the file).
        recs: user_id, rank, item_id, score, user_segment (from tasks.score.recommend).
        model_name: the model whose scores these are (the `model` column).
        model_version: its version (e.g. the checkpoint's run date or hash).
        generated_at: when the lists were computed; naive datetimes are taken as UTC.

    Raises:
        ValueError: when `recs` breaks the contract (missing columns, nulls, ranks not
            1..n per user, an item twice in a list, a non-finite score, an unknown segment).
    """
    day = parse_date(run_date)
    table = _recommendations_table(day, recs, model_name, model_version, generated_at)
    return lake.write_partition(RECOMMENDATIONS_TABLE, table, run_date=day)


def _recommendations_table(
    day: dt.date, recs: pl.DataFrame, model: str, version: str, generated_at: dt.datetime
) -> pa.Table:
    """Check `recs` against the contract and return it typed, ordered and sorted."""
    needed = ("user_id", "rank", "item_id", "score", "user_segment")
    missing = [c for c in needed if c not in recs.columns]
    if missing:
        raise ValueError(f"recommendations lack columns {missing}")
    if not model or not version:
        raise ValueError("model name and model version must be non-empty")
    _check_lists(recs)
    when = generated_at.replace(tzinfo=dt.UTC) if generated_at.tzinfo is None else generated_at
    frame = (
        recs.lazy()
        .select(
            pl.lit(day, pl.Date).alias("run_date"),
            pl.col("user_id").cast(pl.String),
            pl.col("rank").cast(pl.Int16, strict=True),
            pl.col("item_id").cast(pl.String),
            pl.col("score").cast(pl.Float32),
            pl.lit(model, pl.String).alias("model"),
            pl.lit(version, pl.String).alias("model_version"),
            pl.col("user_segment").cast(pl.String),
            pl.lit(when.astimezone(dt.UTC), pl.Datetime("us", "UTC")).alias("generated_at"),
        )
        # Sorted by user: Parquet min/max statistics then let a one-user lookup skip most
        # row groups.
        .sort("user_id", "rank")
        .collect()
    )
    table = frame.to_arrow().cast(RECOMMENDATIONS).replace_schema_metadata(None)
    if not table.schema.equals(RECOMMENDATIONS):
        raise ValueError(f"schema {table.schema} is not the contract {RECOMMENDATIONS}")
    return table


def _check_lists(recs: pl.DataFrame) -> None:
    """Raise ValueError unless every list is ranked 1..n without repeats, nulls or NaNs."""
    nulls = {c: n for c, n in recs.null_count().row(0, named=True).items() if n}
    if nulls:
        raise ValueError(f"null values in recommendations: {nulls}")
    if recs.height == 0:
        return
    per_user = recs.group_by("user_id").agg(
        pl.len().alias("n"),
        pl.col("rank").min().alias("lo"),
        pl.col("rank").max().alias("hi"),
        pl.col("rank").n_unique().alias("ranks"),
        pl.col("item_id").n_unique().alias("items"),
    )
    bad = per_user.filter(
        (pl.col("lo") != 1) | (pl.col("hi") != pl.col("n")) | (pl.col("ranks") != pl.col("n"))
    )
    if bad.height:
        raise ValueError(f"ranks are not 1..n for {bad.height} users, e.g. {bad.row(0)}")
    repeats = per_user.filter(pl.col("items") != pl.col("n"))
    if repeats.height:
        raise ValueError(f"{repeats.height} users have an item twice, e.g. {repeats.row(0)}")
    if not recs.select(pl.col("score").cast(pl.Float64).is_finite().all()).item():
        raise ValueError("non-finite scores in recommendations")
    unknown = recs.filter(~pl.col("user_segment").is_in(list(SEGMENTS)))
    if unknown.height:
        raise ValueError(
            f"unknown user_segment {unknown['user_segment'].unique().to_list()[:5]}; "
            f"expected one of {SEGMENTS}"
        )


# ---- gold/runs --------------------------------------------------------------------
def record_run(lake: Lake, run_date: str | dt.date, record: Mapping[str, Any]) -> str:
    """Write the one-row record of the nightly run of `run_date`; returns the file path.

    `record` holds the NIGHTLY_RUN fields (status, started_at and finished_at required;
    run_date and duration_seconds are filled in) plus an optional `stage_seconds` mapping
    of stage name -> seconds, stored as `seconds_<stage>` columns. Unknown keys raise
    ValueError, so a typo never silently drops a field.
    """
    day = parse_date(run_date)
    return lake.write_partition(RUNS_TABLE, _run_table(day, record), stage="nightly", dt=day)


def _run_table(day: dt.date, record: Mapping[str, Any]) -> pa.Table:
    known = set(NIGHTLY_RUN.names) | {"stage_seconds"}
    unknown = sorted(set(record) - known)
    if unknown:
        raise ValueError(f"unknown nightly run fields {unknown}; known: {sorted(known)}")
    missing = [key for key in _REQUIRED_RUN_KEYS if record.get(key) is None]
    if missing:
        raise ValueError(f"nightly run record lacks {missing}")
    row = {name: record.get(name) for name in NIGHTLY_RUN.names}
    for key in ("started_at", "finished_at"):
        stamp = row[key]
        row[key] = stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp
    row["run_date"] = day
    row["duration_seconds"] = (row["finished_at"] - row["started_at"]).total_seconds()
    fields = list(NIGHTLY_RUN)
    for stage, seconds in dict(record.get("stage_seconds") or {}).items():
        if not str(stage).isidentifier() or not str(stage).islower():
            raise ValueError(f"stage name must be a lower-case identifier: {stage!r}")
        row[f"seconds_{stage}"] = float(seconds)
        fields.append(pa.field(f"seconds_{stage}", pa.float64()))
    schema = pa.schema(fields)
    return pa.Table.from_pylist([row], schema=schema)


# ---- warehouse.duckdb ---------------------------------------------------------------
def warehouse_path(lake: Lake) -> str:
    """Path of `warehouse.duckdb` at the root of a local lake."""
    return f"{lake.base.rstrip('/')}/{WAREHOUSE_FILE}"


def ensure_warehouse(lake: Lake) -> str | None:
    """Make sure `warehouse.duckdb` serves the current views; returns its path.

    Views: `recommendations` (all run_dates), `recommendations_latest` (newest run_date),
    `metrics`, `runs` (with its `stage` and `dt` keys), `quarantine_summary` (rows by dt
    and reason); table `metarec_schema` (schema_version, lake_root, built_at). Views read
    the Parquet files at query time and work while a table is still empty. Non-local
    lakes are skipped (None): DuckDB there needs httpfs credentials, which this pipeline
    does not manage.
    """
    if not lake.is_local:
        log.warning(
            "warehouse.duckdb skipped: lake %s is not local; query its Parquet with DuckDB "
            "httpfs or pyarrow.dataset instead",
            lake.root,
        )
        return None
    target = warehouse_path(lake)
    root = lake.base.rstrip("/")
    if _served_schema(target) == (VERSION, root):
        return target
    tmp = f"{root}/.{WAREHOUSE_FILE}.{uuid.uuid4().hex}.tmp"
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(tmp, config=DUCKDB_CONFIG)
        try:
            for statement in _warehouse_ddl(lake):
                con.execute(statement)
            con.execute(
                "CREATE TABLE metarec_schema AS SELECT ?::VARCHAR AS schema_version, "
                "?::VARCHAR AS lake_root, now() AS built_at",
                [VERSION, root],
            )
        finally:
            con.close()
        # A rename, atomic on one filesystem: readers see the old file or the new one.
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, f"{tmp}.wal"):
            if os.path.exists(leftover):
                os.remove(leftover)
    log.info("warehouse.duckdb built at %s (schema version %s)", target, VERSION)
    return target


def connect_warehouse(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A read-only DuckDB connection to the lake's warehouse (built first when missing)."""
    path = ensure_warehouse(lake)
    if path is None:
        raise ValueError(f"no warehouse for non-local lake {lake.root}")
    return duckdb.connect(path, read_only=True, config=DUCKDB_CONFIG)


def _served_schema(target: str) -> tuple[str, str] | None:
    """(schema_version, lake_root) recorded in an existing warehouse, else None."""
    if not os.path.exists(target):
        return None
    try:
        con = duckdb.connect(target, read_only=True, config=DUCKDB_CONFIG)
    except duckdb.Error as exc:  # locked by a read-write session, or not a DuckDB file
        log.warning("warehouse.duckdb unreadable (%s); rebuilding it", exc)
        return None
    try:
        rows = con.execute("SELECT schema_version, lake_root FROM metarec_schema").fetchall()
    except duckdb.Error:
        return None
    finally:
        con.close()
    return (rows[0][0], rows[0][1]) if len(rows) == 1 else None


def _warehouse_ddl(lake: Lake) -> list[str]:
    """CREATE VIEW statements; paths come from the Lake and are quoted as SQL literals."""
    recs_glob = _literal(f"{lake.path(RECOMMENDATIONS_TABLE)}/run_date=*/*.parquet")
    metrics_glob = _literal(f"{lake.path(METRICS_TABLE)}/run_date=*/*.parquet")
    runs_glob = _literal(f"{lake.path(RUNS_TABLE)}/stage=*/dt=*/*.parquet")
    quarantine_glob = _literal(f"{lake.path(QUARANTINE_TABLE)}/dt=*/*.parquet")
    columns = ", ".join(RECOMMENDATIONS.names)
    typed_empty = ", ".join(f"NULL::{_DUCKDB_TYPES[f.type]} AS {f.name}" for f in RECOMMENDATIONS)
    return [
        f"""CREATE VIEW recommendations AS
        SELECT {columns} FROM (
            SELECT {typed_empty} WHERE false
            UNION ALL BY NAME
            {_scan(recs_glob, "{'run_date': 'DATE'}")}
        )""",
        # The newest date is bound (its files listed) before the rows are: a partition
        # renamed into place in between is then only in the second listing, which still
        # holds the newest date. The WHERE-subquery form lists the rows first and can
        # return nothing at all (measured: 40 of 146 reads during publishes).
        """CREATE VIEW recommendations_latest AS
        SELECT r.* FROM (SELECT max(run_date) AS newest FROM recommendations) AS latest
        JOIN recommendations AS r ON r.run_date = latest.newest""",
        f"""CREATE VIEW metrics AS
        SELECT COLUMNS(lambda c: c <> 'empty') FROM (
            SELECT NULL::DATE AS run_date WHERE false
            UNION ALL BY NAME
            {_scan(metrics_glob, "{'run_date': 'DATE'}")}
        )""",
        f"""CREATE VIEW runs AS
        SELECT COLUMNS(lambda c: c <> 'empty') FROM (
            SELECT NULL::VARCHAR AS stage, NULL::DATE AS dt WHERE false
            UNION ALL BY NAME
            {_scan(runs_glob, "{'stage': 'VARCHAR', 'dt': 'DATE'}")}
        )""",
        f"""CREATE VIEW quarantine_summary AS
        SELECT dt, reason, count(*) AS rows FROM (
            SELECT NULL::DATE AS dt, NULL::VARCHAR AS reason WHERE false
            UNION ALL BY NAME
            {_scan(quarantine_glob, "{'dt': 'DATE'}")}
        )
        GROUP BY dt, reason""",
    ]


def _scan(glob_literal: str, hive_types: str) -> str:
    # allow_empty: no files yet gives an empty relation (one `empty` column) instead of an
    # error; the typed empty relation it is unioned with supplies the real columns then.
    return (
        f"SELECT * FROM read_parquet({glob_literal}, hive_partitioning = true, "
        f"hive_types = {hive_types}, union_by_name = true, allow_empty = true)"
    )


def _literal(text: str) -> str:
    """A SQL string literal (DuckDB cannot bind parameters inside CREATE VIEW)."""
    if "\x00" in text:
        raise ValueError("NUL character in a path")
    return "'" + text.replace("'", "''") + "'"


# ---- the nightly publish stage ---------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    """What the nightly publish stage made visible (small: rendered as artifacts)."""

    run_date: dt.date
    path: str
    url: str
    model: str
    model_version: str
    rows: int
    users: int
    warehouse: str | None
    preview: list[dict]


def publish_stage(
    lake: Lake,
    run_date: str | dt.date,
    settings: Settings,
    scored: Any,
    decision: Any,
    stage_seconds: Mapping[str, float],
    started_at: dt.datetime | None = None,
) -> PublishResult:
    """Check the staged table against the contract, publish it atomically as
    `gold/recommendations/run_date=D/`, make sure the warehouse views exist, and record
    the run in `gold/runs/`. `scored` is a tasks.score.ScoreStageResult and `decision` a
    tasks.evaluate.ChampionDecision."""
    from tasks.serve.score import STAGING_TABLE

    day = parse_date(run_date)
    staged = lake.read_partition(STAGING_TABLE, run_date=day, model=scored.model)
    now = dt.datetime.now(dt.UTC)
    path = write_recommendations(lake, day, staged, scored.model, scored.model_version, now)
    lake.delete_partition(STAGING_TABLE, run_date=day)  # every model staged that night
    warehouse = ensure_warehouse(lake)
    record_run(
        lake,
        day,
        {
            "status": "published" if decision.published_from_candidate else "published_baseline",
            "champion_model": decision.model,
            "published_model": scored.model,
            "published_from_candidate": decision.published_from_candidate,
            "gate_reason": decision.reason,
            "model_version": scored.model_version,
            "top_k": settings.top_k,
            "users_scored": scored.users,
            "rows_published": staged.height,
            "started_at": started_at or now,
            "finished_at": dt.datetime.now(dt.UTC),
            "stage_seconds": dict(stage_seconds),
        },
    )
    preview = staged.sort("user_id", "rank").head(3 * settings.top_k)
    return PublishResult(
        run_date=day,
        path=path,
        url=lake.url(RECOMMENDATIONS_TABLE, run_date=day),
        model=scored.model,
        model_version=scored.model_version,
        rows=staged.height,
        users=scored.users,
        warehouse=warehouse,
        preview=[
            {k: (str(v) if not isinstance(v, (int, float)) else v) for k, v in r.items()}
            for r in preview.to_dicts()
        ],
    )
