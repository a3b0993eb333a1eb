"""What has landed: the raw files of every date up to a day, by metadata only.

A listing never reads a file: size plus a token of its metadata (mtime on local disks,
ETag on object stores) tell a replaced or added file from an unchanged one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fsspec.utils import tokenize

from schemas.tables import RAW_INTERACTIONS, RAW_ITEMS, RAW_USERS
from tasks.lake.dates import parse_date
from tasks.lake.storage import Lake


@dataclass(frozen=True, order=True)
class LandedFile:
    """One raw file: its date (`""` for side tables), lake path, size and metadata token."""

    dt: str
    path: str
    size: int
    token: str


def raw_dates(lake: Lake, until: dt.date) -> list[dt.date]:
    """The dates of raw/interactions partitions up to `until`, oldest first."""
    return [d for d in map(parse_date, lake.partitions(RAW_INTERACTIONS)) if d <= until]


def raw_listing(lake: Lake, until: dt.date) -> list[LandedFile]:
    """Every raw landing file up to `until` and the side tables, sorted; one `ls` per
    partition."""
    folders = [(d.isoformat(), lake.path(RAW_INTERACTIONS, dt=d)) for d in raw_dates(lake, until)]
    folders += [("", lake.path(RAW_USERS)), ("", lake.path(RAW_ITEMS))]
    out = []
    for value, folder in folders:
        if not lake.fs.exists(folder):
            continue
        for info in lake.fs.ls(folder, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["type"] == "file" and not name.startswith((".", "_")):
                out.append(
                    LandedFile(value, lake.relpath(info["name"]), int(info["size"]), tokenize(info))
                )
    return sorted(out)
