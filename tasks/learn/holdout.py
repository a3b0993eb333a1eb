"""The night's holdout: a future the lake has already seen.

A nightly for D cannot score itself on what users will do after D. It can replay the
recent past: cut the history at c = end of D - h days, fit on what was known at c, and
score on what users did between c and the end of D. Every user who did something after
the cut is a holdout case, in the situation a user is in when the table is published:

- a returning user: the history before c is given, the events after it are the targets;
- a user who arrived after c: shown their first n events (n from ARRIVAL_SHOTS, chosen per
  user by a stable hash, so some arrivals are zero-shot from their features alone), the
  rest are the targets.

Each case gets the gate's segment (`segment_of`): the same function assigns every user
their segment at D when the table is scored, so the model that wins a segment on the
holdout is the model that serves it. Early stopping, tuning and the gate all read this
holdout; nothing here looks past the end of D, and no case is a user whose later events
the lake has not seen.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np

from tasks.lake.dates import end_of_day
from tasks.learn.interactions import Interactions
from tasks.learn.split import Segment, Split

# Segments of the gate, by the user's history at the scoring time (support size n).
ZERO_SHOT = "zero_shot"
RETURNING = "returning_after_gap"
SIZE_BUCKETS = ((1, 2, "n1_2"), (3, 5, "n3_5"), (6, 10, "n6_10"), (11, 50, "n11_50"))
LONG = "n51_plus"
SEGMENTS = (ZERO_SHOT, "n1_2", "n3_5", "n6_10", "n11_50", LONG, RETURNING)
ARRIVAL_SHOTS = (0, 1, 3, 5, 10)  # support sizes shown to users who arrived after the cut
HORIZONS_DAYS = (14, 30, 60, 90, 180, 365, 730, 1460)  # tried in order (`choose_cut`)


@dataclass(frozen=True)
class NightHoldout:
    """Fit on `train` (every event before `cut`) with now = `cut`; score the cases.

    `history` and `targets` share one user vocabulary (the cases); targets exclude the
    history's items, every case has at least one target; `segment[u]` is case u's segment.
    """

    train: Interactions
    cut: dt.datetime
    horizon_days: int
    history: Interactions
    targets: Interactions
    segment: np.ndarray

    def users_per_segment(self) -> dict[str, int]:
        """Holdout cases per segment."""
        names, counts = np.unique(self.segment, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    def as_split(self) -> Split:
        """The holdout as a `Split` with one segment per gate segment (in SEGMENTS order)
        and every case pooled, for `tasks.serve.evaluate_models`."""
        segments = {}
        for name in SEGMENTS:
            users = np.flatnonzero(self.segment == name)
            if len(users):
                segments[name] = Segment(name, self.history.subset_users(users),
                                         self.targets.subset_users(users))  # fmt: skip
        return Split(train=self.train, cutoff=self.cut, segments=segments,
                     pooled=tuple(segments), new_user_ids=np.zeros(0, object))  # fmt: skip


def segment_of(counts: np.ndarray, last_ts: np.ndarray, now_ts: int, gap_days: int) -> np.ndarray:
    """The gate's segment of each user from their event count and latest event time (epoch
    seconds; ignored where the count is 0) at `now_ts`."""
    out = _size_segment(counts)
    out[(counts > 0) & (now_ts - last_ts > gap_days * 86_400)] = RETURNING
    return out


def segments_at(history: Interactions, now: dt.datetime, gap_days: int) -> np.ndarray:
    """Every user's segment given their whole history at `now` (the scoring time)."""
    counts = np.bincount(history.user, minlength=history.n_users)
    last = np.zeros(history.n_users, np.int64)
    np.maximum.at(last, history.user, history.ts.astype(np.int64))
    return segment_of(counts, last, int(now.timestamp()), gap_days)


def choose_cut(
    data: Interactions, end: dt.datetime, min_users: int, horizons: tuple[int, ...] = HORIZONS_DAYS
) -> int:
    """The shortest horizon h (days) whose window [end - h, end) holds events of at least
    `min_users` users, among those that leave at least half of the events before the cut;
    the longest of those when none reaches `min_users`."""
    end_ts = int(end.timestamp())
    if len(data) == 0:
        return horizons[0]
    # A young lake: even the shortest horizon would hold most events out; cut at the
    # median event time instead (at least one day).
    chosen = min(horizons[0], max(1, (end_ts - int(np.median(data.ts))) // 86_400))
    for h in horizons:
        after = data.ts >= end_ts - h * 86_400
        if after.mean() > 0.5:  # the model must keep most of the past
            break
        chosen = h
        if len(np.unique(data.user[after])) >= min_users:
            break
    return chosen


def night_holdout(
    data: Interactions, end: dt.datetime, horizon_days: int, gap_days: int = 30, seed: int = 0
) -> NightHoldout:
    """Cut `data` (everything up to `end`, the end of the run date) at end - horizon_days
    and build the holdout cases (module docstring)."""
    cut_ts = int(end.timestamp()) - horizon_days * 86_400
    before = data.ts < cut_ts
    slices = data.user_slices()
    counts = np.diff(slices)
    arrived = (np.bincount(data.user[before], minlength=data.n_users) == 0) & (counts > 0)
    # Arrivals see their first n events; n < their event count, so a target is left.
    shots = np.asarray(ARRIVAL_SHOTS)[_stable_pick(data.user_ids, seed, len(ARRIVAL_SHOTS))]
    shots = np.minimum(shots, np.maximum(counts - 1, 0))
    rank = np.arange(len(data)) - slices[data.user]  # position in the user's history
    given = np.where(arrived[data.user], rank < shots[data.user], before)
    key = data.user.astype(np.int64) * data.n_items + data.item
    target = ~before & ~given & ~np.isin(key, key[given])
    cases = np.unique(data.user[target])
    n_given = np.bincount(data.user[given], minlength=data.n_users)
    last = np.zeros(data.n_users, np.int64)
    np.maximum.at(last, data.user[given], data.ts[given].astype(np.int64))
    seg = _size_segment(n_given)
    # Returning after a gap: a user known before the cut whose last event is long before it
    # (an arrival's present is right after their n-th event: never a gap).
    seg[~arrived & (n_given > 0) & (cut_ts - last > gap_days * 86_400)] = RETURNING
    return NightHoldout(
        train=data.filter(before),
        cut=dt.datetime.fromtimestamp(cut_ts, dt.UTC),
        horizon_days=horizon_days,
        history=data.filter(given).subset_users(cases),
        targets=data.filter(target).subset_users(cases),
        segment=np.asarray(seg[cases], dtype=object),
    )


def _size_segment(counts: np.ndarray) -> np.ndarray:
    """The support-size segment alone (no gap rule)."""
    out = np.full(len(counts), LONG, dtype=object)
    for lo, hi, name in SIZE_BUCKETS:
        out[(counts >= lo) & (counts <= hi)] = name
    out[counts == 0] = ZERO_SHOT
    return out


def _stable_pick(ids: np.ndarray, seed: int, n: int) -> np.ndarray:
    """A per-id choice in 0..n-1 that depends only on (seed, id): the same user gets the
    same support size on every machine and every night."""
    digests = (hashlib.blake2b(f"{seed}:{u}".encode(), digest_size=4).digest() for u in ids)
    return np.fromiter((int.from_bytes(d, "little") % n for d in digests), np.int64, len(ids))


def holdout_for_night(
    data: Interactions, day: dt.date, min_users: int, gap_days: int, seed: int
) -> NightHoldout:
    """The holdout of the night of `day` (everything in `data` is up to its end): the same
    cut and cases for the train stage, the evaluate stage and the gate."""
    end = end_of_day(day)
    return night_holdout(data, end, choose_cut(data, end, min_users), gap_days, seed)
