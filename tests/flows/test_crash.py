"""Crash safety, tested with real kills.

Fast: a crash between a silver partition and its stamp costs only a recomputation; a crash
while a checkpoint is written leaves the previous checkpoint whole.

End to end (slow; CI runs it): real `metarec nightly` processes on one small synthetic
lake. A second run started while the first holds the lake fails at once, naming it. A run
killed with SIGKILL at each stage boundary (after ingest, validate, episodes, train,
score, publish; each kill lands when the stage's output appears), then rerun, publishes
the very table an uninterrupted run published, while readers polling
gold/recommendations never see a broken file; and the temporary Prefect server of a
killed CLI dies with it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import duckdb
import polars as pl
import psutil
import pyarrow.parquet as pq
import pytest

from flows import ops
from flows.cli import main
from schemas import tables
from schemas.recommendations import RECOMMENDATIONS
from tasks.config import Settings
from tasks.ingest import ingest_dates
from tasks.lake import durable, stamps
from tasks.lake.storage import Lake, lake_from
from tasks.models.metalearner.stage import TrainResult, latest_checkpoint, save_checkpoint
from tasks.validate import validate_dates

# 45 days: the night's holdout looks for returning users over a 30-day gap.
DAYS = 45
LAST = dt.date(2024, 1, 1) + dt.timedelta(days=DAYS - 1)
SYNTH = ["--users", "300", "--items", "200", "--days", str(DAYS), "--events-per-day", "250",
         "--seed", "3"]  # fmt: skip


def _synth(root: Path, days: int = DAYS) -> Lake:
    assert main(["synth", "--storage", str(root), *SYNTH[:4], "--days", str(days),
                 *SYNTH[6:]]) == 0  # fmt: skip
    return lake_from(root)


# ---- fast: the crash windows of one stage -----------------------------------------------


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


# ---- slow: real processes, real kills ---------------------------------------------------

DATE = LAST.isoformat()
NIGHTLY = ["nightly", "--date", DATE, "--train-steps", "20"]
# Each stage's output, as the lake path that appears when the stage is done.
STAGES = {
    "ingest": f"bronze/interactions/dt={DATE}/part-0.parquet",
    "validate": f"silver/interactions/dt={DATE}/part-0.parquet",
    "episodes": f"gold/episodes/run_date={DATE}/part-0.parquet",
    "train": f"models/run_date={DATE}/metrics.json",
    "score": f"staging/recommendations/run_date={DATE}",
    "publish": f"gold/recommendations/run_date={DATE}/part-0.parquet",
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash") / "base"
    _synth(root)
    return root


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[str]:
    """One Prefect server for the runs (the temporary one costs ~10 s per process)."""
    home = tmp_path_factory.mktemp("prefect-home")
    proc, api_url = ops.start_server(port=ops.free_port(), env=_env(home=home),
                                     log_path=home / "server.log")  # fmt: skip
    yield api_url
    ops.stop_process(proc)


def _env(home: Path | None = None, api_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in ops.child_env().items() if k != "PREFECT_API_URL"}
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return {**env, **extra}


def _start(root: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`metarec nightly` in a process of its own, its output to `log` (a pipe nobody reads
    would fill and block it)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *NIGHTLY, "--storage", str(root)], env=env,
            cwd=ops.REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _finish(proc: subprocess.Popen, log: Path) -> None:
    rc = proc.wait(timeout=300)
    assert rc == 0, log.read_text()[-4000:]


def _published(root: Path) -> pl.DataFrame:
    path = root / STAGES["publish"]
    return pl.read_parquet(path).drop("generated_at").sort("user_id", "rank")


@pytest.fixture(scope="module")
def reference(base: Path, api: str, tmp_path_factory) -> dict:
    """An uninterrupted nightly, and a second run started while it held the lake."""
    root = tmp_path_factory.mktemp("reference") / "lake"
    shutil.copytree(base, root)
    first = _start(root, _env(api_url=api), root.parent / "first.log")
    lease = root / "_locks" / "writer.json"
    deadline = time.monotonic() + 120
    while not lease.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    holder = json.loads(lease.read_text())
    second = subprocess.run(
        [sys.executable, "-m", "flows.cli", *NIGHTLY, "--storage", str(root)],
        env=_env(api_url=api, METAREC_LOCK_WAIT_SECONDS="1"), cwd=ops.REPO,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    _finish(first, root.parent / "first.log")
    return {"table": _published(root), "holder": holder, "second": second, "root": root}


@pytest.mark.slow
def test_a_second_run_on_a_locked_lake_fails_naming_the_first(reference: dict) -> None:
    second, holder = reference["second"], reference["holder"]
    lease = reference["root"] / "_locks" / "writer.json"
    assert second.returncode == 75, second.stderr[-3000:]
    assert second.stderr.endswith(
        f"metarec: error: another metarec run holds the lake lock since "
        f"{holder['acquired_at']}, owner {holder['owner']} (lease {lease}, expires "
        f"{holder['expires_at']}); gave up after 1s (METAREC_LOCK_WAIT_SECONDS)\n"
    )
    assert "Traceback" not in second.stderr
    # The first run published whole, untouched by the second, and let the lake go.
    assert reference["table"].height == 300 * 20
    assert not lease.exists()


class _Readers(threading.Thread):
    """Reads the published partitions over and over, as analysts and services would."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.reads, self.broken = root, 0, []
        self.halt = threading.Event()

    def run(self) -> None:
        folder = self.root / "gold" / "recommendations"
        glob = f"{folder}/run_date=*/*.parquet"
        while not self.halt.is_set():
            for path in folder.glob("run_date=*/part-0.parquet"):
                try:
                    table = pq.read_table(path)
                    assert table.num_rows > 0 and table.schema.names == RECOMMENDATIONS.names
                    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()
                    assert n[0][0] == table.num_rows
                    self.reads += 1
                except Exception as exc:  # a partial or broken file: what must never happen
                    self.broken.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.02)


def _kill_when(proc: subprocess.Popen, marker: Path) -> bool:
    """SIGKILL the run as soon as `marker` is (re)written; False when it ended first."""
    seen = marker.stat().st_ino if marker.exists() else None
    while proc.poll() is None:
        if marker.exists() and marker.stat().st_ino != seen:
            os.kill(proc.pid, signal.SIGKILL)  # the CLI only: its children are on their own
            proc.wait(timeout=60)
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_killed_at_every_stage_then_rerun_publishes_the_same_table(
    base: Path, api: str, reference: dict, tmp_path: Path
) -> None:
    root = tmp_path / "lake"
    shutil.copytree(base, root)
    readers = _Readers(root)
    readers.start()
    try:
        for n, (stage, marker) in enumerate(STAGES.items()):
            # The first run uses the CLI's temporary Prefect server: it must die with it.
            env = _env(home=tmp_path / "home") if n == 0 else _env(api_url=api)
            proc = _start(root, env, tmp_path / f"{n}-{stage}.log")
            server = _temporary_server(proc) if n == 0 else None
            assert _kill_when(proc, root / marker), f"the run ended before {stage} was done"
            if server is not None:
                assert _gone(server), f"the temporary Prefect server {server.pid} outlived the CLI"
        proc = _start(root, _env(api_url=api), tmp_path / "rerun.log")
        _finish(proc, tmp_path / "rerun.log")
    finally:
        readers.halt.set()
        readers.join()
    assert readers.broken == [] and readers.reads > 0
    got = _published(root)
    assert got.equals(reference["table"])
    assert not (root / "_locks" / "writer.json").exists()


def _temporary_server(proc: subprocess.Popen) -> psutil.Process:
    """The CLI's temporary Prefect API server (uvicorn), once it runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "uvicorn" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    raise AssertionError("no temporary Prefect server started")


def _gone(process: psutil.Process, timeout: float = 20.0) -> bool:
    """True once the process exited (a zombie nobody reaped yet counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    process.kill()  # do not leave it behind for the next test
    return False
