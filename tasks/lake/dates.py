"""Dates at the edge: parsed once from the command line or a flow parameter.

The pipeline passes `datetime.date` between stages; the present of a night is the end of
its run date (UTC).
"""

from __future__ import annotations

import datetime as dt


def parse_date(value: str | dt.date) -> dt.date:
    """Parse an ISO date (YYYY-MM-DD) given on the command line or as a flow parameter."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"not an ISO date (YYYY-MM-DD): {value!r}") from None


def date_range(start: str | dt.date, end: str | dt.date) -> list[dt.date]:
    """Every date from start to end inclusive; an error when end is before start."""
    d0, d1 = parse_date(start), parse_date(end)
    if d1 < d0:
        raise ValueError(f"end date {d1} is before start date {d0}")
    return [d0 + dt.timedelta(days=i) for i in range((d1 - d0).days + 1)]


def end_of_day(day: dt.date) -> dt.datetime:
    """The end of `day` in UTC (midnight after it): the present of the night of `day`."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
