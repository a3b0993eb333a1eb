"""tasks/validate/rules.py: each quarantine reason on tiny frames, the first failing rule
wins, bounds from settings, duplicates vs conflicts, silver order and types."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from schemas.interactions import REASONS, RULES, SILVER
from tasks.config import Settings
from tasks.validate import compile_rule, future_limit, split_rows
from tests.validate.samples import DAY, NOON, bronze_rows

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
    "invalid_user_id": {"parse_error": "invalid_user_id", "user_id": "[1,2]"},
    "invalid_item_id": {"parse_error": "invalid_item_id", "item_id": "true"},
    "user_id_too_long": {"user_id": "u" * 257},
    "item_id_too_long": {"item_id": " " + "i" * 257 + " "},
    "ts_before_floor": {"ts": dt.datetime(1989, 12, 31, 23, 59, tzinfo=dt.UTC)},
}


@pytest.mark.parametrize("reason", list(CASES))
def test_each_reason(reason: str) -> None:
    silver, quarantine, dups = split_rows(bronze_rows({}, CASES[reason]), DAY, Settings())
    assert silver.height == 1 and dups == 0
    assert quarantine["reason"].to_list() == [reason]
    assert quarantine["source_line"].to_list() == [3]


@pytest.mark.parametrize("reason", list(CASES))
def test_compiled_rule_with_a_date_or_a_date_column_agree(reason: str) -> None:
    rule = next(r for r in RULES if r.reason == reason)
    rows = bronze_rows({}, CASES[reason]).with_columns(_day=pl.lit(DAY))
    by_date = rows.select(compile_rule(rule, DAY, Settings())).to_series()
    by_column = rows.select(compile_rule(rule, pl.col("_day"), Settings())).to_series()
    assert by_date.to_list() == by_column.to_list() == [False, True]


def test_every_reason_is_covered_and_first_failing_rule_wins() -> None:
    assert set(CASES) | {"conflicting_duplicate"} == set(REASONS)
    both = {"user_id": None, "event_type": "hover", "ts": None, "ts_raw": "x"}
    _, quarantine, _ = split_rows(bronze_rows(both), DAY, Settings())
    assert quarantine["reason"].to_list() == ["missing_user_id"]


def test_tolerance_and_bounds_come_from_settings() -> None:
    assert future_limit(DAY, Settings()) == dt.datetime(2024, 1, 2, 1, tzinfo=dt.UTC)
    late = {"ts": dt.datetime(2024, 1, 2, 0, 30, tzinfo=dt.UTC)}  # within 1 h of the day end
    nan = {"value": float("nan"), "value_raw": "nan"}
    rows = bronze_rows(late, nan, {"value": None, "value_raw": None})
    _, q, _ = split_rows(rows, DAY, Settings())
    assert q["reason"].to_list() == ["value_out_of_range"]
    _, q, _ = split_rows(bronze_rows(late), DAY, Settings(future_tolerance_hours=0))
    assert q["reason"].to_list() == ["future_ts"]


def test_duplicates_are_counted_and_conflicts_quarantined() -> None:
    rows = bronze_rows(
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
    rows = bronze_rows(
        {"ts": NOON + dt.timedelta(hours=1), "user_id": "a"},
        {"ts": NOON, "user_id": "b"},
        {"ts": NOON, "user_id": "a"},
    )
    silver, _, _ = split_rows(rows, DAY, Settings())
    assert silver.schema == pl.DataFrame(SILVER.empty_table()).schema
    assert silver["source_line"].to_list() == [4, 3, 2]


def test_ids_are_trimmed_and_integral_numbers_lose_their_fraction() -> None:
    rows = bronze_rows(
        {"user_id": " 1.0 ", "item_id": "7.00"},  # line 2: kept as ("1", "7")
        {"user_id": "1", "item_id": "7"},  # line 3: the same key -> exact duplicate
        {"user_id": "1.5", "item_id": "007", "event_type": "click"},  # line 4: kept as is
        {"user_id": "u" * 256, "item_id": "i9"},  # line 5: 256 characters is allowed
    )
    silver, q, dups = split_rows(rows, DAY, Settings())
    assert (silver.height, q.height, dups) == (3, 0, 1)
    assert sorted(zip(silver["user_id"], silver["item_id"], strict=True)) == [
        ("1", "7"), ("1.5", "007"), ("u" * 256, "i9")
    ]  # fmt: skip


def test_quarantine_keeps_ids_as_landed_and_floor_from_settings() -> None:
    old = {"ts": dt.datetime(1985, 6, 1, tzinfo=dt.UTC)}
    rows = bronze_rows({"user_id": " " + "u" * 300}, old)
    _, q, _ = split_rows(rows, DAY, Settings())
    assert q["reason"].to_list() == ["user_id_too_long", "ts_before_floor"]
    assert q["user_id"].to_list() == [" " + "u" * 300, "u1"]
    assert q["expectation"].to_list() == [
        "ExpectColumnValueLengthsToBeBetween", "ExpectColumnValuesToBeBetween"
    ]  # fmt: skip
    naive = Settings(min_ts=dt.datetime(1980, 1, 1), max_id_length=400)  # naive means UTC
    silver, q, _ = split_rows(rows, DAY, naive)
    assert (silver.height, q.height) == (2, 0)
