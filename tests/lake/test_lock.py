"""tasks.lake.lock: one writer per lake. The lease file, waiting and giving up with the
holder's name, re-entrance, the heartbeat, takeover of expired and dead holders (by one
contender only), a lease lost to another run, and real processes taking turns."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prefect import flow

from tasks.config import Settings
from tasks.lake import lock
from tasks.lake.lock import WRITER, LakeLocked, acquire, lake_lock
from tasks.lake.storage import Lake, lake_from


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    return lake_from(tmp_path / "lake")


def _settings(wait: float = 0.3, ttl: float = 60.0) -> Settings:
    return Settings(lock_wait_seconds=wait, lock_ttl_seconds=ttl)


def _lease_file(lake: Lake) -> Path:
    return Path(lake.base) / "_locks" / "writer.json"


def _in_thread(fn):
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except Exception as exc:
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out


def _try_lock(lake: Lake, settings: Settings):
    def take() -> str:
        with lake_lock(lake, WRITER, settings):
            return "acquired"

    return _in_thread(take)


def _write_lease(lake: Lake, **doc) -> None:
    path = _lease_file(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _iso(delta_seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delta_seconds)).isoformat()


def test_the_lease_names_its_holder_and_goes_when_released(lake: Lake) -> None:
    with lake_lock(lake, WRITER, _settings()) as lease:
        doc = json.loads(_lease_file(lake).read_text())
        assert lease.path == str(_lease_file(lake))
        assert doc["host"] == socket.gethostname() and doc["pid"] > 0
        assert doc["owner"].endswith(f"@{socket.gethostname()} pid {doc['pid']}")
        held = dt.datetime.fromisoformat(doc["expires_at"]) - dt.datetime.fromisoformat(
            doc["acquired_at"]
        )
        assert held == dt.timedelta(seconds=60)
    assert not _lease_file(lake).exists()
    assert list(_lease_file(lake).parent.iterdir()) == []  # no temporary file left


def test_a_second_writer_waits_then_fails_naming_the_holder(lake: Lake) -> None:
    with lake_lock(lake, WRITER, _settings()):
        doc = json.loads(_lease_file(lake).read_text())
        t0 = time.monotonic()
        out = _try_lock(lake, _settings(wait=0.4))
        waited = time.monotonic() - t0
    assert isinstance(out.get("error"), LakeLocked), out
    assert str(out["error"]) == (
        f"another metarec run holds the lake lock since {doc['acquired_at']}, owner "
        f"{doc['owner']} (lease {_lease_file(lake)}, expires {doc['expires_at']}); "
        "gave up after 0.4s (METAREC_LOCK_WAIT_SECONDS)"
    )
    assert 0.4 <= waited < 3


def test_a_waiting_writer_gets_the_lock_once_it_is_released(lake: Lake) -> None:
    spans: list[tuple[str, float, float]] = []

    def writer(name: str, hold: float) -> None:
        with lake_lock(lake, WRITER, _settings(wait=10)):
            t0 = time.monotonic()
            time.sleep(hold)
            spans.append((name, t0, time.monotonic()))

    first = threading.Thread(target=writer, args=("first", 0.6))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=writer, args=("second", 0.0))
    second.start()
    first.join()
    second.join()
    (n1, _, end1), (n2, start2, _) = spans
    assert (n1, n2) == ("first", "second") and start2 >= end1  # never both inside


def test_reentrant_in_one_context_but_not_across_threads(lake: Lake) -> None:
    with lake_lock(lake, WRITER, _settings()) as outer:
        with lake_lock(lake, WRITER, _settings()) as inner:  # the nightly inside a backfill
            assert inner is None and _lease_file(lake).exists()
        assert _lease_file(lake).exists()  # the inner block did not release it
        assert isinstance(_try_lock(lake, _settings(wait=0)).get("error"), LakeLocked)
    assert outer is not None and not _lease_file(lake).exists()


def test_the_heartbeat_keeps_a_long_run_locked(lake: Lake) -> None:
    ttl = 0.6
    with lake_lock(lake, WRITER, _settings(ttl=ttl)):
        first = json.loads(_lease_file(lake).read_text())["expires_at"]
        time.sleep(3 * ttl)  # without renewals the lease would have expired twice over
        later = json.loads(_lease_file(lake).read_text())
        assert later["expires_at"] > first and later["renewed_at"] > later["acquired_at"]
        assert isinstance(_try_lock(lake, _settings(wait=0, ttl=ttl)).get("error"), LakeLocked)


def test_an_expired_lease_of_another_host_is_taken_over(lake: Lake, caplog) -> None:
    _write_lease(lake, owner="ci@elsewhere pid 7", host="elsewhere", pid=7, token="t",
                 acquired_at=_iso(-7200), renewed_at=_iso(-700), expires_at=_iso(-400))  # fmt: skip
    with (
        caplog.at_level(logging.WARNING, logger=lock.__name__),
        lake_lock(lake, WRITER, _settings(wait=0)) as lease,
    ):
        assert json.loads(_lease_file(lake).read_text())["token"] == lease.doc["token"]
    assert f"took over the stale lake lock {_lease_file(lake)} of ci@elsewhere pid 7" in (
        caplog.text
    )
    # Not yet expired: the other host's run may be alive, so it is waited for.
    _write_lease(lake, owner="ci@elsewhere pid 7", host="elsewhere", pid=7, token="t",
                 acquired_at=_iso(-60), renewed_at=_iso(-10), expires_at=_iso(290))  # fmt: skip
    assert isinstance(_try_lock(lake, _settings(wait=0.2)).get("error"), LakeLocked)


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(lake: Lake) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    _write_lease(lake, owner=f"x@{socket.gethostname()} pid {pid}", host=socket.gethostname(),
                 pid=pid, token="t", acquired_at=_iso(-5), renewed_at=_iso(-5),
                 expires_at=_iso(3600))  # fmt: skip
    assert _try_lock(lake, _settings(wait=0)) == {"value": "acquired"}


def _contend(gate: threading.Barrier, lake: Lake, won: list) -> None:
    gate.wait()
    with contextlib.suppress(LakeLocked):
        won.append(acquire(lake, WRITER, ttl=60, wait=0))


def test_only_one_of_two_contenders_takes_a_stale_lease_over(lake: Lake) -> None:
    for _ in range(20):
        _write_lease(lake, owner="x@elsewhere pid 1", host="elsewhere", pid=1, token="t",
                     acquired_at=_iso(-99), renewed_at=_iso(-99), expires_at=_iso(-9))  # fmt: skip
        gate, won = threading.Barrier(2), []
        threads = [threading.Thread(target=_contend, args=(gate, lake, won)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        assert json.loads(_lease_file(lake).read_text())["token"] == won[0].doc["token"]
        _lease_file(lake).unlink()


def test_a_lease_taken_over_while_held_fails_the_run(lake: Lake) -> None:
    with pytest.raises(LakeLocked) as caught, lake_lock(lake, WRITER, _settings(ttl=0.6)):
        doc = json.loads(_lease_file(lake).read_text())
        _write_lease(lake, **{**doc, "token": "someone else"})  # the run stalled past its TTL
        time.sleep(0.6)
    assert str(caught.value) == (
        f"the lake lock {_lease_file(lake)} was taken over while this run held it"
    )
    assert json.loads(_lease_file(lake).read_text())["token"] == "someone else"  # left alone


def _hold_and_log(root: str, log_path: str, hold: float) -> None:
    with lake_lock(lake_from(root), WRITER, _settings(wait=30)):
        with open(log_path, "a") as f:
            f.write(f"in {time.monotonic()}\n")
        time.sleep(hold)
        with open(log_path, "a") as f:
            f.write(f"out {time.monotonic()}\n")


def test_real_processes_take_turns(lake: Lake, tmp_path: Path) -> None:
    log_path = tmp_path / "turns.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hold_and_log, args=(lake.root, str(log_path), 0.5))
             for _ in range(3)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    events = [line.split()[0] for line in log_path.read_text().splitlines()]
    assert events == ["in", "out"] * 3  # never two inside at once


@flow
def _inner_night(root: str) -> str:
    with lake_lock(lake_from(root), WRITER, _settings(wait=0)) as lease:
        return "re-entered" if lease is None else "took it"


@flow
def _outer_backfill(root: str) -> str:
    with lake_lock(lake_from(root), WRITER, _settings(wait=0)):
        return _inner_night(root)


@pytest.mark.usefixtures("prefect_harness")
def test_a_subflow_reenters_its_parent_flows_lock(lake: Lake) -> None:
    # The nightly runs inside a backfill as Prefect subflows: the lock must not wait on itself.
    assert _outer_backfill(lake.root) == "re-entered"
    assert _inner_night(lake.root) == "took it" and not _lease_file(lake).exists()
