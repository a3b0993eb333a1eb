"""tasks/validate.py: each quarantine reason on tiny frames, duplicates vs conflicts, exact
row accounting, the bad-share threshold, and the GX suite built from the same RULES."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow.parquet as pq
import pytest

from schemas.interactions import BRONZE, REASONS, SILVER
from tasks.config import Settings
from tasks.lake.storage import Lake
from tasks.validate.stage import (
    PartitionQualityError,
    build_suite,
    split_rows,
    validate_date,
    validate_dates,
)

DAY = dt.date(2024, 1, 1)
NOON = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)
GOOD = {
    "user_id": "u1",
    "item_id": "i1",
    "ts": NOON,
    "event_type": "view",
    "value": 1.0,
    "ts_raw": "2024-01-01T12:00:00Z",
    "value_raw": "1.0",
    "extra": None,
    "parse_error": None,
    "source_file": "raw/interactions/dt=2024-01-01/a.csv",
    "source_line": 2,
    "ingested_at": NOON,
}


def _bronze(*rows: dict) -> pl.DataFrame:
    full = [{**GOOD, "source_line": k + 2, **r} for k, r in enumerate(rows)]
    return pl.from_arrow(pl.DataFrame(full).to_arrow().cast(BRONZE))


CASES = {
    "malformed_line": {"parse_error": "malformed_line", "user_id": None},
    "invalid_encoding": {"parse_error": "invalid_encoding", "user_id": None},
    "missing_user_id": {"user_id": " "},
    "missing_item_id": {"item_id": None},
    "missing_ts": {"ts": None, "ts_raw": None},
    "unparseable_ts": {"ts": None, "ts_raw": "yesterday"},
    "future_ts": {"ts": NOON + dt.timedelta(days=3)},
    "unknown_event_type": {"event_type": "hover"},
    "unparseable_value": {"value": None, "value_raw": "abc"},
    "value_out_of_range": {"value": -1.0, "value_raw": "-1"},
}


@pytest.mark.parametrize("reason", list(CASES))
def test_each_reason(reason: str) -> None:
    silver, quarantine, dups = split_rows(_bronze({}, CASES[reason]), DAY, Settings())
    assert silver.height == 1 and dups == 0
    assert quarantine["reason"].to_list() == [reason]
    assert quarantine["source_line"].to_list() == [3]


def test_every_reason_is_covered_and_first_failing_rule_wins() -> None:
    assert set(CASES) | {"conflicting_duplicate"} == set(REASONS)
    both = {"user_id": None, "event_type": "hover", "ts": None, "ts_raw": "x"}
    _, quarantine, _ = split_rows(_bronze(both), DAY, Settings())
    assert quarantine["reason"].to_list() == ["missing_user_id"]


def test_tolerance_and_bounds_come_from_settings() -> None:
    late = {"ts": dt.datetime(2024, 1, 2, 0, 30, tzinfo=dt.UTC)}  # within 1 h of the day end
    nan = {"value": float("nan"), "value_raw": "nan"}
    _, q, _ = split_rows(_bronze(late, nan, {"value": None, "value_raw": None}), DAY, Settings())
    assert q["reason"].to_list() == ["value_out_of_range"]
    _, q, _ = split_rows(_bronze(late), DAY, Settings(future_tolerance_hours=0))
    assert q["reason"].to_list() == ["future_ts"]


def test_duplicates_are_counted_and_conflicts_quarantined() -> None:
    rows = _bronze(
        {"value": 1.0},  # line 2: first of its key, kept
        {"value": 1.0},  # line 3: exact copy -> duplicate
        {"value": 2.0},  # line 4: same key, other value -> conflicting_duplicate
        {"value": None, "value_raw": None, "item_id": "i2"},  # line 5: kept
        {"value": None, "value_raw": None, "item_id": "i2"},  # line 6: duplicate (null == null)
        {"event_type": "click"},  # line 7: another key, kept
        {"user_id": None, "value": 1.0},  # line 8: fails a rule first
    )
    silver, q, dups = split_rows(rows.reverse(), DAY, Settings())  # input order is irrelevant
    assert dups == 2
    assert silver["source_line"].sort().to_list() == [2, 5, 7]
    assert dict(zip(q["source_line"], q["reason"], strict=True)) == {
        4: "conflicting_duplicate",
        8: "missing_user_id",
    }
    assert q["expectation"].to_list() == [
        "ExpectCompoundColumnsToBeUnique",
        "ExpectColumnValuesToNotBeNull",
    ]
    assert rows.height == silver.height + q.height + dups


def test_silver_is_sorted_and_typed() -> None:
    rows = _bronze(
        {"ts": NOON + dt.timedelta(hours=1), "user_id": "a"},
        {"ts": NOON, "user_id": "b"},
        {"ts": NOON, "user_id": "a"},
    )
    silver, _, _ = split_rows(rows, DAY, Settings())
    assert silver.schema == pl.DataFrame(SILVER.empty_table()).schema
    assert silver["source_line"].to_list() == [4, 3, 2]


def _write_bronze(lake: Lake, frame: pl.DataFrame) -> None:
    lake.write_partition("bronze/interactions", frame.to_arrow().cast(BRONZE), dt=DAY)


def test_validate_date_writes_silver_quarantine_accounting_and_gx(lake_root: str) -> None:
    lake = Lake(lake_root)
    good = [{"item_id": f"i{k}"} for k in range(40)]
    _write_bronze(lake, _bronze(*good, {"item_id": "i0"}, {"event_type": "hover"}))
    r = validate_date(lake, DAY, Settings())
    assert (r.raw_rows, r.silver_rows, r.duplicates) == (42, 40, 1)
    assert r.quarantined == {"unknown_event_type": 1}
    assert r.bad_share == pytest.approx(1 / 42)
    assert r.gx_success is True
    assert r.gx_statistics["unsuccessful_expectations"] == 0
    gx = lake.read_json(r.paths["gx_result"].removeprefix(lake_root))
    assert gx["success"] and gx["rows_validated"] == 40
    run = lake.read_partition("gold/runs", stage="validate", dt=DAY).row(0, named=True)
    assert (run["status"], run["raw_rows"], run["silver_rows"], run["duplicates"]) == (
        "ok", 42, 40, 1
    )  # fmt: skip
    assert lake.read_partition("silver/interactions", dt=DAY).height == 40
    with open(r.paths["silver"], "rb") as f:
        assert pq.read_schema(f).equals(SILVER)
    assert lake.read_partition("quarantine/interactions", dt=DAY).height == 1


def test_gx_runs_on_a_deterministic_sample(lake_root: str) -> None:
    lake = Lake(lake_root)
    _write_bronze(lake, _bronze(*[{"item_id": f"i{k}"} for k in range(30)]))
    r = validate_date(lake, DAY, Settings(gx_sample_rows=10))
    gx = lake.read_json(r.paths["gx_result"].removeprefix(lake_root))
    assert (gx["rows_validated"], gx["rows_total"], gx["success"]) == (10, 30, True)


def test_bad_share_over_threshold_raises_and_keeps_old_silver(lake_root: str) -> None:
    lake = Lake(lake_root)
    _write_bronze(lake, _bronze(*[{"item_id": f"i{k}"} for k in range(10)]))
    validate_date(lake, DAY, Settings())
    bad = [{"item_id": f"i{k}", "event_type": "hover"} for k in range(3)]
    bad += [{"item_id": f"j{k}", "ts": None, "ts_raw": "?"} for k in range(2)]
    _write_bronze(lake, _bronze(*[{"item_id": f"i{k}"} for k in range(5)], *bad))
    with pytest.raises(PartitionQualityError) as err:
        validate_date(lake, DAY, Settings(max_bad_share=0.2))
    msg = str(err.value)
    assert "silver/interactions/dt=2024-01-01" in msg and "5 of 10 rows" in msg
    assert "unknown_event_type=3" in msg and "unparseable_ts=2" in msg
    assert lake.read_partition("silver/interactions", dt=DAY).height == 10  # not replaced
    assert lake.read_partition("quarantine/interactions", dt=DAY).height == 5
    run = lake.read_partition("gold/runs", stage="validate", dt=DAY).row(0, named=True)
    assert run["status"] == "failed" and run["quarantined_rows"] == 5


@pytest.mark.parametrize("schema", [SILVER, BRONZE], ids=["silver", "bronze"])
def test_gx_suite_names_only_columns_of_the_schema(schema) -> None:
    suite = build_suite(schema, DAY, Settings())
    named = set()
    for exp in suite.expectations:
        kw = exp.configuration.kwargs
        named |= {kw["column"]} if "column" in kw else set(kw.get("column_list", []))
    assert named and named <= set(schema.names)
    types = {type(e).__name__ for e in suite.expectations}
    assert {"ExpectColumnToExist", "ExpectColumnValuesToBeOfType"} <= types
    assert "ExpectCompoundColumnsToBeUnique" in types
    assert ("ExpectColumnValuesToBeNull" in types) == (schema is BRONZE)  # parse_error


def test_batch_fails_one_date_only_runs_gx_once_and_skips_unchanged(lake_root: str) -> None:
    lake = Lake(lake_root)
    days = [DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)]
    for k, day in enumerate(days):
        rows = [{"item_id": f"i{j}", "ts": NOON + dt.timedelta(days=k)} for j in range(10)]
        if k == 1:  # half of this date is bad
            rows += [{"item_id": f"x{j}", "event_type": "hover"} for j in range(10)]
        lake.write_partition("bronze/interactions", _bronze(*rows).to_arrow().cast(BRONZE), dt=day)
    results = validate_dates(lake, days, Settings(max_bad_share=0.2))
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert "unknown_event_type=10" in results[1].error
    assert lake.exists("silver/interactions", dt=days[2])
    assert not lake.exists("silver/interactions", dt=days[1])
    assert results[0].paths["gx_result"] == results[2].paths["gx_result"]  # one GX run
    gx = lake.read_json(lake.relpath(results[0].paths["gx_result"]))
    assert (gx["rows_total"], gx["batch_dates"]) == (20, [days[0].isoformat(), days[2].isoformat()])
    again = validate_dates(lake, days, Settings(max_bad_share=0.2))
    assert [r.skipped for r in again] == [True, False, True]  # a failed date is redone
    assert [r.silver_rows for r in again] == [10, 10, 10]
    assert not validate_dates(lake, days[:1], Settings(max_bad_share=0.3))[0].skipped
