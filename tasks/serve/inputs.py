"""What a published night was computed from, so a backfill can skip unchanged nights.

The fingerprint of the night of D covers the raw landing files up to D and the side
tables (by metadata: `tasks.lake.listing`), the settings (not the storage root), the
meta-learner's config and the table contract's version. It is stamped on
`models/run_date=D/` once the night is published (`tasks.lake.stamps`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

from schemas.recommendations import VERSION
from schemas.tables import MODELS
from tasks.config import Settings
from tasks.lake import stamps
from tasks.lake.listing import LandedFile, raw_listing
from tasks.lake.storage import Lake
from tasks.models.metalearner import MetaConfig

# Settings that do not change what a night computes (where, how long to wait, what to keep).
NOT_INPUTS = {"storage", "lock_wait_seconds", "lock_ttl_seconds", "schedule_lag_days"} | {
    name for name in Settings.model_fields if name.startswith("retain_days_")
}


def night_fingerprint(
    lake: Lake, day: dt.date, settings: Settings, listing: list[LandedFile] | None = None
) -> str:
    """The fingerprint of the night of `day`; pass a `listing` made for a later date to
    share one listing across a backfill's range."""
    files = [asdict(f) for f in (listing or raw_listing(lake, day)) if f.dt <= day.isoformat()]
    config = settings.model_dump(mode="json", exclude=NOT_INPUTS)
    return stamps.fingerprint(day, files, config, asdict(MetaConfig()), VERSION)


def stamp_published(lake: Lake, day: dt.date, fingerprint: str, status: str) -> str:
    """Record that the night of `day` was published (with `status`) from these inputs."""
    return stamps.write_stamp(lake, MODELS, fingerprint, {"status": status}, run_date=day)


def is_published(lake: Lake, day: dt.date, fingerprint: str) -> bool:
    """True when the night of `day` was published from exactly these inputs."""
    done = stamps.unchanged(lake, MODELS, fingerprint, check_data=False, run_date=day)
    return bool(done) and str(done.get("status", "")).startswith("published")
