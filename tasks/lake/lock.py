"""One writer per lake: a lease file `ROOT/_locks/<name>.json`.

The lease holds owner, host, pid, token, acquired_at, renewed_at and expires_at. It is
created only where none exists; its holder renews it every third of the TTL from a
heartbeat thread, and deletes it at the end. A run that finds the lake locked waits up to
`Settings.lock_wait_seconds`, then fails with `LakeLocked`, naming the holder. A lease
past its expiry is taken over, so a run that crashed on another machine blocks the next
one for one TTL at most; one held by a dead process of this host is taken over at once.

How each store makes this safe (docs/operations.md, "Locking"):
- local disks (and NFS): the lease is written to a temporary file and hard-linked to its
  name, which fails when the name exists; a takeover first renames the stale lease aside
  (only one of two contenders gets it) and checks it is the one it judged stale.
- S3 (s3fs): conditional PUTs, If-None-Match to create and If-Match on the ETag that was
  read to renew or take over, so two contenders cannot both win.
- any other fsspec store: create-if-absent as its driver offers it (often a check then a
  write), then a read-back of the token. Two runs starting within the same instant can
  both think they won there: schedule them apart.
Expiry compares wall clocks, so the machines sharing a lake need synchronised clocks.

Re-entrant within one context (a contextvar): the nightly inside a backfill, or a flow
inside the CLI command that already took the lock, does not wait on its own lock.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import getpass
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from tasks.config import Settings
from tasks.lake.lock_stores import LeaseStore, store_for
from tasks.lake.storage import Lake

log = logging.getLogger(__name__)

LOCK_DIR = "_locks"
WRITER = "writer"  # the one lock of every run that writes the lake: ingest, nightly, backfill
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_POLL_SECONDS = 0.5
_HELD: contextvars.ContextVar[frozenset[tuple[str, str]]] = contextvars.ContextVar(
    "metarec_lake_locks", default=frozenset()
)


class LakeLocked(RuntimeError):
    """Another run holds the lake's lock (still, after the wait), or took this run's over."""


@dataclass
class Lease:
    """A held lock: where its file is, who holds it and until when."""

    name: str
    path: str
    doc: dict
    lost: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def lake_lock(lake: Lake, name: str, settings: Settings) -> Iterator[Lease | None]:
    """Hold the lake's lock `name` for the block (None when this context already holds
    it); waits up to `settings.lock_wait_seconds`, then raises LakeLocked."""
    key = (lake.root, name)
    if key in _HELD.get():
        yield None
        return
    lease = acquire(lake, name, settings.lock_ttl_seconds, settings.lock_wait_seconds)
    held = _HELD.set(_HELD.get() | {key})
    beat = _Heartbeat(store_for(lake, lease.path), lease, settings.lock_ttl_seconds)
    beat.start()
    failed = False
    try:
        yield lease
    except BaseException:
        failed = True
        raise
    finally:
        beat.halt()
        _HELD.reset(held)
        release(lake, lease)
        if lease.lost.is_set() and not failed:
            raise LakeLocked(f"the lake lock {lease.path} was taken over while this run held it")


def acquire(lake: Lake, name: str, ttl: float, wait: float) -> Lease:
    """Take the lock `name`, waiting up to `wait` seconds; a LakeLocked naming the holder
    when it is still held then."""
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid lock name: {name!r}")
    path = f"{lake.base.rstrip('/')}/{LOCK_DIR}/{name}.json"
    where = path if lake.is_local else f"{lake.root.split('://', 1)[0]}://{path}"
    store = store_for(lake, path)
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        doc = _new_doc(ttl)
        if store.create(_encode(doc)):
            return Lease(name, path, doc)
        current = store.read()
        if current is None:  # released in between: try again at once
            continue
        held, version = current
        if _stale(held):
            if store.replace(_encode(doc), version):
                log.warning("took over the stale lake lock %s of %s", where, _who(held))
                return Lease(name, path, doc)
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise LakeLocked(
                f"another metarec run holds the lake lock since {held.get('acquired_at')}, "
                f"owner {_who(held)} (lease {where}, expires {held.get('expires_at')}); "
                f"gave up after {wait:g}s (METAREC_LOCK_WAIT_SECONDS)"
            )
        if not waiting:
            log.warning("lake lock %s held by %s since %s; waiting up to %gs", where,
                        _who(held), held.get("acquired_at"), wait)  # fmt: skip
            waiting = True
        time.sleep(min(_POLL_SECONDS, left))


def release(lake: Lake, lease: Lease) -> None:
    """Delete the lease if it is still this run's."""
    store = store_for(lake, lease.path)
    current = store.read()
    if current is not None and current[0].get("token") == lease.doc["token"]:
        store.delete()


def renew(lake: Lake, lease: Lease, ttl: float) -> bool:
    """Push the lease's expiry `ttl` seconds ahead; False when it is no longer ours."""
    return _renew(store_for(lake, lease.path), lease, ttl)


def _renew(store: LeaseStore, lease: Lease, ttl: float) -> bool:
    current = store.read()
    if current is None or current[0].get("token") != lease.doc["token"]:
        return False
    now = _now()
    doc = {**lease.doc, "renewed_at": _iso(now), "expires_at": _iso(now + _seconds(ttl))}
    if not store.renew(_encode(doc), current[1]):
        return False
    lease.doc = doc
    return True


class _Heartbeat(threading.Thread):
    """Renews the lease every third of its TTL while the run lives."""

    def __init__(self, store: LeaseStore, lease: Lease, ttl: float) -> None:
        super().__init__(name=f"metarec-lock-{lease.name}", daemon=True)
        self.store, self.lease, self.ttl = store, lease, ttl
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.ttl / 3):
            try:
                ok = _renew(self.store, self.lease, self.ttl)
            except Exception as exc:  # a store hiccup: the next beat tries again
                log.warning("could not renew the lake lock %s: %s", self.lease.path, exc)
                continue
            if not ok:
                self.lease.lost.set()
                log.error("the lake lock %s was taken over by another run", self.lease.path)
                return

    def halt(self) -> None:
        self._halt.set()
        self.join()


# ---- leases ----------------------------------------------------------------------------


def _new_doc(ttl: float) -> dict:
    now = _now()
    host, pid = socket.gethostname(), os.getpid()
    return {"owner": f"{_user()}@{host} pid {pid}", "host": host, "pid": pid,
            "token": uuid.uuid4().hex, "acquired_at": _iso(now), "renewed_at": _iso(now),
            "expires_at": _iso(now + _seconds(ttl))}  # fmt: skip


def _stale(doc: dict) -> bool:
    """Past its expiry, unreadable, or held by a process of this host that is gone."""
    try:
        expires = dt.datetime.fromisoformat(doc["expires_at"])
    except (KeyError, TypeError, ValueError):
        return True
    if expires <= _now():
        return True
    return doc.get("host") == socket.gethostname() and not _alive(doc.get("pid"))


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: gone all the same
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def _who(doc: dict) -> str:
    return str(doc.get("owner") or "unknown")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _seconds(value: float) -> dt.timedelta:
    return dt.timedelta(seconds=value)


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds")


def _encode(doc: dict) -> bytes:
    return json.dumps(doc, indent=2).encode()
