"""tasks/ingest/readers.py: landing Parquet typed as it is (unknown columns dropped unless
kept), unreadable files reported while the other files of the date go on, every bronze
column present in order."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.interactions import BRONZE
from tasks.config import Settings
from tasks.ingest import ingest_date
from tasks.ingest.readers import READ_COLUMNS, LandingFile, ReadOptions, ReadReport, read_files
from tasks.lake.storage import Lake
from tests.ingest.samples import CSV, DAY, RAW, bronze, land

JSONL = b'{"user_id":"u","zone":1}\n'


@pytest.mark.parametrize("keep", [False, True])
def test_parquet_rows_numbered_and_unknown_columns_dropped_unless_kept(
    lake: Lake, keep: bool
) -> None:
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
    name = land(lake, "c.parquet", buf.getvalue())
    result = ingest_date(lake, DAY, Settings(keep_unknown_columns=keep))
    assert result.unknown_columns == {name: ["colour"]}  # reported either way
    b = bronze(lake)
    assert b["source_line"].to_list() == [1, 2]
    assert b["user_id"].to_list() == ["1", "2"]
    assert b["ts"].to_list() == [dt.datetime(2024, 1, 1, 5, tzinfo=dt.UTC), None]
    extra = [json.loads(e) if e else None for e in b["extra"]]
    assert extra == ([{"colour": "red"}, {"colour": "blue"}] if keep else [None, None])


def test_unreadable_files_are_reported_and_the_rest_goes_on(lake: Lake) -> None:
    land(lake, "a.csv", CSV)
    land(lake, "b.csv.gz", gzip.compress(CSV * 50)[:-40])
    land(lake, "c.parquet", b"PAR1 not really parquet")
    land(lake, "d.csv.gz", b"not gzip at all")
    land(lake, "e.xml", b"<rows/>")
    land(lake, "f.csv", b",\nu1,i1\n")
    result = ingest_date(lake, DAY, Settings())
    assert result.rows == 3
    assert result.corrupt_files == [
        (f"{RAW}/b.csv.gz", "truncated_gzip"),
        (f"{RAW}/c.parquet", "invalid_parquet"),
        (f"{RAW}/d.csv.gz", "invalid_gzip"),
        (f"{RAW}/e.xml", "unsupported_format"),
        (f"{RAW}/f.csv", "missing_header"),
    ]
    assert bronze(lake)["source_file"].unique().to_list() == [f"{RAW}/a.csv"]


def test_pieces_have_every_bronze_column_but_ingested_at_and_the_day(lake: Lake) -> None:
    files = [
        LandingFile(DAY, name, lake.path("raw/interactions", dt=DAY) + name[len(RAW) :], n)
        for name, n in ((land(lake, "a.csv", CSV), len(CSV)),
                        (land(lake, "b.jsonl", JSONL), len(JSONL)))
    ]  # fmt: skip
    report = ReadReport()
    pieces = list(read_files(lake.fs, files, ReadOptions.of(Settings()), report))
    assert [n for n in BRONZE.names if n != "ingested_at"] == READ_COLUMNS
    assert all(p.columns == [*READ_COLUMNS, "_day"] for p in pieces)
    assert sum(p.height for p in pieces) == 4
    assert report.corrupt == {}
    assert report.unknown == {f"{RAW}/b.jsonl": ["zone"]}
    assert report.yielded == {f"{RAW}/a.csv", f"{RAW}/b.jsonl"}
