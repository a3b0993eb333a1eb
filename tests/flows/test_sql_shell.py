"""`metarec sql` is read-only and sandboxed: queries on the views work; writing a host
file, reading one, writing into the lake, reading the raw (unpseudonymised) logs, or
undoing the sandbox all fail with DuckDB's or our own clear message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows.cli import main
from schemas import tables
from tasks.lake.storage import Lake, lake_from
from tasks.serve.publish import write_recommendations
from tasks.serve.warehouse import connect_warehouse, ensure_warehouse

DAY = dt.date(2024, 1, 10)
DENIED = "Permission Error: Cannot access file {!r} - file system operations are disabled by "
REFUSED = "error: the warehouse is read-only: {} statements are refused\n"


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    lake = lake_from(tmp_path / "lake")
    recs = pl.DataFrame({"user_id": ["u1", "u1", "u2"], "rank": [1, 2, 1],
                         "item_id": ["i1", "i2", "i1"], "score": [0.9, 0.5, 0.7],
                         "user_segment": ["warm", "warm", "new"]})  # fmt: skip
    write_recommendations(lake, DAY, recs, "ease", "v1", dt.datetime(2024, 1, 11, 3))
    lake.write_file(tables.RAW_INTERACTIONS, "a.csv", b"user_id,item_id,ts\nu1,i1,1\n", dt=DAY)
    ensure_warehouse(lake)
    return lake


def _denied(path: str) -> str:
    return DENIED.format(path).replace("'", '"') + "configuration"


def _sql(lake: Lake, query: str, capsys) -> tuple[int, str, str]:
    rc = main(["sql", "--storage", lake.root, "-c", query])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_queries_on_the_views_work(lake: Lake, capsys) -> None:
    rc, out, err = _sql(lake, "SELECT user_id, count(*) AS n FROM recommendations_latest "
                              "GROUP BY user_id ORDER BY user_id", capsys)  # fmt: skip
    assert (rc, err) == (0, "")
    assert "u1" in out and "u2" in out
    assert _sql(lake, "SHOW TABLES", capsys)[0] == 0
    assert _sql(lake, "EXPLAIN SELECT * FROM runs", capsys)[0] == 0


def test_a_host_file_cannot_be_written_or_read(lake: Lake, tmp_path: Path, capsys) -> None:
    target = tmp_path / "x.csv"
    rc, _, err = _sql(lake, f"COPY (SELECT * FROM recommendations) TO '{target}'", capsys)
    assert (rc, err) == (1, REFUSED.format("COPY"))
    assert not target.exists()
    rc, _, err = _sql(lake, "SELECT * FROM read_text('/etc/hostname')", capsys)
    assert (rc, err) == (1, f"error: {_denied('/etc/hostname')}\n")


def test_nothing_is_written_into_the_lake_either(lake: Lake, capsys) -> None:
    inside = f"{lake.path(tables.RECOMMENDATIONS)}/run_date=2099-01-01/part-0.parquet"
    rc, _, err = _sql(lake, f"COPY (SELECT 1 AS a) TO '{inside}'", capsys)
    assert (rc, err) == (1, REFUSED.format("COPY"))
    for statement, kind in (("ATTACH ':memory:' AS m", "ATTACH"),
                            ("SET enable_external_access = true", "SET"),
                            ("CREATE TABLE t AS SELECT 1", "CREATE")):  # fmt: skip
        rc, _, err = _sql(lake, statement, capsys)
        assert (rc, err) == (1, REFUSED.format(kind))
    assert lake.partitions(tables.RECOMMENDATIONS) == [DAY.isoformat()]


def test_the_connection_itself_is_sandboxed_and_locked(lake: Lake, tmp_path: Path) -> None:
    raw = lake.path(tables.RAW_INTERACTIONS, dt=DAY) + "/a.csv"
    with connect_warehouse(lake) as con:
        assert con.execute("SELECT count(*) FROM recommendations").fetchall() == [(3,)]
        target = str(tmp_path / "y.csv")
        with pytest.raises(duckdb.PermissionException) as caught:
            con.execute(f"COPY (SELECT 1) TO '{target}'")
        assert str(caught.value) == _denied(target)
        with pytest.raises(duckdb.PermissionException) as caught:  # raw logs: real user ids
            con.execute(f"SELECT * FROM read_csv('{raw}')")
        assert str(caught.value).splitlines()[0] == _denied(raw)  # then DuckDB's LINE hint
        for setting in ("enable_external_access = true", "allowed_directories = ['/']",
                        "lock_configuration = false"):  # fmt: skip
            with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
                con.execute(f"SET {setting}")
