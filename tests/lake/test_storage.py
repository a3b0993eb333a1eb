"""tasks.lake: table paths from the registry, atomic partitions cast to the contract,
scans that open only the partitions and columns asked for, stamps, dates."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest

from schemas import tables
from tasks.lake import Lake, date_range, durable, end_of_day, lake_from, parse_date, stamps

DAYS = [dt.date(2024, 1, d) for d in (1, 2, 3)]


def _silver(day: dt.date, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [f"u{k}" for k in range(n)],
            "item_id": [f"i{k % 3}" for k in range(n)],
            "ts": [dt.datetime.combine(day, dt.time(12), dt.UTC)] * n,
            "event_type": ["view"] * n,
            "value": [1.0] * n,
            "source_file": ["a.csv"] * n,
            "source_line": list(range(2, n + 2)),
            "not_in_contract": [0] * n,
        }
    )


@pytest.fixture()
def lake(tmp_path) -> Lake:
    lake = lake_from(tmp_path / "lake")
    for k, day in enumerate(DAYS, start=1):
        lake.write_partition(tables.SILVER, _silver(day, k), dt=day)
    return lake


def test_partition_is_cast_to_the_declared_schema(lake: Lake):
    path = lake.partition_file(tables.SILVER, dt=DAYS[0])
    assert path.endswith("silver/interactions/dt=2024-01-01/part-0.parquet")
    stored = pl.read_parquet(path)
    assert stored.columns == tables.SILVER.schema.names  # extra column dropped, order kept
    assert stored.schema["ts"] == pl.Datetime("us", "UTC")
    assert lake.partitions(tables.SILVER) == [d.isoformat() for d in DAYS]
    # Nothing temporary is left beside the partition (written then renamed).
    assert lake.fs.ls(lake.path(tables.SILVER, dt=DAYS[0]), detail=False) == [path]


def test_scan_prunes_partitions_and_columns(lake: Lake):
    frame = lake.scan(tables.SILVER, until=DAYS[1], columns=["user_id"])
    assert frame.columns == ["user_id", "dt"]
    assert frame.height == 1 + 2  # partitions of day 1 and 2 only
    assert frame["dt"].dtype == pl.Date
    assert lake.scan(tables.SILVER, values=["2024-01-03"]).height == 3


def test_pieces_are_written_as_one_partition_and_a_failed_write_leaves_nothing(lake: Lake):
    pieces = (_silver(DAYS[0], 2) for _ in range(3))
    lake.write_partition(tables.SILVER, pieces, dt="2024-02-01")
    assert lake.read_partition(tables.SILVER, dt="2024-02-01").height == 6
    with pytest.raises(RuntimeError), lake.partition_writer(tables.SILVER, dt="2024-02-02") as w:
        w.write(_silver(DAYS[0], 2))
        raise RuntimeError("crash mid-partition")
    assert not lake.fs.exists(lake.path(tables.SILVER, dt="2024-02-02"))


def test_tables_are_declared_once(lake: Lake):
    with pytest.raises(ValueError, match=r"declared in schemas/tables\.py"):
        lake.write_partition("gold/undeclared", _silver(DAYS[0], 1), run_date=DAYS[0])
    assert len({t.name for t in tables.ALL}) == len(tables.ALL)


def test_stamps_skip_only_unchanged_inputs(lake: Lake):
    inputs = stamps.fingerprint("v1", {"a.csv": "hash"})
    assert stamps.unchanged(lake, tables.SILVER, inputs, dt=DAYS[0]) is None
    stamps.write_stamp(lake, tables.SILVER, inputs, {"rows": 1}, dt=DAYS[0])
    assert stamps.unchanged(lake, tables.SILVER, inputs, dt=DAYS[0]) == {"rows": 1}
    changed = stamps.fingerprint("v1", {"a.csv": "other"})
    assert stamps.unchanged(lake, tables.SILVER, changed, dt=DAYS[0]) is None
    lake.delete_partition(tables.SILVER, dt=DAYS[0])  # the data went: recompute
    assert stamps.unchanged(lake, tables.SILVER, inputs, dt=DAYS[0]) is None


def test_dates_are_parsed_at_the_edge():
    assert parse_date("2024-01-02") == dt.date(2024, 1, 2)
    assert parse_date(dt.datetime(2024, 1, 2, 5)) == dt.date(2024, 1, 2)
    with pytest.raises(ValueError, match="not an ISO date"):
        parse_date("02/01/2024")
    assert date_range("2024-01-30", "2024-02-01")[-1] == dt.date(2024, 2, 1)
    with pytest.raises(ValueError, match="before start"):
        date_range("2024-01-02", "2024-01-01")
    assert end_of_day(dt.date(2024, 1, 2)) == dt.datetime(2024, 1, 3, tzinfo=dt.UTC)


def _record_syncs(monkeypatch) -> list[tuple[str, ...]]:
    """os.fsync and os.replace/os.rename calls, in order, with the paths they touched."""
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("replace", os.path.basename(src), dst))
        real_replace(src, dst)

    def rename(src: str, dst: str) -> None:
        events.append(("rename", os.path.basename(src), dst))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    return events


def test_a_local_write_is_on_disk_before_its_rename(lake: Lake, monkeypatch) -> None:
    folder = lake.path(tables.SILVER, dt="2024-03-01")
    events = _record_syncs(monkeypatch)
    path = lake.write_partition(tables.SILVER, _silver(DAYS[0], 2), dt="2024-03-01")
    # The new partition folder's entry in the table folder, the temporary file's bytes,
    # the rename, then the folder holding the new name: each on disk before the next.
    (made, tmp), (synced, tmp_again), renamed, last = events
    assert (made, tmp) == ("fsync", lake.path(tables.SILVER))
    assert synced == "fsync" and tmp_again.startswith(f"{folder}/.part-0.parquet.")
    assert renamed == ("replace", tmp_again.rsplit("/", 1)[-1], path)
    assert last == ("fsync", folder)
    assert lake.read_partition(tables.SILVER, dt="2024-03-01").height == 2


def test_a_folder_is_replaced_whole(lake: Lake, monkeypatch) -> None:
    lake.replace_folder("models/run_date=2024-01-01", {"a.bin": b"old a", "b.bin": b"old b"})
    folder = Path(lake.base) / "models" / "run_date=2024-01-01"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {"a.bin": b"old a",
                                                                  "b.bin": b"old b"}  # fmt: skip
    # A crash while the new files are written leaves the old folder as it was.
    real = durable._write_synced
    written: list[str] = []

    def crash_on_second(path: str, payload: bytes) -> None:
        if written:
            raise OSError("disk full")
        written.append(path)
        real(path, payload)

    monkeypatch.setattr(durable, "_write_synced", crash_on_second)
    with pytest.raises(OSError, match="disk full"):
        lake.replace_folder("models/run_date=2024-01-01", {"a.bin": b"new", "c.bin": b"new"})
    monkeypatch.undo()
    assert written and "/.run_date=2024-01-01." in written[0]  # built aside, not in place
    assert sorted(p.name for p in folder.iterdir()) == ["a.bin", "b.bin"]
    assert [p.name for p in folder.parent.iterdir()] == ["run_date=2024-01-01"]  # no leftovers
    lake.replace_folder("models/run_date=2024-01-01", {"a.bin": b"new a", "c.bin": b"new c"})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {"a.bin": b"new a",
                                                                  "c.bin": b"new c"}  # fmt: skip
    assert [p.name for p in folder.parent.iterdir()] == ["run_date=2024-01-01"]
