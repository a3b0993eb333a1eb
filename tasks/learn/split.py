"""The temporal split every evaluation (and the night's tuning) shares.

New users are the latest-arriving share of users (by first interaction); they are kept out
of training and, at evaluation, a model sees only their first n interactions and is scored
on the rest. Warm users are scored on their interactions after a time cutoff, from their
history before it. Items in the given history are never targets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from tasks.learn.interactions import Interactions


@dataclass(frozen=True)
class Segment:
    """Users of one segment: what the model is given, and what it should find.

    `history` and `targets` share a user vocabulary; targets exclude the history's items
    and every user has at least one target.
    """

    name: str
    history: Interactions
    targets: Interactions


@dataclass(frozen=True)
class Split:
    """A temporal split: fit on `train` with `now=cutoff`, evaluate on `segments`."""

    train: Interactions  # warm users' interactions before the cutoff; full catalogue
    cutoff: dt.datetime  # UTC; the `now` passed to fit
    segments: dict[str, Segment]  # new_n{n} per n_values, warm (+ new_items when asked)
    pooled: tuple[str, ...]  # segments pooled into the gate's holdout "all"
    new_user_ids: np.ndarray  # users kept out of training
    # catalogue indices of items with no training row that occur after the cutoff
    new_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def temporal_split(
    data: Interactions,
    new_user_frac: float = 0.2,
    holdout_frac: float = 0.1,
    n_values: tuple[int, ...] = (1, 5, 10),
    new_items: bool = False,
) -> Split:
    """Split interactions into train and per-segment (history, targets), deterministically.

    Args:
        data: all interactions up to the run date; its item vocabulary is the catalogue
            (items seen only after the cutoff are in it with no training rows).
        new_user_frac: share of users (with any interaction), latest first interaction
            first, held out as new users (ties broken by user index).
        holdout_frac: share of the warm users' interactions at or after the cutoff.
        n_values: support sizes of the new-user segments `new_n{n}`; n = 0 gives
            `new_n0`, new users scored from side features alone (every event is a target).
        new_items: also build the `new_items` segment: warm users, their training history,
            and as targets only their post-cutoff events on items that have no training
            row (the items that arrived after the cutoff).

    Returns:
        Split; the pooled holdout is warm + new_n5 (or the middle n when 5 is absent).
    """
    slices = data.user_slices()
    counts = np.diff(slices)
    active = np.flatnonzero(counts > 0)
    first_ts = data.ts[slices[active]]  # rows are sorted by (user, ts)
    order = active[np.lexsort((active, first_ts))]
    n_new = round(new_user_frac * len(active))
    new_users = np.sort(order[len(order) - n_new :])
    is_new = np.zeros(data.n_users, bool)
    is_new[new_users] = True

    row_new = is_new[data.user]
    warm_ts = data.ts[~row_new]
    if len(warm_ts) == 0:
        raise ValueError("no warm users to train on: lower new_user_frac or add data")
    cutoff_ts = int(np.quantile(warm_ts, 1.0 - holdout_frac, method="higher"))
    before = data.ts < cutoff_ts
    train_rows = ~row_new & before
    train_users = np.unique(data.user[train_rows])
    train = data.filter(train_rows).subset_users(train_users)

    segments: dict[str, Segment] = {}
    # Position of each row within its user's time-ordered history (0 = first).
    rank = np.arange(len(data)) - slices[data.user]
    for n in n_values:
        name = f"new_n{n}"
        segments[name] = _segment(
            name, data, row_new & (rank < n), row_new & (rank >= n), new_users, n > 0
        )
    segments["warm"] = _segment("warm", data, train_rows, ~row_new & ~before, train_users)
    fresh = np.zeros(0, np.int64)
    if new_items:
        trained = np.bincount(data.item[train_rows], minlength=data.n_items) > 0
        late = ~row_new & ~before & ~trained[data.item]
        fresh = np.unique(data.item[~before & ~trained[data.item]]).astype(np.int64)
        segments["new_items"] = _segment("new_items", data, train_rows, late, train_users)
    with_history = [n for n in n_values if n > 0]
    pooled_n = 5 if 5 in with_history else sorted(with_history)[len(with_history) // 2]
    pooled = ("warm", f"new_n{pooled_n}") if with_history else ("warm",)
    return Split(
        train=train,
        cutoff=dt.datetime.fromtimestamp(cutoff_ts, dt.UTC),
        segments=segments,
        pooled=pooled,
        new_user_ids=data.user_ids[new_users],
        new_items=fresh,
    )


def _segment(
    name: str,
    data: Interactions,
    history_rows: np.ndarray,
    target_rows: np.ndarray,
    eligible: np.ndarray | None = None,
    need_history: bool = True,
) -> Segment:
    """Users with history (unless need_history is False: zero-shot users) and at least one
    target not already in their history."""
    key = data.user.astype(np.int64) * data.n_items + data.item
    target_rows = target_rows & ~np.isin(key, key[history_rows])
    users = np.unique(data.user[target_rows])
    if need_history:
        users = np.intersect1d(users, np.unique(data.user[history_rows]))
    if eligible is not None:
        users = np.intersect1d(users, eligible)
    return Segment(
        name=name,
        history=data.filter(history_rows).subset_users(users),
        targets=data.filter(target_rows).subset_users(users),
    )
