"""Erasure in the landing files: raw/interactions and raw/users rewritten without one user.

Reads every raw/interactions file with the ingest's own reader (tasks.ingest.readers), so
a row is the user's exactly when ingest would have given it their id; writes each file
that held the user back under its own name (atomically, through the Lake), in its own
format and compression. CSV and JSONL files keep every other line byte for byte (lines
are the ingest's physical lines); a Parquet file is rewritten without the user's rows.
raw/users files are rewritten the same way by their `user_id` column. Files under the
names of raw/interactions that are not dates (`dt=junk`, `dt=20240115`, a loose file:
tasks.lake.listing.stray_partitions) are read and rewritten the same way: ingest skips
them, but they hold landed events, and a folder renamed to its date is ingested next.

A line that could not be parsed (malformed, invalid encoding) has no user id; it is the
user's when its text holds the id as a whole token. Such a line never reached silver, so
dropping another user's broken line costs nothing but a quarantine row.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
import pyarrow.parquet as pq

from schemas.interactions import ID_NORMALISATION
from schemas.tables import RAW_INTERACTIONS, RAW_USERS, Table
from tasks.config import Settings
from tasks.ingest.landing import decoded, file_kind
from tasks.ingest.readers import LandingFile, ReadOptions, ReadReport, read_files
from tasks.lake.dates import parse_date
from tasks.lake.listing import stray_partitions
from tasks.lake.parquet import parquet_bytes
from tasks.lake.storage import Lake

_SIDE_FORMATS = (".csv", ".jsonl", ".ndjson", ".json", ".parquet")
STRAY_DAY = dt.date.min  # the `_day` of rows read from a stray file: it has no date


@dataclass(frozen=True)
class RawErasure:
    """What erasing one user did to the landing files."""

    rewritten: tuple[tuple[str, int], ...]  # (lake path, rows removed) per rewritten file
    unreadable: tuple[str, ...]  # files ingest cannot read either: not checked, see docs
    dates: tuple[str, ...]  # raw/interactions dates whose files were rewritten
    strays: int = 0  # files read under names that are not dates (`stray_files`)
    deleted: tuple[str, ...] = ()  # of `rewritten`, the text files left with nothing: gone


def is_user(user_id: str) -> pl.Expr:
    """True for a row of this user: its id, compared as silver stores ids (trimmed, an
    integral number without its zero fraction: schemas.interactions.ID_NORMALISATION)."""
    pattern, to = ID_NORMALISATION
    norm = pl.col("user_id").cast(pl.String).str.strip_chars().str.replace(pattern, to)
    return (norm == _normalised(user_id)).fill_null(False)


def mentions(user_id: str) -> pl.Expr:
    """True for a bronze-shaped row (bronze, quarantine, the ingest reader's rows) of this
    user: theirs by id, or a line ingest could not read as declared (`parse_error` set)
    whose text holds the id as a whole token."""
    token = f"(?:^|[^A-Za-z0-9_.-]){re.escape(user_id)}(?:[^A-Za-z0-9_.-]|$)"
    text = pl.concat_str(["user_id", "extra"], separator=" ", ignore_nulls=True)
    unparsed = pl.col("parse_error").is_not_null() & text.str.contains(token)
    return is_user(user_id) | unparsed.fill_null(False)


def erase_raw_interactions(lake: Lake, user_id: str, settings: Settings) -> RawErasure:
    """Rewrite every raw/interactions file holding `user_id` without their lines: the
    files of every date, and those under the names that are not dates (`dt=junk`, a loose
    file: `stray_files`), which ingest never reads but which are landed data all the same
    and would be ingested once renamed to their date."""
    options = ReadOptions.of(settings)
    rewritten, unreadable, dates, deleted, strays = [], [], [], [], 0
    for value, day, path in _landing_files(lake):
        strays += value is None
        f = LandingFile(day, lake.relpath(path), path, int(lake.fs.size(path)))
        report = ReadReport()
        frames = list(read_files(lake.fs, [f], options, report))
        if f.name in report.corrupt:  # ingest takes no row from it either
            unreadable.append(path)
            continue
        rows = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        if rows.is_empty():
            continue
        lines = set(rows.filter(mentions(user_id))["source_line"].to_list())
        if not lines:
            continue
        payload = _without_lines(lake, f, options, lines)
        if payload is None:  # nothing else in it: an empty file would be "unreadable" next
            lake.fs.rm(path)
            deleted.append(path)
        else:
            lake.write_bytes(f.name, payload)
        rewritten.append((path, len(lines)))
        if value and value not in dates:  # a stray file never reached bronze
            dates.append(value)
    return RawErasure(tuple(rewritten), tuple(unreadable), tuple(dates), strays, tuple(deleted))


def stray_files(lake: Lake, table: Table) -> list[str]:
    """The data files under a table's names that are not its partitions
    (`tasks.lake.listing.stray_partitions`): every file below a stray folder, however
    deep, or the stray name itself when it is a file; hidden and `_` names aside."""
    folder = lake.path(table)
    out = []
    for name in stray_partitions(lake, table):
        path = f"{folder}/{name}"
        if lake.fs.isfile(path):
            out.append(path)
            continue
        for found in lake.fs.find(path):
            parts = found[len(path) + 1 :].split("/")
            if not any(p.startswith((".", "_")) for p in parts):
                out.append(found)
    return sorted(out)


def _landing_files(lake: Lake) -> Iterator[tuple[str | None, dt.date, str]]:
    """(date value, day, path) of every raw/interactions file: each date's, then the
    stray ones (value None; `STRAY_DAY` only tags the rows read, which go nowhere)."""
    for value in lake.partitions(RAW_INTERACTIONS):
        day = parse_date(value)
        for path in lake.files(RAW_INTERACTIONS, dt=day):
            yield value, day, path
    for path in stray_files(lake, RAW_INTERACTIONS):
        yield None, STRAY_DAY, path


def erase_raw_users(lake: Lake, user_id: str) -> tuple[tuple[str, int], ...]:
    """Rewrite every raw/users file holding `user_id` without their rows; (path, rows)."""
    folder = lake.path(RAW_USERS)
    if not lake.fs.exists(folder):
        return ()
    out = []
    for path in sorted(lake.fs.find(folder)):
        name = path.rsplit("/", 1)[-1]
        if name.startswith((".", "_")) or not name.lower().removesuffix(".gz").endswith(
            _SIDE_FORMATS
        ):
            continue
        payload = lake.fs.cat_file(path)
        result = _side_without(name, payload, user_id)
        if result is None:
            continue
        new, removed = result
        lake.write_bytes(lake.relpath(path), new)
        out.append((path, removed))
    return tuple(out)


def _without_lines(
    lake: Lake, f: LandingFile, options: ReadOptions, lines: set[int]
) -> bytes | None:
    """The file without these 1-based lines (text) or rows (Parquet), same format; decoded
    as ingest decodes it (gzip members, padding and caps alike). None for a text file
    left with no byte at all (ingest would call it an unreadable empty_file)."""
    kind, gz = file_kind(f.name)
    with lake.fs.open(f.path, "rb") as stream:
        data = b"".join(decoded(stream, f.size, gz, options.limits))
    if kind == "parquet":
        table = pq.read_table(io.BytesIO(data))
        keep = [i + 1 not in lines for i in range(table.num_rows)]
        out = parquet_bytes(table.filter(keep))
    else:
        # The ingest's lines are split at "\n" only; a "\r" stays with its line.
        parts = data.split(b"\n")
        out = b"\n".join(p for i, p in enumerate(parts, start=1) if i not in lines)
        if not out:
            return None
    return _compressed(f.name, out)


def _side_without(name: str, payload: bytes, user_id: str) -> tuple[bytes, int] | None:
    """(the side file without the user's rows, rows removed), or None when it has none."""
    gz = name.lower().endswith(".gz")
    data = gzip.decompress(payload) if gz else payload
    base = name.lower().removesuffix(".gz")
    if base.endswith(".parquet"):
        frame = pl.read_parquet(io.BytesIO(data))
        if "user_id" not in frame.columns:
            return None
        mine = frame.select(is_user(user_id)).to_series()
        if not mine.any():
            return None
        return _compressed(name, parquet_bytes(frame.filter(~mine))), int(mine.sum())
    parts = data.split(b"\n")
    drop = _csv_rows(parts, user_id) if base.endswith(".csv") else _jsonl_rows(parts, user_id)
    if not drop:
        return None
    kept = b"\n".join(p for i, p in enumerate(parts) if i not in drop)
    return _compressed(name, kept), len(drop)


def _csv_rows(parts: list[bytes], user_id: str) -> set[int]:
    """0-based indexes of the CSV lines whose user_id field is the user's."""
    if not parts:
        return set()
    header = next(csv.reader([parts[0].decode("utf-8", "replace").lstrip("\ufeff")]), [])
    names = [n.strip() for n in header]
    if "user_id" not in names:
        return set()
    at = names.index("user_id")
    drop = set()
    for i, line in enumerate(parts[1:], start=1):
        fields = next(csv.reader([line.decode("utf-8", "replace")]), [])
        if len(fields) > at and _normalised(fields[at]) == _normalised(user_id):
            drop.add(i)
    return drop


def _jsonl_rows(parts: list[bytes], user_id: str) -> set[int]:
    """0-based indexes of the JSON lines whose user_id is the user's (a number counts by
    its text, as the side-table reader casts it)."""
    drop = set()
    for i, line in enumerate(parts):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and _normalised(str(doc.get("user_id", ""))) == _normalised(
            user_id
        ):
            drop.add(i)
    return drop


def _compressed(name: str, data: bytes) -> bytes:
    # mtime=0: the same content gives the same bytes, so a rewrite is reproducible.
    return gzip.compress(data, mtime=0) if name.lower().endswith(".gz") else data


def _normalised(user_id: str) -> str:
    """An id as silver stores it (see is_user)."""
    pattern, to = ID_NORMALISATION
    # The replacement is written for Polars (`${1}`); Python's re spells it `\g<1>`.
    return re.sub(pattern, to.replace("${1}", r"\g<1>"), user_id.strip())
