"""A date's landing files by metadata (one listing, no read) and by content (hashes).

The listing {name: [size, token]} says whether anything changed without reading a file:
the token is the ETag on object stores, the modification time on local disks (not the
mode or owner, so a chmod is no change). Hashes are only computed when it changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from schemas import tables
from tasks.ingest.landing import READ_BYTES
from tasks.ingest.readers import LandingFile, ReadOptions
from tasks.lake.storage import Lake

# gzip'd landing files stand for about this many times their size in text.
_GZIP_RATIO = 6
# Metadata that tells a changed file without reading it, in order of preference.
_TOKEN_KEYS = ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified",
               "last_modified", "updated", "created")  # fmt: skip


@dataclass
class Landing:
    """The landing files of one date: the files, their listing {name: [size, token]} and,
    once read, their content hashes."""

    day: dt.date
    files: list[LandingFile]
    listing: dict[str, list[Any]]
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def weight(self) -> int:
        return sum(text_weight(f.name, f.size) for f in self.files)


def list_landing(lake: Lake, day: dt.date) -> Landing:
    """The landing files of a date by metadata only (one `ls`, no file read)."""
    folder = lake.path(tables.RAW_INTERACTIONS, dt=day)
    infos = lake.fs.ls(folder, detail=True) if lake.fs.exists(folder) else []
    files, listing = [], {}
    for info in sorted(infos, key=lambda i: i["name"]):
        base = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if info["type"] != "file" or base.startswith((".", "_")):
            continue
        name = lake.relpath(info["name"])
        files.append(LandingFile(day, name, info["name"], int(info["size"])))
        listing[name] = [int(info["size"]), token(info)]
    return Landing(day, files, listing)


def file_hashes(lake: Lake, landing: Landing, options: ReadOptions) -> dict[str, str]:
    """sha256 of each file's stored bytes, streamed. A file over max_file_bytes is not read
    (it will be rejected) and one that cannot be opened is not hashed: their size and
    token stand in, so a change to them still changes the fingerprint."""
    out = {}
    for f in landing.files:
        size, token = landing.listing[f.name]
        out[f.name] = f"unread:{size}:{token}"
        if f.size > options.limits.max_file_bytes:
            continue
        digest = hashlib.sha256()
        try:
            with lake.fs.open(f.path, "rb") as stream:
                while chunk := stream.read(READ_BYTES):
                    digest.update(chunk)
        except OSError:  # reported by the read that follows, with its reason
            continue
        out[f.name] = digest.hexdigest()
    return out


def token(info: dict[str, Any]) -> str:
    """What tells a changed file without reading it: the ETag (object stores) or the
    modification time (local disks); "" when the filesystem gives neither."""
    for key in _TOKEN_KEYS:
        if info.get(key) not in (None, ""):
            return f"{key}={info[key]}"
    return ""


def text_weight(name: str, size: int) -> int:
    """Text bytes a landing file of `size` bytes stands for (gzip'd: _GZIP_RATIO times)."""
    return size * (_GZIP_RATIO if name.lower().endswith(".gz") else 1)
