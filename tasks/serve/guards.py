"""Publish guards (DESIGN.md step 7): a table that is empty or collapses versus the
previous published night is refused, and the previous `latest` stays.

Reads the staged table (given) and the user column of the newest gold/recommendations
partition before the run date; writes nothing (tasks.serve.publish records the refusal).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from schemas.tables import RECOMMENDATIONS
from tasks.config import Settings
from tasks.lake.dates import parse_date
from tasks.lake.storage import Lake


class PublishRefused(Exception):
    """The staged table failed a publish guard: nothing was published, the previous
    `latest` stays, and the staged table is kept for inspection. The message is the
    reason, as recorded in gold/runs (`status = refused`, `error`)."""


@dataclass(frozen=True)
class PreviousNight:
    """The newest published night before the run date, and its distinct users."""

    run_date: dt.date
    users: int


def previous_night(lake: Lake, run_date: dt.date) -> PreviousNight | None:
    """The newest gold/recommendations partition strictly before `run_date` (a rerun of
    a night is compared with the night before it, not with itself), or None."""
    earlier = [d for d in map(parse_date, lake.partitions(RECOMMENDATIONS)) if d < run_date]
    if not earlier:
        return None
    day = max(earlier)
    # Lazily: only the user column of that night is decoded.
    users = lake.scan_lazy(RECOMMENDATIONS, [day]).select(pl.col("user_id").n_unique())
    return PreviousNight(day, int(users.collect().item()))


def refusal(
    lake: Lake, run_date: dt.date, settings: Settings, staged: pl.DataFrame, where: str
) -> str | None:
    """Why the staged table of `run_date` must not be published, or None when it may.

    Refused: fewer distinct users than `settings.min_published_users` (an empty table
    always), or fewer than `settings.max_collapse` times the users of the previous
    published night. `where` names the staged table in the message.
    """
    users = int(staged["user_id"].n_unique()) if staged.height else 0
    before = previous_night(lake, run_date)
    kept = (
        f"the latest published night stays {before.run_date}" if before
        else "nothing was ever published"
    )  # fmt: skip
    tail = f"; nothing was published ({kept}); the staged table is kept at {where}"
    if users < settings.min_published_users:
        return (
            f"publish refused for {run_date}: the staged table has {users} users "
            f"({staged.height} rows), below the minimum of {settings.min_published_users} "
            f"(min_published_users){tail}"
        )
    if before is not None and users < settings.max_collapse * before.users:
        return (
            f"publish refused for {run_date}: the staged table has {users} users, fewer "
            f"than {settings.max_collapse:.0%} (max_collapse) of the {before.users} users "
            f"published for {before.run_date}{tail}"
        )
    return None
