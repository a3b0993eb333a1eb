"""warehouse.duckdb: SQL views over the lake's gold tables, for analysts and services.

Reads nothing at build time but the lake's layout; writes `warehouse.duckdb` at the lake
root: views over gold/recommendations, gold/metrics, gold/runs and quarantine/interactions,
which read the Parquet files live at query time (docs/sql.md).

The warehouse holds views only, so publishing a partition never opens it: the file is
rebuilt (into a temporary file renamed over it) only when it is missing, unreadable, or
records another schema version or lake root. Readers holding the old file keep reading
it, and a nightly never waits for a reader's lock.

Connections (`connect_warehouse`) are read-only and sandboxed: queries reach the files of
the four tables the views read and no other file of the machine (no COPY out of it, no
read_text of /etc, no ATTACH, no extension), and cannot undo that. `read_only_sql` also
refuses every statement but a query, so COPY ... TO cannot write into the lake either.
The warehouse is local only: DuckDB reads object stores through the httpfs extension,
which an offline machine cannot install.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa

from schemas.recommendations import VERSION
from schemas.tables import METRICS, QUARANTINE, RECOMMENDATIONS, RUNS
from tasks.lake.storage import Lake

log = logging.getLogger(__name__)
_QUERIES = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)

WAREHOUSE_FILE = "warehouse.duckdb"
# Offline DuckDB: Parquet/JSON are built in; never try to download an extension.
DUCKDB_CONFIG = {
    "autoinstall_known_extensions": False,
    "extension_directory": str(Path(tempfile.gettempdir()) / "metarec-duckdb-extensions"),
}

# Arrow -> DuckDB types of the declared columns, for the typed empty relations that give a
# view its columns while its table has no file yet.
_DUCKDB_TYPES = {
    pa.date32(): "DATE",
    pa.string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def warehouse_path(lake: Lake) -> str:
    """Path of `warehouse.duckdb` at the root of a local lake."""
    return f"{lake.base.rstrip('/')}/{WAREHOUSE_FILE}"


def ensure_warehouse(lake: Lake) -> str | None:
    """Make sure `warehouse.duckdb` serves the current views; returns its path.

    Views: `recommendations` (all run_dates), `recommendations_latest` (newest run_date),
    `metrics`, `runs` (the columns of schemas.runs plus its `stage` and `dt` keys),
    `quarantine_summary` (rows by dt and reason); table `metarec_schema` (schema_version,
    lake_root, built_at). Views read the Parquet files at query time and work while a
    table is still empty. Non-local lakes are skipped (None): DuckDB there needs httpfs
    credentials, which this pipeline does not manage.
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
    """A read-only, sandboxed DuckDB connection to the lake's warehouse (built first when
    missing); a ValueError for a lake on an object store."""
    path = ensure_warehouse(lake)
    if path is None:
        raise ValueError(local_only(lake))
    con = duckdb.connect(path, read_only=True, config=DUCKDB_CONFIG)
    # Only the folders the views read; set in this order (DuckDB refuses to widen the
    # allowed directories once external access is off), then locked so no query can
    # SET them back.
    folders = [f"{lake.path(t).rstrip('/')}/" for t in (RECOMMENDATIONS, METRICS, RUNS, QUARANTINE)]
    con.execute("SET allowed_directories = ?", [folders])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def read_only_sql(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.DuckDBPyRelation | None:
    """Run the statements of `query` (the last one's relation), refusing all of them unless
    each is a query (SELECT, WITH, FROM, SHOW, DESCRIBE, SUMMARIZE, VALUES, EXPLAIN)."""
    for statement in con.extract_statements(query):
        if statement.type not in _QUERIES:
            kind = str(statement.type).rsplit(".", 1)[-1]
            raise ValueError(f"the warehouse is read-only: {kind} statements are refused")
    return con.sql(query)


def local_only(lake: Lake) -> str:
    """Why an object-store lake has no warehouse, and what to use instead."""
    return (
        f"no warehouse for {lake.root}: warehouse.duckdb is local only (DuckDB reads object "
        "stores through its httpfs extension, not installed offline); query the Parquet "
        "with pyarrow.dataset or Polars, or DuckDB with httpfs (docs/sql.md)"
    )


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
    recs_glob = _literal(f"{lake.path(RECOMMENDATIONS)}/run_date=*/*.parquet")
    metrics_glob = _literal(f"{lake.path(METRICS)}/run_date=*/*.parquet")
    runs_glob = _literal(f"{lake.path(RUNS)}/stage=*/dt=*/*.parquet")
    quarantine_glob = _literal(f"{lake.path(QUARANTINE)}/dt=*/*.parquet")
    columns = ", ".join(RECOMMENDATIONS.schema.names)
    return [
        f"""CREATE VIEW recommendations AS
        SELECT {columns} FROM (
            {_typed_empty(RECOMMENDATIONS.schema)}
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
        # Every gold/runs file has the one schema (schemas/runs.py), typed here so the view
        # has its columns before the first run; any other column a file holds (a lake
        # written before that schema) still shows, by name.
        f"""CREATE VIEW runs AS
        SELECT COLUMNS(lambda c: c <> 'empty') FROM (
            SELECT NULL::VARCHAR AS stage, NULL::DATE AS dt, * FROM (
                {_typed_empty(RUNS.schema)}
            )
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


def _typed_empty(schema: pa.Schema) -> str:
    """An empty relation with the columns and types of `schema`."""
    typed = ", ".join(f"NULL::{_DUCKDB_TYPES[f.type]} AS {f.name}" for f in schema)
    return f"SELECT {typed} WHERE false"


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
