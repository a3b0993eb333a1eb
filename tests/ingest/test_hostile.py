"""Hostile input at the edge of ingest (issue 12): folders that are not dates, a Parquet
file with nested ids or a column no reader expects, an error in one file or one parse,
zero-byte files, and unknown columns (an `email`) that must not reach bronze."""

from __future__ import annotations

import datetime as dt
import gzip
import io

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import tables
from tasks.config import Settings
from tasks.ingest import ingest_date, ingest_dates, plan_chunks, readers
from tasks.lake.listing import raw_dates, stray_partitions
from tasks.lake.storage import Lake
from tests.ingest.samples import CSV, DAY, RAW, bronze, land

DAY2 = DAY + dt.timedelta(days=1)


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_only_exact_iso_date_folders_are_dates(lake: Lake) -> None:
    for folder in ("dt=2024-01-01", "dt=junk", "dt=20240115", "dt=2024-W03-1", "dt=2024-02-30"):
        lake.write_bytes(f"raw/interactions/{folder}/a.csv", CSV)
    lake.write_bytes("raw/interactions/notes.txt", b"hello")
    lake.write_bytes("raw/interactions/_SUCCESS", b"")  # hidden: neither
    assert lake.partitions(tables.RAW_INTERACTIONS) == ["2024-01-01"]
    assert stray_partitions(lake) == [
        "dt=2024-02-30", "dt=2024-W03-1", "dt=20240115", "dt=junk", "notes.txt"
    ]  # fmt: skip
    assert raw_dates(lake, dt.date(2024, 12, 31)) == [DAY]  # the nightly's listing
    assert plan_chunks(lake, DAY, dt.date(2024, 12, 31), 512, 1 << 30) == [[DAY]]
    assert ingest_date(lake, DAY, Settings()).rows == 3


def test_nested_ids_in_parquet_are_rows_flagged_not_a_failed_chunk(lake: Lake) -> None:
    nested = pa.table(
        {
            "user_id": pa.array([[1, 2], None, [3]], pa.list_(pa.int64())),
            "item_id": ["a", "b", "c"],
            "ts": pa.array([[1], [2], [3]], pa.list_(pa.int64())),  # nested ts: text, unparsed
        }
    )
    flags = pa.table({"user_id": ["u1", "u2"], "item_id": pa.array([True, None]), "ts": [1, 2]})
    nested_name = land(lake, "nested.parquet", _parquet(nested))
    flags_name = land(lake, "flags.parquet", _parquet(flags))
    land(lake, "a.csv", CSV)
    lake.write_bytes(f"raw/interactions/dt={DAY2}/a.csv", CSV)
    results = ingest_dates(lake, [DAY, DAY2], Settings())
    assert [(r.rows, r.corrupt_files) for r in results] == [(8, []), (3, [])]
    b = bronze(lake)
    n = b.filter(pl.col("source_file") == nested_name)
    assert n["user_id"].to_list() == ["[1,2]", None, "[3]"]
    assert n["parse_error"].to_list() == ["invalid_user_id", None, "invalid_user_id"]
    assert n["ts_raw"].to_list() == ["[1]", "[2]", "[3]"] and n["ts"].null_count() == 3
    f = b.filter(pl.col("source_file") == flags_name)
    assert f["item_id"].to_list() == ["true", None]
    assert f["parse_error"].to_list() == ["invalid_item_id", None]


def test_an_error_in_one_file_is_named_and_the_rest_goes_on(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = readers._typed_parquet

    def boom(frame: pl.DataFrame, unknown: list[str]) -> pl.DataFrame:
        if "boom" in frame.columns:
            raise pl.exceptions.InvalidOperationError("cannot cast List type\nmore detail")
        return good(frame, unknown)

    monkeypatch.setattr(readers, "_typed_parquet", boom)
    bad = pa.table({"user_id": ["u1"], "item_id": ["i1"], "ts": [1704103200], "boom": [1]})
    land(lake, "bad.parquet", _parquet(bad))
    land(lake, "a.csv", CSV)
    lake.write_bytes(f"raw/interactions/dt={DAY2}/a.csv", CSV)
    results = ingest_dates(lake, [DAY, DAY2], Settings(keep_unknown_columns=True))
    assert results[0].corrupt_files == [
        (f"{RAW}/bad.parquet", "read_error: InvalidOperationError: cannot cast List type")
    ]
    assert [(r.rows, r.skipped) for r in results] == [(3, False), (3, False)]


def test_a_parser_error_fails_only_the_file_it_came_from(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = readers.parse_jsonl

    def fragile(lines: pl.DataFrame, keep: bool):
        if lines["text"].str.contains("poison").any():
            raise RuntimeError("parser gave up")
        return good(lines, keep)

    monkeypatch.setattr(readers, "parse_jsonl", fragile)
    land(lake, "a.jsonl", b'{"user_id":"u1","item_id":"i1","ts":1704103200}\n')
    land(lake, "b.jsonl", b'{"user_id":"poison","item_id":"i1","ts":1704103200}\n')
    land(lake, "c.jsonl", b'{"user_id":"u3","item_id":"i1","ts":1704103200}\n')
    result = ingest_date(lake, DAY, Settings())
    assert result.corrupt_files == [(f"{RAW}/b.jsonl", "read_error: RuntimeError: parser gave up")]
    assert result.rows == 2
    assert bronze(lake)["user_id"].to_list() == ["u1", "u3"]


def test_zero_byte_and_empty_files_are_reported(lake: Lake) -> None:
    land(lake, "a.csv", CSV)
    land(lake, "empty.csv", b"")
    land(lake, "empty.jsonl.gz", gzip.compress(b""))
    result = ingest_date(lake, DAY, Settings())
    assert result.corrupt_files == [
        (f"{RAW}/empty.csv", "empty_file"), (f"{RAW}/empty.jsonl.gz", "empty_file")
    ]  # fmt: skip
    assert result.rows == 3


def test_a_header_of_commas_is_rejected_not_split(lake: Lake) -> None:
    land(lake, "a.csv", CSV)
    land(lake, "wide.csv.gz", gzip.compress(b"user_id,item_id,ts" + b"," * 1_000_000 + b"\n"))
    wide = pa.table(
        {"user_id": ["u"], "item_id": ["i"], "ts": [1], **{f"c{k}": [k] for k in range(1001)}}
    )
    land(lake, "wide.parquet", _parquet(wide))
    result = ingest_date(lake, DAY, Settings())
    assert result.corrupt_files == [
        (f"{RAW}/wide.csv.gz", "too_many_columns: 1,000,003 (at most 1,000)"),
        (f"{RAW}/wide.parquet", "too_many_columns: 1,004 (at most 1,000)"),
    ]
    assert result.rows == 3


def test_unknown_columns_never_reach_bronze_unless_kept(lake: Lake) -> None:
    csv = b"user_id,item_id,ts,email\nu1,i1,2024-01-01T10:00:00Z,alice@example.com\n"
    jsonl = b'{"user_id":"u2","item_id":"i2","ts":1704103200,"email":"bob@example.com"}\n'
    table = pa.table({"user_id": ["u3"], "item_id": ["i3"], "ts": [1704103200],
                      "email": ["carol@example.com"]})  # fmt: skip
    names = [land(lake, "a.csv", csv), land(lake, "b.jsonl", jsonl),
             land(lake, "c.parquet", _parquet(table))]  # fmt: skip
    result = ingest_date(lake, DAY, Settings())
    assert result.unknown_columns == {name: ["email"] for name in names}
    assert result.rows == 3
    stored = lake.fs.cat_file(lake.partition_file("bronze/interactions", dt=DAY))
    assert b"example.com" not in stored and b"email" not in stored
    assert bronze(lake)["extra"].null_count() == 3
    kept = ingest_date(lake, DAY, Settings(keep_unknown_columns=True))  # another fingerprint
    assert not kept.skipped and kept.unknown_columns == result.unknown_columns
    assert sorted(bronze(lake)["extra"].to_list()) == [
        '{"email":"alice@example.com"}',
        '{"email":"bob@example.com"}',
        '{"email":"carol@example.com"}',
    ]
