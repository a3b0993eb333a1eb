"""Retention: delete partitions older than each layer's Settings.retain_days_<layer>.

Reads partition listings (and sizes); deletes whole partitions of raw/interactions,
bronze, quarantine, models, gold/episodes and staging/recommendations. A partition of
date d goes when `today - d >= retain days` (so `retain_days_models = 14` keeps the last
14 nights); None keeps a layer forever. Never deleted, whatever its age:

  - any partition of the latest published night (the newest gold/recommendations date:
    its model folder holds its "published" stamp and the model its lists came from);
  - the newest complete model checkpoint (the next night warm-starts from it);
  - a bronze partition whose raw partition stays (the next ingest would rebuild it).

Silver, the gold tables other than episodes, raw/users, raw/items and `_keys` are never
touched here (docs/privacy.md says how long each table lives).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from schemas.tables import (
    BRONZE,
    EPISODES,
    MODELS,
    QUARANTINE,
    RAW_INTERACTIONS,
    RECOMMENDATIONS,
    STAGING_RECOMMENDATIONS,
    Table,
)
from tasks.config import Settings
from tasks.lake.dates import parse_date
from tasks.lake.storage import Lake

# (table, partition key, Settings field), in the order they are collected: raw before
# bronze, so a bronze partition can follow its raw partition in the same run.
LAYERS: tuple[tuple[Table, str, str], ...] = (
    (RAW_INTERACTIONS, "dt", "retain_days_raw"),
    (BRONZE, "dt", "retain_days_bronze"),
    (QUARANTINE, "dt", "retain_days_quarantine"),
    (MODELS, "run_date", "retain_days_models"),
    (EPISODES, "run_date", "retain_days_episodes"),
    (STAGING_RECOMMENDATIONS, "run_date", "retain_days_staging"),
)


@dataclass(frozen=True)
class Removal:
    """One partition deleted (or, in a dry run, to be deleted)."""

    table: str
    partition: str  # e.g. "run_date=2024-01-01"
    path: str
    bytes: int


@dataclass(frozen=True)
class GcResult:
    """What a garbage collection deleted (or would delete) and what it kept on purpose."""

    today: dt.date
    dry_run: bool
    removed: tuple[Removal, ...]
    protected: tuple[str, ...]  # "table/partition: why", for partitions old enough to go

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removed)


def collect_garbage(
    lake: Lake, today: dt.date, settings: Settings, dry_run: bool = False
) -> GcResult:
    """Delete every partition past its layer's retention on `today` (see the module
    docstring for what is always kept); with `dry_run`, only say what would go."""
    latest = _latest_published(lake)
    newest_model = _newest_model(lake)
    removed: list[Removal] = []
    protected: list[str] = []
    raw_gone: set[str] = set()
    for table, key, field_name in LAYERS:
        days = getattr(settings, field_name)
        if days is None:
            continue
        for value in lake.partitions(table, key):
            day = parse_date(value)
            if (today - day).days < days:
                continue
            name = f"{table}/{key}={value}"
            why = _protected(table, day, latest, newest_model, lake, raw_gone)
            if why:
                protected.append(f"{name}: {why}")
                continue
            folder = lake.path(table, **{key: value})
            removed.append(Removal(str(table), f"{key}={value}", folder, _size(lake, folder)))
            if table == RAW_INTERACTIONS:
                raw_gone.add(value)
            if not dry_run:
                lake.delete_partition(table, **{key: value})
    return GcResult(today, dry_run, tuple(removed), tuple(protected))


def _protected(
    table: Table,
    day: dt.date,
    latest: dt.date | None,
    newest_model: dt.date | None,
    lake: Lake,
    raw_gone: set[str],
) -> str | None:
    """Why this old partition must stay, or None."""
    if day == latest:
        return "the latest published night"
    if table == MODELS and day == newest_model:
        return "the newest complete model"
    raw_stays = table == BRONZE and day.isoformat() not in raw_gone
    if raw_stays and lake.files(RAW_INTERACTIONS, dt=day):
        return "its raw partition stays (the next ingest would rebuild it)"
    return None


def _latest_published(lake: Lake) -> dt.date | None:
    days = lake.partitions(RECOMMENDATIONS)
    return parse_date(days[-1]) if days else None


def _newest_model(lake: Lake) -> dt.date | None:
    """The newest checkpoint folder holding model.pt and metrics.json (the meta-learner
    writes model.pt first and metrics.json last: both present = a complete save), else
    the newest folder at all."""
    days = lake.partitions(MODELS, "run_date")
    for value in reversed(days):
        folder = lake.path(MODELS, run_date=value)
        if lake.fs.exists(f"{folder}/model.pt") and lake.fs.exists(f"{folder}/metrics.json"):
            return parse_date(value)
    return parse_date(days[-1]) if days else None


def _size(lake: Lake, folder: str) -> int:
    """Bytes under a partition folder."""
    return int(lake.fs.du(folder, total=True))


def human(n: int) -> str:
    """A byte count for people: 190.3 MB."""
    if n < 1000:
        return f"{n} B"
    size = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            break
    return f"{size:.1f} {unit}"
