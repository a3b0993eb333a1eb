"""tasks/ingest/stage.py: the skip (a bronze stamp of the file hashes), re-ingest on any
change, a memory:// lake, empty dates, and batches that match date-by-date runs."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from schemas.interactions import BRONZE
from tasks.config import Settings
from tasks.ingest import MANIFEST_VERSION, ingest_date, ingest_dates, plan_chunks
from tasks.lake.stamps import fingerprint, read_stamp
from tasks.lake.storage import Lake
from tests.ingest.samples import CSV, DAY, RAW, bronze, land, stored_schema


def test_unchanged_date_is_skipped_and_a_changed_file_reingests(lake: Lake) -> None:
    land(lake, "a.csv", CSV)
    first = ingest_date(lake, DAY, Settings())
    ingested_at = bronze(lake)["ingested_at"][0]
    again = ingest_date(lake, DAY, Settings())
    assert (again.skipped, again.rows) == (True, first.rows)
    assert again.bronze_path == first.bronze_path
    assert bronze(lake)["ingested_at"][0] == ingested_at  # partition untouched
    land(lake, "b.csv", CSV)  # an added file re-ingests the whole date
    third = ingest_date(lake, DAY, Settings())
    assert (third.skipped, third.rows, third.files) == (False, 6, 2)
    land(lake, "b.csv", CSV + b"u9,i9,1704103200,view,1\n")  # a changed file too
    assert ingest_date(lake, DAY, Settings()).rows == 7
    lake.delete_partition("bronze/interactions", dt=DAY)  # stamp without data: redone
    assert not ingest_date(lake, DAY, Settings()).skipped


def test_the_stamp_records_hashes_and_result(lake: Lake) -> None:
    name = land(lake, "a.csv", CSV)
    land(lake, "b.csv.gz", b"broken")
    ingest_date(lake, DAY, Settings())
    stamp = read_stamp(lake, "bronze/interactions", dt=DAY)
    hashes = stamp["result"]["files"]
    assert sorted(hashes) == [name, f"{RAW}/b.csv.gz"]
    read_settings = {"keep_unknown_columns", "max_file_bytes", "max_compression_ratio",
                     "ratio_check_min_bytes"}  # fmt: skip
    config = Settings().model_dump(include=read_settings)
    assert stamp["fingerprint"] == fingerprint(MANIFEST_VERSION, hashes, config)
    assert sorted(stamp["result"]["listing"]) == sorted(hashes)  # [size, mtime] per file
    assert stamp["result"]["listing"][name][0] == len(CSV)
    assert stamp["result"]["rows"] == 3
    assert stamp["result"]["corrupt_files"] == [[f"{RAW}/b.csv.gz", "invalid_gzip"]]
    folder = lake.path("bronze/interactions", dt=DAY)
    names = sorted(p.rsplit("/", 1)[-1] for p in lake.fs.ls(folder))
    assert names == ["_stamp.json", "part-0.parquet"]  # no other manifest beside it
    skipped = ingest_date(lake, DAY, Settings())
    assert skipped.skipped and skipped.corrupt_files == [(f"{RAW}/b.csv.gz", "invalid_gzip")]


def test_memory_lake() -> None:
    lake = Lake("memory://metarec-test-ingest")
    try:
        land(lake, "a.csv", CSV)
        assert ingest_date(lake, DAY, Settings()).rows == 3
        assert lake.read_partition("bronze/interactions", dt=DAY).height == 3
        assert ingest_date(lake, DAY, Settings()).skipped
    finally:
        lake.fs.rm(lake.base, recursive=True)


def test_date_without_files_gives_an_empty_partition(lake: Lake) -> None:
    result = ingest_date(lake, DAY, Settings())
    assert (result.files, result.rows) == (0, 0)
    assert stored_schema(lake, "bronze/interactions").equals(BRONZE)
    assert bronze(lake).height == 0


def test_batch_of_dates_matches_date_by_date_and_plan_skips_gaps(lake: Lake) -> None:
    days = [dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 5)]  # a gap of two days
    for k, day in enumerate(days):
        lake.write_bytes(f"raw/interactions/dt={day}/a.csv", CSV + b"u9,i9,1704103200,view,1\n" * k)
    lake.write_bytes("raw/interactions/dt=2024-01-05/b.jsonl", b'{"user_id":"u1"}\n{bad\n')
    chunks = plan_chunks(lake, dt.date(2024, 1, 1), dt.date(2024, 12, 31), 2, 1 << 30)
    assert chunks == [[days[0], days[1]], [days[2]]]
    assert plan_chunks(lake, days[1], days[1], 2, 1 << 30) == [[days[1]]]
    batch = ingest_dates(lake, [*days, days[0]], Settings())  # a repeated date counts once
    assert [(r.date, r.rows, r.skipped) for r in batch] == [
        (days[0], 3, False), (days[1], 4, False), (days[2], 7, False)
    ]  # fmt: skip
    jan5 = lake.read_partition("bronze/interactions", dt=days[2])
    assert sorted(jan5["source_file"].unique()) == [
        "raw/interactions/dt=2024-01-05/a.csv", "raw/interactions/dt=2024-01-05/b.jsonl"
    ]  # fmt: skip
    assert jan5.filter(pl.col("parse_error") == "malformed_line")["source_line"].to_list() == [2]
    assert lake.read_partition("bronze/interactions", dt=days[0]).height == 3  # no mixing
    single = [ingest_date(lake, d, Settings()) for d in days]  # unchanged: all skipped
    assert [(r.rows, r.skipped) for r in single] == [(3, True), (4, True), (7, True)]


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 30])
def test_chunking_does_not_change_rows(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    monkeypatch.setattr("tasks.ingest.stage.CHUNK_BYTES", chunk_bytes)
    days = [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]
    for day in days:
        lake.write_bytes(f"raw/interactions/dt={day}/a.csv", CSV)
        lake.write_bytes(f"raw/interactions/dt={day}/b.csv", CSV)
    assert [r.rows for r in ingest_dates(lake, days, Settings())] == [6, 6]
    for day in days:
        part = lake.read_partition("bronze/interactions", dt=day)
        assert part.select("source_file", "source_line").n_unique() == 6
