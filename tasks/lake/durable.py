"""Durable writes on a local disk: what survives a crash or a power cut.

A rename is atomic, but without fsync the kernel may put the new name on disk before the
file's bytes: after a power cut the partition is there, and empty or truncated. So each
file is written to a hidden temporary name, fsynced, renamed into place, and then the
folder is fsynced, which makes the rename itself durable (and every folder this write
created, in its parent). A folder of files (a model checkpoint) is built whole under a
temporary name and renamed into place the same way, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Mapping


def put_file(target: str, payload: bytes) -> None:
    """Write `payload` to `target` atomically and durably (temp file, fsync, rename, fsync
    of the folder)."""
    folder, name = os.path.split(target)
    makedirs(folder)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        _write_synced(tmp, payload)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def replace_folder(target: str, files: Mapping[str, bytes]) -> None:
    """Make `target` a folder holding exactly `files` (name -> bytes), replacing any
    folder there whole: the files are written and fsynced in a hidden temporary folder
    beside it, which is then renamed into place.

    A folder cannot be renamed over a non-empty one, so an old folder is first renamed
    aside (and deleted once the new one is in place): a crash between the two renames
    leaves no folder at `target`, never a mix of old and new files.
    """
    parent, name = os.path.split(target.rstrip("/"))
    makedirs(parent)
    tag = uuid.uuid4().hex
    tmp = os.path.join(parent, f".{name}.{tag}.tmp")
    old = os.path.join(parent, f".{name}.{tag}.old")
    os.mkdir(tmp)
    try:
        for file_name, payload in files.items():
            if "/" in file_name or file_name in ("", ".", ".."):
                raise ValueError(f"invalid file name: {file_name!r}")
            _write_synced(os.path.join(tmp, file_name), payload)
        fsync_dir(tmp)
        if os.path.isdir(target):
            os.rename(target, old)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)


def makedirs(folder: str) -> None:
    """Create `folder` and its missing parents, each made durable in its parent."""
    missing = []
    current = os.path.abspath(folder)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
            os.mkdir(path)
        fsync_dir(os.path.dirname(path))


def fsync_dir(folder: str) -> None:
    """fsync a folder, so the names created or renamed in it are on disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: str, payload: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
