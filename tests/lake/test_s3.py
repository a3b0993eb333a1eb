"""The lake on an object store, for real: an S3-compatible server (moto) on loopback, with
credentials and endpoint from the environment only, as s3fs reads them on a worker.
Partitions, scans, stamps, the raw listing, folders, the lock (conditional PUTs) and the
warehouse's local-only error."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import duckdb
import polars as pl
import pytest

pytest.importorskip("s3fs", reason="s3fs is a dev extra: scripts/setup.sh --dev")
pytest.importorskip("moto", reason="moto[server] is a dev extra: scripts/setup.sh --dev")

import fsspec

from flows.cli import main
from schemas import tables
from tasks.config import Settings
from tasks.lake import stamps, storage
from tasks.lake.listing import raw_listing
from tasks.lake.lock import WRITER, LakeLocked, acquire, lake_lock
from tasks.lake.lock_stores import S3Store, store_for
from tasks.lake.roots import StorageError
from tasks.lake.storage import Lake, lake_from
from tasks.serve.warehouse import DUCKDB_CONFIG, connect_warehouse, ensure_warehouse

DAYS = [dt.date(2024, 1, d) for d in (1, 2, 3)]
ROOT = "s3://metarec-test/lake"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, and the environment a worker would have: fake
    credentials and AWS_ENDPOINT_URL (botocore, so s3fs, reads it)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto server did not start")
            time.sleep(0.1)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        _forget_filesystems()
        fsspec.filesystem("s3").mkdir("metarec-test")
        try:
            yield url
        finally:
            _forget_filesystems()
            proc.terminate()
            proc.wait(timeout=10)


def _forget_filesystems() -> None:
    # Filesystems are cached per root (and by fsspec): none may outlive this server.
    storage._filesystem.cache_clear()
    fsspec.filesystem("s3").clear_instance_cache()


@pytest.fixture()
def lake(s3_endpoint: str) -> Iterator[Lake]:
    lake = lake_from(ROOT)
    yield lake
    if lake.fs.exists(lake.base):
        lake.fs.rm(lake.base, recursive=True)


def _frame(day: dt.date, n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": [f"u{k}" for k in range(n)], "item_id": [f"i{k % 3}" for k in range(n)],
        "ts": [dt.datetime.combine(day, dt.time(12), dt.UTC)] * n, "event_type": ["view"] * n,
        "value": [1.0] * n, "source_file": ["a.csv"] * n, "source_line": list(range(2, n + 2)),
    })  # fmt: skip


def test_the_root_is_an_object_store_and_must_exist_for_readers(lake: Lake) -> None:
    assert not lake.is_local and lake.base == "metarec-test/lake"
    with pytest.raises(StorageError, match=r"^no lake at s3://metarec-test/nolake: run "):
        lake_from("s3://metarec-test/nolake", must_exist=True)


def test_partitions_scans_and_deletes(lake: Lake) -> None:
    for k, day in enumerate(DAYS, start=1):
        lake.write_partition(tables.SILVER, _frame(day, k), dt=day)
    assert lake.partitions(tables.SILVER) == [d.isoformat() for d in DAYS]
    assert lake.url(tables.SILVER, dt=DAYS[0]) == f"{ROOT}/silver/interactions/dt=2024-01-01"
    assert lake.read_partition(tables.SILVER, dt=DAYS[1]).height == 2
    frame = lake.scan(tables.SILVER, until=DAYS[1], columns=["user_id"])
    assert frame.columns == ["user_id", "dt"] and frame.height == 3
    lazy = lake.scan_lazy(tables.SILVER, DAYS).collect()
    assert lazy.height == 6 and lazy["dt"].dtype == pl.Date
    names = lake.fs.ls(lake.path(tables.SILVER, dt=DAYS[0]), detail=False)
    assert names == [lake.partition_file(tables.SILVER, dt=DAYS[0])]  # no temporary left
    lake.delete_partition(tables.SILVER, dt=DAYS[0])
    assert lake.partitions(tables.SILVER) == [d.isoformat() for d in DAYS[1:]]


def test_stamps(lake: Lake) -> None:
    lake.write_partition(tables.SILVER, _frame(DAYS[0], 2), dt=DAYS[0])
    inputs = stamps.fingerprint("v1")
    assert stamps.unchanged(lake, tables.SILVER, inputs, dt=DAYS[0]) is None
    stamps.write_stamp(lake, tables.SILVER, inputs, {"rows": 2}, dt=DAYS[0])
    assert stamps.unchanged(lake, tables.SILVER, inputs, dt=DAYS[0]) == {"rows": 2}
    assert stamps.unchanged(lake, tables.SILVER, stamps.fingerprint("v2"), dt=DAYS[0]) is None


def test_the_raw_listing_sees_a_replaced_file_by_its_etag(lake: Lake) -> None:
    for day in DAYS[:2]:
        lake.write_file(tables.RAW_INTERACTIONS, "a.csv", b"user_id,item_id,ts\nu,i,1\n", dt=day)
    before = raw_listing(lake, DAYS[1])
    assert [(f.dt, f.path, f.size) for f in before] == [
        ("2024-01-01", "raw/interactions/dt=2024-01-01/a.csv", 25),
        ("2024-01-02", "raw/interactions/dt=2024-01-02/a.csv", 25),
    ]
    lake.write_file(tables.RAW_INTERACTIONS, "a.csv", b"user_id,item_id,ts\nv,j,2\n", dt=DAYS[1])
    lake.fs.invalidate_cache()
    after = raw_listing(lake, DAYS[1])
    assert after[0] == before[0] and after[1].token != before[1].token  # same size, new ETag


def test_a_folder_is_replaced_with_its_marker_last(lake: Lake) -> None:
    lake.replace_folder("models/run_date=2024-01-01", {"a": b"1", "stale": b"2", "done": b"3"})
    lake.replace_folder("models/run_date=2024-01-01", {"a": b"new", "done": b"new"})
    folder = f"{lake.base}/models/run_date=2024-01-01"
    assert sorted(p.rsplit("/", 1)[-1] for p in lake.fs.ls(folder, detail=False)) == ["a", "done"]
    assert lake.fs.cat_file(f"{folder}/a") == b"new"


def test_the_lock_on_s3(lake: Lake) -> None:
    settings = Settings(lock_wait_seconds=0.3, lock_ttl_seconds=60)
    assert isinstance(store_for(lake, f"{lake.base}/_locks/writer.json"), S3Store)
    with lake_lock(lake, WRITER, settings) as lease:
        doc = json.loads(lake.fs.cat_file(lease.path))
        assert lease.path == "metarec-test/lake/_locks/writer.json" and doc == lease.doc
        out: dict = {}

        def second() -> None:
            try:
                with lake_lock(lake, WRITER, settings):
                    out["got"] = True
            except LakeLocked as exc:
                out["error"] = str(exc)

        t = threading.Thread(target=second)
        t.start()
        t.join()
        assert out == {"error": (
            f"another metarec run holds the lake lock since {doc['acquired_at']}, owner "
            f"{doc['owner']} (lease {ROOT}/_locks/writer.json, expires {doc['expires_at']}); "
            "gave up after 0.3s (METAREC_LOCK_WAIT_SECONDS)")}  # fmt: skip
    assert not lake.fs.exists(lease.path)


def test_the_store_decides_between_two_contenders(lake: Lake) -> None:
    path = f"{lake.base}/_locks/writer.json"
    store = store_for(lake, path)
    assert store.create(b'{"token": "a"}') and not store.create(b'{"token": "b"}')
    doc, etag = store.read()
    assert doc == {"token": "a"}
    assert store.replace(b'{"token": "c"}', etag)  # If-Match on the ETag read: wins
    assert not store.replace(b'{"token": "d"}', etag)  # the same stale ETag again: loses
    assert store.read()[0] == {"token": "c"}


def test_an_expired_lease_is_taken_over_and_a_heartbeat_renews(lake: Lake) -> None:
    stale = {"owner": "ci@elsewhere pid 7", "host": "elsewhere", "pid": 7, "token": "t",
             "acquired_at": "2024-01-01T00:00:00+00:00",
             "expires_at": "2024-01-01T00:05:00+00:00"}  # fmt: skip
    lake.fs.pipe_file(f"{lake.base}/_locks/writer.json", json.dumps(stale).encode())
    won = acquire(lake, WRITER, ttl=60, wait=0)
    assert json.loads(lake.fs.cat_file(won.path))["token"] == won.doc["token"] != "t"
    lake.fs.rm_file(won.path)
    with lake_lock(lake, WRITER, Settings(lock_wait_seconds=0, lock_ttl_seconds=0.9)) as lease:
        first = lease.doc["expires_at"]
        time.sleep(1.2)
        assert json.loads(lake.fs.cat_file(lease.path))["expires_at"] > first


def test_the_warehouse_is_local_only(lake: Lake, capsys, caplog) -> None:
    lake.write_partition(tables.SILVER, _frame(DAYS[0], 1), dt=DAYS[0])
    assert ensure_warehouse(lake) is None
    assert f"warehouse.duckdb skipped: lake {ROOT} is not local" in caplog.text
    message = (
        f"no warehouse for {ROOT}: warehouse.duckdb is local only (DuckDB reads object "
        "stores through its httpfs extension, not installed offline); query the Parquet "
        "with pyarrow.dataset or Polars, or DuckDB with httpfs (docs/sql.md)"
    )
    with pytest.raises(ValueError) as caught:
        connect_warehouse(lake)
    assert str(caught.value) == message
    assert main(["sql", "--storage", ROOT, "-c", "SELECT 1"]) == 2
    # The last line: a Prefect log handler left by an earlier test may print before it.
    assert capsys.readouterr().err.splitlines()[-1] == f"metarec: error: {message}"
    # Why: DuckDB cannot read s3:// offline (httpfs would have to be downloaded).
    with duckdb.connect(config=DUCKDB_CONFIG) as con, pytest.raises(duckdb.Error, match="httpfs"):
        con.sql(f"SELECT * FROM read_parquet('{lake.url(tables.SILVER, dt=DAYS[0])}/*.parquet')")
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
