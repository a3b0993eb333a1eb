"""How each kind of store creates, reads, renews, takes over and deletes a lease file
(tasks.lake.lock). A lease's version is what a takeover compares against: the hash of its
bytes, or the ETag on S3."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import uuid

import fsspec

from tasks.lake import durable
from tasks.lake.storage import Lake


def store_for(lake: Lake, path: str) -> LeaseStore:
    """The lease store for the lake's filesystem."""
    if lake.is_local:
        return LocalStore(lake.fs, path)
    protocols = (lake.fs.protocol,) if isinstance(lake.fs.protocol, str) else lake.fs.protocol
    if {"s3", "s3a"} & set(protocols):
        return S3Store(lake.fs, path)
    return LeaseStore(lake.fs, path)


class LeaseStore:
    """Any fsspec store: create-if-absent as its driver offers it, then a read-back of the
    bytes; a takeover checks the stale lease is unchanged, deletes it and creates anew."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs, self.path = fs, path

    def create(self, data: bytes) -> bool:
        """Write the lease if none exists; True when this call's lease is the one there."""
        self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        try:
            self.fs.pipe_file(self.path, data, mode="create")
        except FileExistsError:
            return False
        current = self.read()
        return current is not None and current[1] == _digest(data)

    def read(self) -> tuple[dict, str] | None:
        """(lease document, version), or None when there is no lease."""
        try:
            raw = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return decode(raw), _digest(raw)

    def renew(self, data: bytes, version: str) -> bool:
        """Overwrite our own lease (the caller has just read it back as ours)."""
        self.fs.pipe_file(self.path, data)
        return True

    def replace(self, data: bytes, version: str) -> bool:
        """Take over a stale lease: only if it is still at `version`."""
        current = self.read()
        if current is None or current[1] != version:
            return False
        self.delete()
        return self.create(data)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path)


class LocalStore(LeaseStore):
    """A local disk or NFS: hard links never replace a name, renames are atomic."""

    def create(self, data: bytes) -> bool:
        folder = os.path.dirname(self.path)
        durable.makedirs(folder)
        tmp = f"{self.path}.{uuid.uuid4().hex}.new"
        durable.put_file(tmp, data)  # complete and on disk before it gets the lease's name
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        durable.fsync_dir(folder)
        return True

    def read(self) -> tuple[dict, str] | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        return decode(raw), _digest(raw)

    def renew(self, data: bytes, version: str) -> bool:
        durable.put_file(self.path, data)
        return True

    def replace(self, data: bytes, version: str) -> bool:
        # Rename the stale lease aside: of two contenders only one gets it. Then check it
        # is the lease judged stale; if a fresh one was grabbed instead, put it back.
        aside = f"{self.path}.{uuid.uuid4().hex}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            with open(aside, "rb") as f:
                grabbed = _digest(f.read())
            if grabbed != version:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
                return False
        finally:
            os.unlink(aside)
        return self.create(data)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class S3Store(LeaseStore):
    """S3: conditional PUTs. If-None-Match creates, If-Match on the ETag read renews or
    takes over, so the store itself decides between two contenders."""

    def create(self, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self.path, data, mode="create")
        except FileExistsError:
            return False
        return True

    def read(self) -> tuple[dict, str] | None:
        # The ETag first, then the bytes: a lease changed in between fails the If-Match.
        self.fs.invalidate_cache(self.path)
        try:
            etag = str(self.fs.info(self.path)["ETag"])
            raw = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return decode(raw), etag

    def renew(self, data: bytes, version: str) -> bool:
        return self._put_if_match(data, version)

    def replace(self, data: bytes, version: str) -> bool:
        return self._put_if_match(data, version)

    def _put_if_match(self, data: bytes, etag: str) -> bool:
        try:
            self.fs.pipe_file(self.path, data, IfMatch=etag)
        except FileNotFoundError:
            return False
        except OSError as exc:  # s3fs maps 412 Precondition Failed to EINVAL
            if exc.errno == errno.EINVAL:
                return False
            raise
        return True


def decode(raw: bytes) -> dict:
    """A lease document; {} for bytes that are not one (treated as stale)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
