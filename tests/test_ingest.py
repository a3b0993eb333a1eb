"""tasks/ingest.py: every format, gzip, bad lines with their line numbers, corrupt files,
unknown columns, idempotency; on small raw files written here and on a memory:// lake."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.interactions import BRONZE
from tasks.config import Settings
from tasks.ingest.stage import ingest_date, ingest_dates, plan_chunks
from tasks.lake.storage import Lake

DAY = "2024-01-01"
RAW = f"raw/interactions/dt={DAY}"


@pytest.fixture()
def lake(lake_root: str) -> Lake:
    return Lake(lake_root)


def _land(lake: Lake, name: str, payload: bytes) -> str:
    lake.write_bytes(f"{RAW}/{name}", payload)
    return f"{RAW}/{name}"


def _stored_schema(lake: Lake, table: str) -> pa.Schema:
    with lake.fs.open(lake.partition_file(table, dt=DAY), "rb") as f:
        return pq.read_schema(f)


def _bronze(lake: Lake) -> pl.DataFrame:
    return lake.read_partition("bronze/interactions", dt=DAY).sort("source_file", "source_line")


CSV = (
    b"user_id,item_id,ts,event_type,value\n"
    b"u1,i1,2024-01-01T10:00:00Z,view,1.5\n"  # line 2
    b"u2,i2,1704103200,,\n"  # line 3: epoch seconds, default event type, no value
    b"u3,i3,2024-01-01T12:00:00+02:00,click,x\n"  # line 4: offset, unparseable value
)


@pytest.mark.parametrize("gz", [False, True])
def test_csv_rows_are_typed_with_raw_text_kept(lake: Lake, gz: bool) -> None:
    name = _land(lake, "a.csv.gz" if gz else "a.csv", gzip.compress(CSV) if gz else CSV)
    result = ingest_date(lake, DAY, Settings())
    assert (result.files, result.rows, result.skipped, result.corrupt_files) == (1, 3, False, [])
    b = _bronze(lake)
    assert _stored_schema(lake, "bronze/interactions").equals(BRONZE)
    assert b["source_file"].unique().to_list() == [name]
    assert b["source_line"].to_list() == [2, 3, 4]
    assert b["ts"].to_list() == [
        dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC),
    ]
    assert b["event_type"].to_list() == ["view", "interaction", "click"]
    assert b["value"].to_list() == [1.5, None, None]
    assert b["value_raw"].to_list() == ["1.5", None, "x"]
    assert b["parse_error"].null_count() == 3


def test_malformed_and_badly_encoded_csv_lines_keep_their_line_numbers(lake: Lake) -> None:
    _land(
        lake,
        "a.csv",
        b"user_id,item_id,ts\n"
        b"u1,i1,1704103200\n"  # 2
        b"u2,i2\n"  # 3: missing a field
        b"\n"  # 4: blank, not an event
        b"u\xff3,i3,1704103200\n"  # 5: invalid UTF-8
        b'u4,"i,4",1704103200\r\n'  # 6: quoted comma, CRLF
        b'u5,"i5,1704103200\n'  # 7: unbalanced quote
        b"u6,i6,1704103200,extra\n",  # 8: one field too many
    )
    ingest_date(lake, DAY, Settings())
    b = _bronze(lake)
    got = dict(zip(b["source_line"], b["parse_error"], strict=True))
    assert got == {
        2: None,
        3: "malformed_line",
        5: "invalid_encoding",
        6: None,
        7: "malformed_line",
        8: "malformed_line",
    }
    assert b.filter(pl.col("source_line") == 6)["item_id"].item() == "i,4"
    raw_line = json.loads(b.filter(pl.col("source_line") == 3)["extra"].item())["_raw_line"]
    assert raw_line == "u2,i2"
    lossy = json.loads(b.filter(pl.col("source_line") == 5)["extra"].item())["_raw_line"]
    assert lossy == "u?3,i3,1704103200"


def test_jsonl_bad_lines_and_unknown_keys(lake: Lake) -> None:
    name = _land(
        lake,
        "b.jsonl.gz",
        gzip.compress(
            b'{"user_id":"u1","item_id":"i1","ts":1704103200,"value":3.5}\n'  # 1
            b'{"user_id":2,"item_id":"i2","ts":"2024-01-01T01:00:00","device":"ios"}\n'  # 2
            b'{"user_id":"u3",\n'  # 3: broken JSON
            b"[1,2]\n"  # 4: not an object
            b'{"user_id":"\xe9"}\n'  # 5: Latin-1 byte
        ),
    )
    result = ingest_date(lake, DAY, Settings())
    assert result.unknown_columns == {name: ["device"]}
    b = _bronze(lake)
    assert b["parse_error"].to_list() == [
        None, None, "malformed_line", "malformed_line", "invalid_encoding"
    ]  # fmt: skip
    assert b["user_id"].to_list()[:2] == ["u1", "2"]
    assert b["ts"][1] == dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC)  # naive = UTC
    assert json.loads(b["extra"][1]) == {"device": "ios"}
    assert b["extra"][0] is None


def test_parquet_rows_numbered_and_unknown_columns_in_extra(lake: Lake) -> None:
    table = pa.table(
        {
            "user_id": [1, 2],
            "item_id": ["a", "b"],
            "ts": pa.array([dt.datetime(2024, 1, 1, 5), None], pa.timestamp("us")),
            "colour": ["red", "blue"],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    name = _land(lake, "c.parquet", buf.getvalue())
    result = ingest_date(lake, DAY, Settings())
    assert result.unknown_columns == {name: ["colour"]}
    b = _bronze(lake)
    assert b["source_line"].to_list() == [1, 2]
    assert b["ts"].to_list() == [dt.datetime(2024, 1, 1, 5, tzinfo=dt.UTC), None]
    assert [json.loads(e) for e in b["extra"]] == [{"colour": "red"}, {"colour": "blue"}]


def test_unreadable_files_are_reported_and_the_rest_goes_on(lake: Lake) -> None:
    _land(lake, "a.csv", CSV)
    _land(lake, "b.csv.gz", gzip.compress(CSV * 50)[:-40])
    _land(lake, "c.parquet", b"PAR1 not really parquet")
    result = ingest_date(lake, DAY, Settings())
    assert result.rows == 3
    assert result.corrupt_files == [
        (f"{RAW}/b.csv.gz", "truncated_gzip"),
        (f"{RAW}/c.parquet", "invalid_parquet"),
    ]
    assert _bronze(lake)["source_file"].unique().to_list() == [f"{RAW}/a.csv"]


def test_unchanged_date_is_skipped_and_a_changed_file_reingests(lake: Lake) -> None:
    _land(lake, "a.csv", CSV)
    first = ingest_date(lake, DAY, Settings())
    stamp = _bronze(lake)["ingested_at"][0]
    again = ingest_date(lake, DAY, Settings())
    assert (again.skipped, again.rows) == (True, first.rows)
    assert _bronze(lake)["ingested_at"][0] == stamp  # partition untouched
    _land(lake, "b.csv", CSV)  # an added file re-ingests the whole date
    third = ingest_date(lake, DAY, Settings())
    assert (third.skipped, third.rows, third.files) == (False, 6, 2)
    _land(lake, "b.csv", CSV + b"u9,i9,1704103200,view,1\n")  # a changed file too
    assert ingest_date(lake, DAY, Settings()).rows == 7


def test_memory_lake() -> None:
    lake = Lake("memory://metarec-test-ingest")
    try:
        _land(lake, "a.csv", CSV)
        assert ingest_date(lake, DAY, Settings()).rows == 3
        assert lake.read_partition("bronze/interactions", dt=DAY).height == 3
        assert ingest_date(lake, DAY, Settings()).skipped
    finally:
        lake.fs.rm(lake.base, recursive=True)


def test_date_without_files_gives_an_empty_partition(lake: Lake) -> None:
    result = ingest_date(lake, DAY, Settings())
    assert (result.files, result.rows) == (0, 0)
    assert _stored_schema(lake, "bronze/interactions").equals(BRONZE)
    assert _bronze(lake).height == 0


def test_batch_of_dates_matches_date_by_date_and_plan_skips_gaps(lake: Lake) -> None:
    days = ["2024-01-01", "2024-01-02", "2024-01-05"]  # a gap of two days
    for k, day in enumerate(days):
        lake.write_bytes(f"raw/interactions/dt={day}/a.csv", CSV + b"u9,i9,1704103200,view,1\n" * k)
    lake.write_bytes("raw/interactions/dt=2024-01-05/b.jsonl", b'{"user_id":"u1"}\n{bad\n')
    chunks = plan_chunks(lake, dt.date(2024, 1, 1), dt.date(2024, 12, 31), 2, 1 << 30)
    assert chunks == [[dt.date(2024, 1, 1), dt.date(2024, 1, 2)], [dt.date(2024, 1, 5)]]
    batch = ingest_dates(lake, days, Settings())
    assert [(r.date.isoformat(), r.rows, r.skipped) for r in batch] == [
        ("2024-01-01", 3, False), ("2024-01-02", 4, False), ("2024-01-05", 7, False)
    ]  # fmt: skip
    jan5 = lake.read_partition("bronze/interactions", dt=dt.date(2024, 1, 5))
    assert sorted(jan5["source_file"].unique()) == [
        "raw/interactions/dt=2024-01-05/a.csv", "raw/interactions/dt=2024-01-05/b.jsonl"
    ]  # fmt: skip
    assert jan5.filter(pl.col("parse_error") == "malformed_line")["source_line"].to_list() == [2]
    single = [ingest_date(lake, d, Settings()) for d in days]  # unchanged: all skipped
    assert [(r.rows, r.skipped) for r in single] == [(3, True), (4, True), (7, True)]
