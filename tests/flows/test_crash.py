"""Crash safety, tested with real kills (slow; CI runs it; the crash windows of one stage,
without processes: test_crash_windows.py).

Real `metarec nightly` processes on one small synthetic lake. A second run started while
the first holds the lake fails at once, naming it. A run killed with SIGKILL at each
stage boundary (after ingest, validate, episodes, train, score, publish; each kill lands
when the stage's output appears), then rerun, publishes the very table an uninterrupted
run published, while readers polling gold/recommendations never see a broken file; and
the temporary Prefect server of a killed CLI dies with it.
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
from pathlib import Path

import duckdb
import polars as pl
import psutil
import pyarrow.parquet as pq
import pytest

from flows import ops
from flows.cli import main
from schemas.recommendations import RECOMMENDATIONS
from tasks.lake.storage import Lake, lake_from

# 45 days: the night's holdout looks for returning users over a 30-day gap.
DAYS = 45
LAST = dt.date(2024, 1, 1) + dt.timedelta(days=DAYS - 1)
SYNTH = ["--users", "300", "--items", "200", "--days", str(DAYS), "--events-per-day", "250",
         "--seed", "3"]  # fmt: skip


def _synth(root: Path) -> Lake:
    """The synthetic lake of these tests (SYNTH)."""
    assert main(["synth", "--storage", str(root), *SYNTH]) == 0
    return lake_from(root)


# ---- slow: real processes, real kills ---------------------------------------------------

DATE = LAST.isoformat()
# Five of the runs below train (the reference, and the runs killed at train, score and
# publish, and the rerun): training is most of a run (~0.75 s a step on 2 cores), and a
# 3-step checkpoint is a checkpoint all the same; the meta-learner still serves segments
# of the table (asserted below), so the rerun's equality covers its training too.
NIGHTLY = ["nightly", "--date", DATE, "--train-steps", "3"]
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
    assert "metalearner" in set(reference["table"]["model"])  # a trained model serves
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
