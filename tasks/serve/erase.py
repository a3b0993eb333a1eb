"""Erasure: remove one user from every table and model input (`metarec forget`).

Reads and rewrites, in this order (the sources first, so nothing later can bring the user
back): the raw/interactions files and raw/users (tasks.serve.erase_files); bronze, silver
and quarantine of every date; gold/episodes (by pseudonym); staging and
gold/recommendations of every run date (by id and by pseudonym). Each partition that held
the user is rewritten whole and atomically through the Lake; the others are untouched.
Names under these tables that are not partitions (`dt=junk`, `dt=20240115`, a loose file:
tasks.lake.listing.stray_partitions) are never read by a stage, but may hold the user all
the same (a copy by hand, an old layout): their files are read and rewritten too (raw
files as above, Parquet files by rows); a file there that cannot be read is reported
with the unreadable raw files (not checked). They feed no stamp and no model.

Stamps: the bronze and silver stamps of every date that changed are removed, so the next
ingest re-reads the rewritten landing files (they no longer hold the user) and recounts
the accounting rows of gold/runs; nothing is re-ingested from old file hashes.

Models: a checkpoint trained on the user's events is a model input derived from them.
Every models/run_date=D folder with D on or after the user's first event date is deleted
(every folder when the user is in raw/users, which every night reads whole); the next
night trains afresh or warm-starts from an older checkpoint. `keep_models` keeps them.

An erasure record (pseudonym, files and row counts, never the id) is written to
`_erasures/` at the lake root. Run it between nights: a night already running may publish
lists it read before the erasure (run `forget` again after it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, replace

import polars as pl

from schemas.tables import (
    BRONZE,
    EPISODES,
    MODELS,
    QUARANTINE,
    RECOMMENDATIONS,
    SILVER,
    STAGING_RECOMMENDATIONS,
    Table,
)
from tasks.config import Settings
from tasks.lake.dates import parse_date
from tasks.lake.parquet import parquet_bytes
from tasks.lake.pseudonyms import pseudonyms_for
from tasks.lake.stamps import stamp_path
from tasks.lake.storage import Lake
from tasks.serve.erase_files import (
    erase_raw_interactions,
    erase_raw_users,
    is_user,
    mentions,
    stray_files,
)

ERASURES = "_erasures"


@dataclass(frozen=True)
class ForgetResult:
    """What `forget` removed. Holds the pseudonym, never the id (it may be logged)."""

    pseudonym: str
    raw_files: tuple[tuple[str, int], ...]  # rewritten raw/interactions files, rows removed
    user_files: tuple[tuple[str, int], ...]  # rewritten raw/users files, rows removed
    unreadable: tuple[str, ...]  # files nobody can read: not checked (docs/privacy.md)
    rows: dict[str, int]  # table -> rows removed (its stray files' included)
    models_deleted: tuple[str, ...]  # run dates whose checkpoint folder was deleted
    record: str  # the erasure record's path
    # Table files under names that are not partitions (`dt=20240115`), rewritten; rows.
    stray_files: tuple[tuple[str, int], ...] = ()
    strays_checked: int = 0  # files under such names read, raw/interactions' included
    deleted_files: tuple[str, ...] = ()  # of raw_files, those left empty and so deleted

    @property
    def found(self) -> bool:
        """Whether the user was anywhere at all."""
        return bool(self.raw_files or self.user_files or any(self.rows.values()))


def forget(lake: Lake, user_id: str, settings: Settings, keep_models: bool = False) -> ForgetResult:
    """Remove `user_id` (compared with surrounding spaces stripped) from every table and
    model input of the lake; see the module docstring for what is rewritten and why."""
    user_id = user_id.strip()
    if not user_id:
        raise ValueError("an empty user id cannot be forgotten")
    pseudonyms = pseudonyms_for(lake, settings)
    raw = erase_raw_interactions(lake, user_id, settings)
    user_files = erase_raw_users(lake, user_id)
    ids: set[str] = {user_id}  # the exact spellings found (e.g. with spaces), for pseudonyms
    rows: dict[str, int] = {}
    dates: set[str] = set(raw.dates)
    strays = _Strays(lake, list(raw.unreadable), raw.strays)
    for table, match in ((BRONZE, mentions(user_id)), (SILVER, is_user(user_id)),
                         (QUARANTINE, mentions(user_id))):  # fmt: skip
        removed, changed = _filter_table(lake, table, "dt", match, ids)
        rows[str(table)] = removed + strays.filter(table, match, ids)
        dates |= changed
    for day in sorted(dates):
        for table in (BRONZE, SILVER):  # re-read from the rewritten files next night
            _remove(lake, stamp_path(lake, table, dt=day))
    names = {pseudonyms.of(i) for i in ids}
    in_names = pl.col("user_id").is_in(sorted(names))
    rows[str(EPISODES)] = _filter_table(lake, EPISODES, "run_date", in_names, set())[0]
    rows[str(EPISODES)] += strays.filter(EPISODES, in_names, set())
    served = is_user(user_id) | in_names  # the published table may hold pseudonyms
    rows[str(STAGING_RECOMMENDATIONS)] = _filter_staging(lake, served)
    rows[str(STAGING_RECOMMENDATIONS)] += strays.filter(STAGING_RECOMMENDATIONS, served, set())
    rows[str(RECOMMENDATIONS)] = _filter_table(lake, RECOMMENDATIONS, "run_date", served,
                                               set())[0]  # fmt: skip
    rows[str(RECOMMENDATIONS)] += strays.filter(RECOMMENDATIONS, served, set())
    models: tuple[str, ...] = ()
    if not keep_models:
        first = None if user_files else min(dates, default=None)
        if user_files or first is not None:
            models = _drop_models(lake, None if first is None else parse_date(first))
    result = ForgetResult(
        pseudonym=pseudonyms.of(user_id), raw_files=raw.rewritten, user_files=user_files,
        unreadable=tuple(strays.unreadable), rows=rows, models_deleted=models, record="",
        stray_files=tuple(strays.rewritten), strays_checked=strays.checked,
        deleted_files=raw.deleted,
    )  # fmt: skip
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    doc = {**asdict(result), "record": None, "at": stamp, "keep_models": keep_models}
    path = lake.write_json(f"{ERASURES}/{stamp}-{result.pseudonym}.json", doc)
    return replace(result, record=path)


def _filter_table(
    lake: Lake, table: Table, key: str, match: pl.Expr, ids: set[str]
) -> tuple[int, set[str]]:
    """Rewrite every partition of `table` holding rows that `match`, without them.

    Returns (rows removed, partition values changed); the exact user ids of the removed
    rows are added to `ids`.
    """
    removed, changed = 0, set()
    for value in lake.partitions(table, key):
        n = _filter_partition(lake, table, match, ids, **{key: value})
        if n:
            removed += n
            changed.add(value)
    return removed, changed


def _filter_staging(lake: Lake, match: pl.Expr) -> int:
    """The same over staging/recommendations/run_date=D/model=M."""
    removed = 0
    for day in lake.partitions(STAGING_RECOMMENDATIONS, "run_date"):
        folder = lake.path(STAGING_RECOMMENDATIONS, run_date=day)
        for entry in lake.fs.ls(folder, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("model="):
                removed += _filter_partition(lake, STAGING_RECOMMENDATIONS, match, set(),
                                             run_date=day, model=name[6:])  # fmt: skip
    return removed


def _filter_partition(
    lake: Lake, table: Table, match: pl.Expr, ids: set[str], **partition: str
) -> int:
    if not lake.exists(table, **partition):
        return 0
    frame = lake.read_partition(table, **partition)
    if frame.is_empty() or "user_id" not in frame.columns:
        return 0
    mine = frame.select(match.alias("_mine")).to_series()
    n = int(mine.sum())
    if n:
        ids.update(frame.filter(mine)["user_id"].drop_nulls().unique().to_list())
        lake.write_partition(table, frame.filter(~mine), **partition)
    return n


class _Strays:
    """The files under a table's names that are not partitions (`dt=20240115` copied by
    hand, an old layout): no stage reads them, yet they may hold the user. Each Parquet
    file there holding the user is rewritten without them; any other file, or one that
    cannot be read, is listed as unreadable (not checked)."""

    def __init__(self, lake: Lake, unreadable: list[str], checked: int) -> None:
        self.lake, self.unreadable, self.checked = lake, unreadable, checked
        self.rewritten: list[tuple[str, int]] = []

    def filter(self, table: Table, match: pl.Expr, ids: set[str]) -> int:
        """Rewrite the stray files of `table` without the rows that `match`; rows removed."""
        removed = 0
        for path in stray_files(self.lake, table):
            self.checked += 1
            try:
                if not path.endswith(".parquet"):
                    raise ValueError("not a Parquet file")
                frame = pl.read_parquet(self.lake.fs.cat_file(path))
                if "user_id" not in frame.columns:  # checked: no user can be in it
                    continue
                # A hand-made copy may lack bronze's optional text columns: none there.
                probe = frame.with_columns(
                    pl.lit(None, pl.String).alias(c)
                    for c in ("extra", "parse_error")
                    if c not in frame.columns
                )
                mine = probe.select(match.alias("_mine")).to_series().fill_null(False)
            except Exception:  # whatever it is, it was not checked: say so
                self.unreadable.append(path)
                continue
            if n := int(mine.sum()):
                ids.update(frame.filter(mine)["user_id"].cast(pl.String).drop_nulls().to_list())
                self.lake.write_bytes(self.lake.relpath(path), parquet_bytes(frame.filter(~mine)))
                self.rewritten.append((path, n))
                removed += n
        return removed


def _drop_models(lake: Lake, since: dt.date | None) -> tuple[str, ...]:
    """Delete the checkpoint folders from `since` on (every one when None)."""
    gone = []
    for value in lake.partitions(MODELS, "run_date"):
        if since is None or parse_date(value) >= since:
            lake.delete_partition(MODELS, run_date=value)
            gone.append(value)
    return tuple(gone)


def _remove(lake: Lake, relpath: str) -> None:
    path = f"{lake.base.rstrip('/')}/{relpath}"
    if lake.fs.exists(path):
        lake.fs.rm(path)
