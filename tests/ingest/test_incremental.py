"""Incremental listing (issue 12, finding 7): a rerun over unchanged raw files reads none of
them (names, sizes and mtimes match the bronze stamp); a touched file with the same bytes
is hashed once, not re-ingested, and read no more after; a changed file re-ingests."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tasks.config import Settings
from tasks.ingest import ingest_dates
from tasks.lake.stamps import read_stamp
from tasks.lake.storage import Lake
from tests.ingest.samples import CSV, DAY, RAW, bronze, land

DAYS = [DAY, DAY.replace(day=2)]


@pytest.fixture()
def opened(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Lake-relative paths of the raw files opened (any read goes through fs.open)."""
    paths: list[str] = []
    real = lake.fs.open

    def spy(path, *args, **kwargs):
        if "/raw/" in str(path):
            paths.append(lake.relpath(str(path)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(lake.fs, "open", spy)
    return paths


def test_a_rerun_reads_no_raw_file(lake: Lake, opened: list[str]) -> None:
    for day in DAYS:
        lake.write_bytes(f"raw/interactions/dt={day}/a.csv", CSV)
        lake.write_bytes(f"raw/interactions/dt={day}/b.csv.gz", b"broken")
    first = ingest_dates(lake, DAYS, Settings())
    assert [(r.rows, r.skipped, len(r.corrupt_files)) for r in first] == [(3, False, 1)] * 2
    assert len(opened) == 8  # each file hashed once, then read once
    opened.clear()
    again = ingest_dates(lake, DAYS, Settings())
    assert opened == []
    # The stamped result, corrupt files included.
    assert again == [dataclasses.replace(r, skipped=True) for r in first]


def test_touched_but_same_is_hashed_once_and_a_change_reingests(
    lake: Lake, opened: list[str]
) -> None:
    path = land(lake, "a.csv", CSV)
    ingest_dates(lake, [DAY], Settings())
    ingested_at = bronze(lake)["ingested_at"][0]
    local = lake.path("raw/interactions", dt=DAY) + "/a.csv"
    stat = os.stat(local)
    os.utime(local, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    opened.clear()
    (touched,) = ingest_dates(lake, [DAY], Settings())
    assert touched.skipped and opened == [path]  # hashed, not parsed
    assert bronze(lake)["ingested_at"][0] == ingested_at
    mtime = read_stamp(lake, "bronze/interactions", dt=DAY)["result"]["listing"][path][1]
    assert mtime == f"mtime={os.stat(local).st_mtime}"
    opened.clear()
    assert ingest_dates(lake, [DAY], Settings())[0].skipped and opened == []
    land(lake, "a.csv", CSV + b"u9,i9,1704103200,view,1\n")
    (changed,) = ingest_dates(lake, [DAY], Settings())
    assert (changed.skipped, changed.rows) == (False, 4)
    assert opened == [path, path]  # hashed, then read


def test_a_new_file_alone_makes_the_date_change(lake: Lake, opened: list[str]) -> None:
    land(lake, "a.csv", CSV)
    ingest_dates(lake, [DAY], Settings())
    land(lake, "b.csv", CSV)
    opened.clear()
    (result,) = ingest_dates(lake, [DAY], Settings())
    assert (result.skipped, result.rows, result.files) == (False, 6, 2)
    assert sorted(set(opened)) == [f"{RAW}/a.csv", f"{RAW}/b.csv"]
