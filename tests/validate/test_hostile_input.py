"""Issue 12 through ingest and validate, from landing files made here: ids that are not
scalars, too long, or numbers; epoch ms/us/ns timestamps and ones before the floor; and
dates that completed with warnings (an unreadable or empty file, a failed GX check),
with exact row accounting, in the result and in gold/runs stage=validate."""

from __future__ import annotations

import datetime as dt
import io
import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.config import Settings
from tasks.ingest import ingest_date
from tasks.lake.storage import Lake
from tasks.validate import ValidationResult, stage, validate_date, validate_dates
from tests.validate.samples import DAY

RAW = f"raw/interactions/dt={DAY}"
T = dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)  # 1704103200
JSONL = [
    {"user_id": {"a": 1}, "item_id": "i1", "ts": 1704103200},  # 1 invalid_user_id
    {"user_id": [1, 2], "item_id": "i1", "ts": 1704103200},  # 2 invalid_user_id
    {"user_id": True, "item_id": "i1", "ts": 1704103200},  # 3 invalid_user_id
    {"user_id": "u4", "item_id": False, "ts": 1704103200},  # 4 invalid_item_id
    {"user_id": 1.0, "item_id": 7, "ts": 1704103200000},  # 5 ms -> silver ("1", "7")
    {"user_id": 1.5, "item_id": " i6 ", "ts": 1704103200000000},  # 6 us -> ("1.5", "i6")
    {"user_id": "u" * 300, "item_id": "i7", "ts": 1704103200},  # 7 user_id_too_long
    {"user_id": "u8", "item_id": "i8", "ts": "1985-06-01T00:00:00Z"},  # 8 ts_before_floor
    {"user_id": "u9", "item_id": "i9", "ts": 1704103200123456789},  # 9 ns
    {"user_id": "1", "item_id": "7", "ts": 1704103200},  # 10 = line 5 once normalised
    {"user_id": "[1]", "item_id": "i1", "ts": 1704103200},  # 11 a string: a fine id
]


def _land(lake: Lake, name: str, payload: bytes) -> None:
    lake.write_bytes(f"{RAW}/{name}", payload)


def _run_row(lake: Lake) -> dict:
    return lake.read_partition("gold/runs", stage="validate", dt=DAY).row(0, named=True)


def _accounted(lake: Lake, r: ValidationResult) -> None:
    assert r.raw_rows == r.silver_rows + sum(r.quarantined.values()) + r.duplicates
    assert lake.read_partition("bronze/interactions", dt=DAY).height == r.raw_rows
    run = _run_row(lake)
    assert (run["raw_rows"], run["silver_rows"], run["quarantined_rows"], run["duplicates"]) == (
        r.raw_rows, r.silver_rows, sum(r.quarantined.values()), r.duplicates
    )  # fmt: skip


def test_ids_and_times_from_every_format(lake_root: str) -> None:
    lake = Lake(lake_root)
    _land(lake, "a.jsonl", "".join(json.dumps(r) + "\n" for r in JSONL).encode())
    _land(lake, "b.csv", b"user_id,item_id,ts\n 2.0 ,i1,1704103200000\n")  # ms in text
    buf = io.BytesIO()
    pq.write_table(pa.table({"user_id": [3.0], "item_id": ["i1"], "ts": [1704103200000]}), buf)
    _land(lake, "c.parquet", buf.getvalue())  # a float id column, int64 epoch ms
    assert ingest_date(lake, DAY, Settings()).rows == 13
    r = validate_date(lake, DAY, Settings(max_bad_share=0.5))
    assert r.quarantined == {
        "invalid_item_id": 1, "invalid_user_id": 3, "ts_before_floor": 1, "user_id_too_long": 1
    }  # fmt: skip
    assert (r.raw_rows, r.silver_rows, r.duplicates, r.status) == (13, 6, 1, "ok")
    _accounted(lake, r)
    silver = lake.read_partition("silver/interactions", dt=DAY).sort("source_file", "source_line")
    assert list(zip(silver["user_id"], silver["item_id"], silver["ts"], strict=True)) == [
        ("1", "7", T),
        ("1.5", "i6", T),
        ("u9", "i9", T + dt.timedelta(microseconds=123456)),  # ns, truncated to us
        ("[1]", "i1", T),
        ("2", "i1", T),
        ("3", "i1", T),
    ]
    q = lake.read_partition("quarantine/interactions", dt=DAY).sort("source_line")
    assert q.select("source_line", "user_id", "reason").rows() == [
        (1, '{"a":1}', "invalid_user_id"),
        (2, "[1,2]", "invalid_user_id"),
        (3, "true", "invalid_user_id"),
        (4, "u4", "invalid_item_id"),
        (7, "u" * 300, "user_id_too_long"),
        (8, "u8", "ts_before_floor"),
    ]
    assert r.gx_success is True  # the new rules hold on silver, as GX states them


def test_a_date_whose_only_file_is_corrupt_completes_with_a_warning(lake_root: str) -> None:
    lake = Lake(lake_root)
    _land(lake, "b.csv.gz", b"not gzip")
    ingest_date(lake, DAY, Settings())
    r = validate_date(lake, DAY, Settings())  # no PartitionQualityError: written, flagged
    assert (r.status, r.raw_rows, r.silver_rows) == ("warning", 0, 0)
    assert r.warnings == [f"unreadable file {RAW}/b.csv.gz: invalid_gzip"]
    _accounted(lake, r)
    run = _run_row(lake)
    assert (run["status"], run["error"]) == (
        "warning",
        f"unreadable file {RAW}/b.csv.gz: invalid_gzip",
    )
    assert json.loads(run["corrupt_files"]) == [[f"{RAW}/b.csv.gz", "invalid_gzip"]]
    again = validate_date(lake, DAY, Settings())  # stamped: the warning stays
    assert again.skipped and (again.status, again.warnings) == (r.status, r.warnings)


def test_zero_byte_files_warn_and_clean_dates_stay_ok(lake_root: str) -> None:
    lake = Lake(lake_root)
    days = [DAY, DAY + dt.timedelta(days=1)]
    for day in days:
        lake.write_bytes(
            f"raw/interactions/dt={day}/a.csv", b"user_id,item_id,ts\nu1,i1,1704103200\n"
        )
    _land(lake, "empty.jsonl", b"")
    for day in days:
        ingest_date(lake, day, Settings())
    results = validate_dates(lake, days, Settings())
    assert [(r.status, r.silver_rows) for r in results] == [("warning", 1), ("ok", 1)]
    assert results[0].warnings == [f"unreadable file {RAW}/empty.jsonl: empty_file"]
    assert results[1].warnings == [] and results[1].error is None
    # The same event on two dates is no duplicate (dedupe is per date), and GX agrees.
    assert results[1].gx_success is True
    _accounted(lake, results[0])


def test_a_failed_gx_check_is_a_warning(lake_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(frame: pl.DataFrame, day: dt.date, settings: Settings, rows_total: int) -> dict:
        return {"success": False, "statistics": {"evaluated_expectations": 17,
                "successful_expectations": 16, "unsuccessful_expectations": 1}}  # fmt: skip

    monkeypatch.setattr(stage, "run_gx", failing)
    lake = Lake(lake_root)
    _land(lake, "a.csv", b"user_id,item_id,ts\nu1,i1,1704103200\n")
    ingest_date(lake, DAY, Settings())
    r = validate_date(lake, DAY, Settings())
    note = "Great Expectations failed 1 of 17 expectations on the batch sample"
    note += f" (see {r.paths['gx_result']})"
    assert (r.status, r.gx_success, r.warnings) == ("warning", False, [note])
    assert lake.exists("silver/interactions", dt=DAY)  # written: GX is evidence, not a gate
    assert (_run_row(lake)["status"], _run_row(lake)["error"]) == ("warning", note)
