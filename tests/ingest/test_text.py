"""tasks/ingest/text.py through ingest_date: CSV fields typed with the raw text kept,
malformed and badly encoded lines with their line numbers, JSONL bad lines and unknown keys."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import polars as pl
import pytest

from schemas.interactions import BRONZE
from tasks.config import Settings
from tasks.ingest import ingest_date
from tasks.lake.storage import Lake
from tests.ingest.samples import CSV, DAY, bronze, land, stored_schema


@pytest.mark.parametrize("gz", [False, True])
def test_csv_rows_are_typed_with_raw_text_kept(lake: Lake, gz: bool) -> None:
    name = land(lake, "a.csv.gz" if gz else "a.csv", gzip.compress(CSV) if gz else CSV)
    result = ingest_date(lake, DAY, Settings())
    assert (result.files, result.rows, result.skipped, result.corrupt_files) == (1, 3, False, [])
    b = bronze(lake)
    assert stored_schema(lake, "bronze/interactions").equals(BRONZE)
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
    assert b["ingested_at"].n_unique() == 1 and b["ingested_at"].null_count() == 0


def test_malformed_and_badly_encoded_csv_lines_keep_their_line_numbers(lake: Lake) -> None:
    land(
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
    b = bronze(lake)
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


def test_stray_quote_inside_a_field_keeps_every_line_apart(lake: Lake) -> None:
    land(
        lake,
        "a.csv",
        b"user_id,item_id,ts\n"
        b'u1,i"1",1704103200\n'  # 2: quotes inside an unquoted field
        b'u2,"i2",1704103200\n',  # 3: a properly quoted field
    )
    result = ingest_date(lake, DAY, Settings())
    b = bronze(lake)
    assert result.rows == 2 and b["source_line"].to_list() == [2, 3]
    assert b.filter(pl.col("source_line") == 3)["item_id"].item() == "i2"


def test_jsonl_bad_lines_and_unknown_keys(lake: Lake) -> None:
    name = land(
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
    b = bronze(lake)
    assert b["parse_error"].to_list() == [
        None, None, "malformed_line", "malformed_line", "invalid_encoding"
    ]  # fmt: skip
    assert b["user_id"].to_list()[:2] == ["u1", "2"]
    assert b["ts"][1] == dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC)  # naive = UTC
    assert b["extra"].to_list()[:2] == [None, None]  # "device" dropped: reported only


def test_unbalanced_quotes_quarantine_only_their_lines(lake: Lake) -> None:
    # Every quoted line of this file has an odd number of quotes: before the fix Arrow got
    # an empty batch and the whole file was lost as read_error ("Empty CSV file").
    from tasks.validate import validate_date

    land(
        lake,
        "a.csv",
        b"user_id,item_id,ts\n"
        b"u1,i1,1704103200\n"  # 2: clean
        b'u2,"i2,1704103200\n'  # 3: unbalanced quote
        b"u3,i3,1704103200\n"  # 4: clean
        b'u4,i"4,1704103200\n'  # 5: a lone quote inside a field
        b"u1,i1,1704103200\n",  # 6: a duplicate of line 2
    )
    # A 2 MiB quoted field: longer than Arrow's block, so Arrow raises on the whole batch.
    land(lake, "b.csv", b'user_id,item_id,ts\nu5,"i' + b"x" * (2 << 20) + b'",1704103200\n')
    result = ingest_date(lake, DAY, Settings())
    assert (result.rows, result.corrupt_files) == (6, [])
    b = bronze(lake)
    got = {
        (f.rsplit("/", 1)[-1], n): e
        for f, n, e in b.select("source_file", "source_line", "parse_error").iter_rows()
    }
    assert got == {
        ("a.csv", 2): None,
        ("a.csv", 3): "malformed_line",
        ("a.csv", 4): None,
        ("a.csv", 5): "malformed_line",
        ("a.csv", 6): None,
        ("b.csv", 2): "malformed_line",
    }
    v = validate_date(lake, DAY, Settings(max_bad_share=1.0))
    assert (v.raw_rows, v.silver_rows, v.duplicates) == (6, 2, 1)
    assert v.quarantined == {"malformed_line": 3}
    assert v.raw_rows == v.silver_rows + sum(v.quarantined.values()) + v.duplicates
    q = lake.read_partition("quarantine/interactions", dt=DAY)
    lines = sorted(
        (f.rsplit("/", 1)[-1], n) for f, n in q.select("source_file", "source_line").rows()
    )
    assert lines == [("a.csv", 3), ("a.csv", 5), ("b.csv", 2)]
    assert set(q["reason"]) == {"malformed_line"}
