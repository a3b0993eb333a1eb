"""tasks/validate/stage.py: silver, quarantine, accounting and GX evidence written per date,
exact row accounting against the stored partitions, the bad-share threshold, batches, and
the skip (a silver stamp chained to ingest's bronze stamp)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl
import pyarrow.parquet as pq
import pytest

from schemas.interactions import SILVER
from schemas.runs import RUNS
from tasks.config import Settings
from tasks.ingest import ingest_date
from tasks.lake.stamps import read_stamp
from tasks.lake.storage import Lake
from tasks.validate import PartitionQualityError, ValidationResult, validate_date, validate_dates
from tests.validate.samples import DAY, NOON, bronze_rows, write_bronze


def _run_row(lake: Lake, day: dt.date = DAY) -> dict:
    return lake.read_partition("gold/runs", stage="validate", dt=day).row(0, named=True)


def _assert_accounted(lake: Lake, r: ValidationResult) -> None:
    """raw = silver + quarantined + duplicates, in the result, its row and the partitions."""
    bronze = lake.read_partition("bronze/interactions", dt=r.date).height
    assert r.raw_rows == bronze == r.silver_rows + sum(r.quarantined.values()) + r.duplicates
    run = _run_row(lake, r.date)
    assert (run["raw_rows"], run["silver_rows"], run["duplicates"]) == (
        r.raw_rows, r.silver_rows, r.duplicates
    )  # fmt: skip
    assert run["quarantined_rows"] == sum(r.quarantined.values())
    if r.status == "ok":
        assert lake.read_partition("silver/interactions", dt=r.date).height == r.silver_rows
    quarantined = (
        lake.read_partition("quarantine/interactions", dt=r.date)
        if lake.exists("quarantine/interactions", dt=r.date)
        else pl.DataFrame({"reason": []}, schema={"reason": pl.String})
    )
    assert dict(quarantined.group_by("reason").len().iter_rows()) == r.quarantined


def test_validate_date_writes_silver_quarantine_accounting_and_gx(lake_root: str) -> None:
    lake = Lake(lake_root)
    good = [{"item_id": f"i{k}"} for k in range(40)]
    write_bronze(lake, bronze_rows(*good, {"item_id": "i0"}, {"event_type": "hover"}))
    r = validate_date(lake, DAY, Settings())
    assert (r.raw_rows, r.silver_rows, r.duplicates) == (42, 40, 1)
    assert r.quarantined == {"unknown_event_type": 1}
    assert r.bad_share == pytest.approx(1 / 42)
    assert r.gx_success is True
    assert r.gx_statistics["unsuccessful_expectations"] == 0
    gx = lake.read_json(r.paths["gx_result"].removeprefix(lake_root))
    assert gx["success"] and gx["rows_validated"] == 40
    run = _run_row(lake)
    assert (run["run_date"], run["status"], run["gx_success"]) == (DAY, "ok", True)
    assert run["started_at"] <= run["finished_at"]
    assert run["gx_result"] == r.paths["gx_result"]
    assert r.paths["runs"] == lake.partition_file("gold/runs", stage="validate", dt=DAY)
    with open(r.paths["runs"], "rb") as f:
        assert pq.read_schema(f).equals(RUNS)
    with open(r.paths["silver"], "rb") as f:
        assert pq.read_schema(f).equals(SILVER)
    _assert_accounted(lake, r)


def test_gx_runs_on_a_deterministic_sample(lake_root: str) -> None:
    lake = Lake(lake_root)
    write_bronze(lake, bronze_rows(*[{"item_id": f"i{k}"} for k in range(30)]))
    r = validate_date(lake, DAY, Settings(gx_sample_rows=10))
    gx = lake.read_json(r.paths["gx_result"].removeprefix(lake_root))
    assert (gx["rows_validated"], gx["rows_total"], gx["success"]) == (10, 30, True)


def test_bad_share_over_threshold_raises_and_keeps_old_silver(lake_root: str) -> None:
    lake = Lake(lake_root)
    write_bronze(lake, bronze_rows(*[{"item_id": f"i{k}"} for k in range(10)]))
    validate_date(lake, DAY, Settings())
    bad = [{"item_id": f"i{k}", "event_type": "hover"} for k in range(3)]
    bad += [{"item_id": f"j{k}", "ts": None, "ts_raw": "?"} for k in range(2)]
    write_bronze(lake, bronze_rows(*[{"item_id": f"i{k}"} for k in range(5)], *bad))
    with pytest.raises(PartitionQualityError) as err:
        validate_date(lake, DAY, Settings(max_bad_share=0.2))
    msg = str(err.value)
    assert "silver/interactions/dt=2024-01-01" in msg and "5 of 10 rows" in msg
    assert "unknown_event_type=3" in msg and "unparseable_ts=2" in msg
    assert lake.read_partition("silver/interactions", dt=DAY).height == 10  # not replaced
    assert lake.read_partition("quarantine/interactions", dt=DAY).height == 5
    run = _run_row(lake)
    assert run["status"] == "failed" and run["quarantined_rows"] == 5
    assert run["error"] == msg and run["gx_success"] is None


def test_a_clean_rerun_deletes_a_stale_quarantine(lake_root: str) -> None:
    lake = Lake(lake_root)
    write_bronze(lake, bronze_rows({}, {"event_type": "hover"}))
    validate_date(lake, DAY, Settings(max_bad_share=1.0))
    assert lake.exists("quarantine/interactions", dt=DAY)
    write_bronze(lake, bronze_rows({}))
    again = validate_date(lake, DAY, Settings(max_bad_share=0.9))  # other settings: redone
    assert not again.skipped and "quarantine" not in again.paths
    assert not lake.exists("quarantine/interactions", dt=DAY)
    _assert_accounted(lake, again)


def test_batch_fails_one_date_only_runs_gx_once_and_skips_unchanged(lake_root: str) -> None:
    lake = Lake(lake_root)
    days = [DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)]
    for k, day in enumerate(days):
        rows = [{"item_id": f"i{j}", "ts": NOON + dt.timedelta(days=k)} for j in range(10)]
        if k == 1:  # half of this date is bad
            rows += [{"item_id": f"x{j}", "event_type": "hover"} for j in range(10)]
        if k == 2:  # an exact copy and a conflicting one
            rows += [{"item_id": "i0", "ts": NOON + dt.timedelta(days=k)}]
            rows += [{"item_id": "i1", "ts": NOON + dt.timedelta(days=k), "value": 3.0}]
        write_bronze(lake, bronze_rows(*rows), day)
    results = validate_dates(lake, days, Settings(max_bad_share=0.2))
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert [(r.silver_rows, r.duplicates) for r in results] == [(10, 0), (10, 0), (10, 1)]
    assert results[2].quarantined == {"conflicting_duplicate": 1}
    for r in results:
        _assert_accounted(lake, r)
    assert "unknown_event_type=10" in results[1].error
    assert lake.exists("silver/interactions", dt=days[2])
    assert not lake.exists("silver/interactions", dt=days[1])
    assert results[0].paths["gx_result"] == results[2].paths["gx_result"]  # one GX run
    gx = lake.read_json(lake.relpath(results[0].paths["gx_result"]))
    assert (gx["rows_total"], gx["batch_dates"]) == (20, [days[0].isoformat(), days[2].isoformat()])
    again = validate_dates(lake, days, Settings(max_bad_share=0.2))
    assert [r.skipped for r in again] == [True, False, True]  # a failed date is redone
    assert [r.silver_rows for r in again] == [10, 10, 10]
    assert again[0] == dataclasses.replace(results[0], skipped=True)  # the stamped result
    assert not validate_dates(lake, days[:1], Settings(max_bad_share=0.3))[0].skipped


def test_skip_follows_the_bronze_stamp(lake_root: str) -> None:
    lake = Lake(lake_root)
    raw = "raw/interactions/dt=2024-01-01/a.csv"
    lake.write_bytes(raw, b"user_id,item_id,ts\nu1,i1,2024-01-01T10:00:00Z\n")
    lake.write_bytes("raw/interactions/dt=2024-01-01/b.csv.gz", b"broken")
    ingest_date(lake, DAY, Settings())
    first = validate_date(lake, DAY, Settings())
    assert first.corrupt_files == [("raw/interactions/dt=2024-01-01/b.csv.gz", "invalid_gzip")]
    assert validate_date(lake, DAY, Settings()).skipped
    stamp = read_stamp(lake, "silver/interactions", dt=DAY)
    assert stamp["result"]["silver_rows"] == 1
    lake.write_bytes(raw, b"user_id,item_id,ts\nu1,i1,2024-01-01T10:00:00Z\nu2,i2,1704103200\n")
    assert not ingest_date(lake, DAY, Settings()).skipped
    again = validate_date(lake, DAY, Settings())  # new bronze: validated again
    assert (again.skipped, again.silver_rows) == (False, 2)
    _assert_accounted(lake, again)
