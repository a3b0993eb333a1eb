"""What has landed: the raw files of every date up to a day, by metadata only.

A listing never reads a file: size plus a token of its metadata (mtime on local disks,
ETag on object stores) tell a replaced or added file from an unchanged one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from schemas.tables import BY_NAME, RAW_INTERACTIONS, RAW_ITEMS, RAW_USERS, Table
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


def stray_partitions(lake: Lake, table: Table | str = RAW_INTERACTIONS) -> list[str]:
    """Names under a table's folder that are not its partitions (`Lake.partitions` skips
    them): `dt=junk`, `dt=20240115`, `dt=2024-W03-1`, a loose file; hidden names aside.
    Only the first level is looked at (`run_date=` of staging/recommendations)."""
    folder = lake.path(table)
    if not lake.fs.exists(folder):
        return []
    key = (_table(table).keys or ("dt",))[0]
    good = {f"{key}={v}" for v in lake.partitions(table, key)}
    names = (p.rstrip("/").rsplit("/", 1)[-1] for p in lake.fs.ls(folder, detail=False))
    return sorted(n for n in names if n not in good and not n.startswith((".", "_")))


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
                    LandedFile(value, lake.relpath(info["name"]), int(info["size"]), _token(info))
                )
    return sorted(out)


def _table(table: Table | str) -> Table:
    return table if isinstance(table, Table) else BY_NAME[table]


def _token(info: dict) -> str:
    """What tells a replaced file from the same one: mtime locally, the ETag (or last
    modified time) on object stores; not the mode or inode, so a chmod changes nothing."""
    for key in ("mtime", "ETag", "etag", "LastModified", "last_modified"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return ""
