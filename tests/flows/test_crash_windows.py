"""Crash windows of one stage, without processes: a crash between a silver partition and
its stamp costs only a recomputation; a crash while a checkpoint is written leaves the
previous checkpoint whole. The real kills of a whole `metarec nightly`: test_crash.py."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, fields
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from schemas import tables
from tasks.config import Settings
from tasks.ingest import ingest_dates
from tasks.lake import durable, stamps
from tasks.lake.storage import Lake, lake_from
from tasks.models.metalearner.stage import TrainResult, latest_checkpoint, save_checkpoint
from tasks.validate import validate_dates


def _synth(root: Path, days: int) -> Lake:
    """A small synthetic lake (the crash tests' generator settings)."""
    args = ["--users", "300", "--items", "200", "--days", str(days), "--events-per-day", "250"]
    assert main(["synth", "--storage", str(root), *args, "--seed", "3"]) == 0
    return lake_from(root)


def test_a_crash_between_silver_and_its_stamp_costs_only_a_recompute(tmp_path: Path) -> None:
    lake = _synth(tmp_path / "lake", days=3)
    days = [dt.date(2024, 1, d) for d in (1, 2, 3)]
    settings = Settings(storage=lake.root)
    ingest_dates(lake, days, settings)
    first = validate_dates(lake, days, settings)
    silver = {d: Path(lake.partition_file(tables.SILVER, dt=d)) for d in days}
    inode = {d: silver[d].stat().st_ino for d in days}
    before = {d: pl.read_parquet(silver[d]) for d in days}
    # Killed after day 2's silver was renamed into place, before its stamp was written.
    (Path(lake.base) / stamps.stamp_path(lake, tables.SILVER, dt=days[1])).unlink()
    again = validate_dates(lake, days, settings)
    assert [r.silver_rows for r in again] == [r.silver_rows for r in first]
    assert silver[days[1]].stat().st_ino != inode[days[1]]  # recomputed ...
    assert [silver[d].stat().st_ino for d in (days[0], days[2])] == [inode[days[0]],
                                                                    inode[days[2]]]  # fmt: skip
    for d in days:  # ... to the same rows, with one accounting row per date, not two
        assert pl.read_parquet(silver[d]).equals(before[d])
        runs = lake.read_partition(tables.RUNS, stage="validate", dt=d)
        assert runs.height == 1 and runs["silver_rows"].to_list() == [before[d].height]
    assert stamps.read_stamp(lake, tables.SILVER, dt=days[1]) is not None


@dataclass
class _Files:
    files: dict[str, bytes]

    def to_files(self) -> dict[str, bytes]:
        return self.files


def _result(tag: bytes) -> TrainResult:
    names = ("model.pt", "config.json", "item_ids.json", "encoders.json")
    values = {f.name: None for f in fields(TrainResult)}
    return TrainResult(**{**values, "model": _Files({n: tag for n in names}), "log": [],
                          "best_step": 1, "steps": 1})  # fmt: skip


def test_a_crash_mid_checkpoint_leaves_the_previous_checkpoint_whole(
    tmp_path: Path, monkeypatch
) -> None:
    lake = lake_from(tmp_path / "lake")
    day = dt.date(2024, 1, 5)
    url = save_checkpoint(_result(b"old"), lake, day)
    folder = Path(lake.path(tables.MODELS, run_date=day))
    old = {p.name: p.read_bytes() for p in folder.iterdir()}
    written: list[str] = []
    real = durable._write_synced

    def die_on_third_file(path: str, payload: bytes) -> None:
        if len(written) == 2:
            raise KeyboardInterrupt("killed")  # the process dies mid-save
        written.append(path)
        real(path, payload)

    monkeypatch.setattr(durable, "_write_synced", die_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_result(b"new"), lake, day)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == old  # not a mix
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    assert latest_checkpoint(lake, day + dt.timedelta(days=1)) == url
    save_checkpoint(_result(b"new"), lake, day)
    assert (folder / "model.pt").read_bytes() == b"new"
    assert json.loads((folder / "metrics.json").read_text())["steps"] == 1
