"""tasks.learn.holdout: the night's holdout is a future the lake has seen, cut at the end
of D minus h days; returning users and arrivals become cases in their gate segment, and
nothing after the cut leaks into what a model is fitted on."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from tasks.lake.dates import end_of_day
from tasks.learn.holdout import (
    ARRIVAL_SHOTS,
    RETURNING,
    SEGMENTS,
    ZERO_SHOT,
    choose_cut,
    holdout_for_night,
    night_holdout,
    segments_at,
)
from tasks.learn.interactions import Interactions

DAY = dt.date(2024, 3, 31)
END = end_of_day(DAY)
CUT = END - dt.timedelta(days=14)


def _at(days_before_end: float) -> dt.datetime:
    return END - dt.timedelta(days=days_before_end)


def _data() -> Interactions:
    rows = []
    # "steady": 8 events before the cut (the last 2 days before it), 3 after.
    rows += [("steady", f"s{k}", _at(16 + k)) for k in range(8)]
    rows += [("steady", f"t{k}", _at(10 - k)) for k in range(3)]
    # "gone": 4 events 200 days ago, back after the cut with 2 events: returning after a gap.
    rows += [("gone", f"g{k}", _at(200 + k)) for k in range(4)]
    rows += [("gone", "s0", _at(5)), ("gone", "h1", _at(4))]  # s0 is not in gone's history
    # "old": events before the cut only: not a case.
    rows += [("old", f"o{k}", _at(30 + k)) for k in range(5)]
    # A long past: 30 users, 30 events each, 40-100 days before the end.
    rows += [(f"past{u}", f"p{k}", _at(40 + 2 * k)) for u in range(30) for k in range(30)]
    # Arrivals after the cut with 12 events each (13 to 7.5 days before the end).
    for u in range(40):
        rows += [(f"new{u}", f"n{(u + k) % 15}", _at(13 - k * 0.5)) for k in range(12)]
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")
    return Interactions.from_frame(frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC")))


def _case(h, user: str) -> tuple[list[str], list[str], str]:
    u = int(np.flatnonzero(h.history.user_ids == user)[0])
    hist = h.history.subset_users([u])
    targ = h.targets.subset_users([u])
    return list(h.history.item_ids[hist.item]), list(h.targets.item_ids[targ.item]), h.segment[u]


def test_cases_are_what_users_did_after_the_cut() -> None:
    data = _data()
    h = night_holdout(data, END, horizon_days=14, gap_days=30, seed=0)
    cut_ts = int(CUT.timestamp())
    assert h.cut == CUT and h.horizon_days == 14
    # What a model is fitted on ends at the cut; every target lies after it, before the end.
    assert h.train.ts.max() < cut_ts and len(h.train) == int((data.ts < cut_ts).sum())
    assert h.targets.ts.min() >= cut_ts and h.targets.ts.max() < END.timestamp()
    assert "old" not in set(h.history.user_ids)
    hist, targ, seg = _case(h, "steady")
    assert hist == [f"s{k}" for k in range(7, -1, -1)] and targ == ["t0", "t1", "t2"]
    assert seg == "n6_10"
    hist, targ, seg = _case(h, "gone")
    assert hist == ["g3", "g2", "g1", "g0"] and sorted(targ) == ["h1", "s0"]
    assert seg == RETURNING
    # Arrivals see their first n events (n from ARRIVAL_SHOTS), the rest are targets.
    arrivals = [u for u in h.history.user_ids if str(u).startswith("new")]
    shots = []
    for user in arrivals:
        hist, targ, seg = _case(h, user)
        assert len(hist) in ARRIVAL_SHOTS and len(hist) + len(targ) <= 12
        assert not set(hist) & set(targ)
        shots.append(len(hist))
        if not hist:
            assert seg == ZERO_SHOT
    assert set(shots) == set(ARRIVAL_SHOTS)  # 40 arrivals cover every support size
    assert set(h.segment) <= set(SEGMENTS)
    assert sum(h.users_per_segment().values()) == h.history.n_users


def test_the_cut_is_the_shortest_horizon_with_enough_users() -> None:
    data = _data()
    # In the last 7 days only "gone" did something; in the last 14, 42 users.
    assert choose_cut(data, END, min_users=1, horizons=(7, 14, 30)) == 7
    assert choose_cut(data, END, min_users=40, horizons=(7, 14, 30)) == 14
    # Not enough users anywhere: the longest horizon that keeps most events before the cut.
    assert choose_cut(data, END, min_users=10_000, horizons=(7, 14, 30, 60)) == 30
    assert holdout_for_night(data, DAY, min_users=40, gap_days=30, seed=0).horizon_days == 14


def test_segments_at_the_scoring_time() -> None:
    data = _data()
    seg = dict(zip(data.user_ids, segments_at(data, END, gap_days=30), strict=True))
    assert seg["steady"] == "n11_50" and seg["new0"] == "n11_50"
    assert seg["old"] == "n3_5"  # 5 events, the latest 30 days ago: not yet a gap
    assert (
        segments_at(data, END + dt.timedelta(days=10), 30)[list(data.user_ids).index("old")]
        == RETURNING
    )
