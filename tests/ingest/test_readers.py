"""tasks/ingest/readers.py: landing Parquet typed as it is, unreadable files reported while
the other files of the date go on, every bronze column present in order."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.interactions import BRONZE
from tasks.config import Settings
from tasks.ingest import ingest_date
from tasks.ingest.readers import READ_COLUMNS, read_files
from tasks.lake.storage import Lake
from tests.ingest.samples import CSV, DAY, RAW, bronze, land


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
    name = land(lake, "c.parquet", buf.getvalue())
    result = ingest_date(lake, DAY, Settings())
    assert result.unknown_columns == {name: ["colour"]}
    b = bronze(lake)
    assert b["source_line"].to_list() == [1, 2]
    assert b["user_id"].to_list() == ["1", "2"]
    assert b["ts"].to_list() == [dt.datetime(2024, 1, 1, 5, tzinfo=dt.UTC), None]
    assert [json.loads(e) for e in b["extra"]] == [{"colour": "red"}, {"colour": "blue"}]


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


def test_pieces_have_every_bronze_column_but_ingested_at_and_the_day() -> None:
    corrupt: dict[str, str] = {}
    unknown: dict[str, list[str]] = {}
    files = [(DAY, "x/a.csv", CSV), (DAY, "x/b.jsonl", b'{"user_id":"u","zone":1}\n')]
    pieces = list(read_files(files, corrupt, unknown))
    assert [n for n in BRONZE.names if n != "ingested_at"] == READ_COLUMNS
    assert all(p.columns == [*READ_COLUMNS, "_day"] for p in pieces)
    assert sum(p.height for p in pieces) == 4
    assert (corrupt, unknown) == ({}, {"x/b.jsonl": ["zone"]})
