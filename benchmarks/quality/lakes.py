"""Lakes built from a split, in the raw landing format, and what each lake is scored on.

A `LakeSpec` is everything the black-box yardstick needs about one lake: the events it
holds (exactly what is landed), the side tables, the run date D, and the targets: rows of
(segment, user_id, item_id) saying which user is scored on which items. Targets never hold
an item of the user's lake history. `land` writes a spec as a user would land logs:

  raw/interactions/dt=YYYY-MM-DD/<dataset>.csv.gz  (tasks.sources.movielens.write_interactions:
                                                     user_id,item_id,ts,event_type,value)
  raw/users/users.parquet   every user of the dataset: user_id + features where the dataset
                            has them (user_id only otherwise): the user registry
  raw/items/items.parquet   the item side table (the catalogue)

Cold start (`cold_spec`): `temporal_split(data, n_values=SHOTS, new_items=True)` as the
in-process yardstick (benchmarks/quality/run.py) builds it, so the split is identical: new
users = the latest-arriving 20% (by first event), cutoff = the warm users' 90% event
quantile. Each new user gets ONE support size n from SHOTS (a seeded balanced assignment:
one lake per seed measures every n in one nightly run). The lake holds every warm event
before the cutoff (= split.train) plus each new user's first n events at their real times
(n = 0: the user exists only in raw/users). D = the date of the last event in the lake;
on the temporal datasets the new users' support lies after the cutoff, so D is later than
the cutoff and the lake has no warm events between the cutoff and D: warm users' post-cutoff
events are withheld, not absent (they are the warm targets, as in temporal_split). Segments:
new_n{n} (the user's events after their first n), warm (events at or after the cutoff),
new_items (warm targets on items with no event in the lake).

Production replay (`replay_spec`): everything up to the end of D in the lake; targets are
the events in the next h days (HORIZONS), per user segment by history length at D
(LENGTH_BINS; 0 = a user who arrives after D, scored zero-shot from raw/users) and by the
gap since the user's last event (GAP_BINS), plus `all`. `replay_dates` picks the dates.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from benchmarks.quality.data import Dataset
from schemas.tables import RAW_ITEMS, RAW_USERS
from tasks.lake.dates import end_of_day
from tasks.lake.storage import Lake
from tasks.learn.interactions import Interactions
from tasks.learn.split import temporal_split
from tasks.sources.movielens import write_interactions

SHOTS = (0, 1, 3, 5, 10)
HORIZONS = (7, 30)
# (low, high, name): history length at D, in events (inclusive bounds).
LENGTH_BINS = ((0, 0, "len_0"), (1, 2, "len_1-2"), (3, 5, "len_3-5"), (6, 10, "len_6-10"),
               (11, 50, "len_11-50"), (51, 10**12, "len_51+"))  # fmt: skip
# (low, high, name): whole days between the user's last event and the end of D.
GAP_BINS = ((0, 7, "gap_0-7d"), (8, 30, "gap_8-30d"), (31, 10**12, "gap_31d+"))
COLD_SEGMENTS = (*(f"new_n{n}" for n in SHOTS), "warm", "new_items")
REPLAY_SEGMENTS = tuple(
    f"h{h}/{name}"
    for h in HORIZONS
    for name in ("all", *(b[2] for b in LENGTH_BINS), *(b[2] for b in GAP_BINS))
)
DAY = 86_400
UNTIMED_SPAN_DAYS = 365  # a dataset without time (Last.fm) gets its order spread over this


@dataclass(frozen=True)
class LakeSpec:
    """One lake to build and what to score its published table on."""

    protocol: str  # cold | replay
    dataset: str
    run_date: dt.date
    events: pl.DataFrame  # user_id, item_id, ts (epoch s), value: exactly what is landed
    users: pl.DataFrame  # raw/users: user_id [+ features]
    items: pl.DataFrame | None  # raw/items
    targets: pl.DataFrame  # segment, user_id, item_id
    info: dict = field(default_factory=dict)


def with_time(ds: Dataset) -> Dataset:
    """`ds` with dated events: a dataset without time (Last.fm, whose seeded random order is
    ts = 1e9 + position) gets that order spread evenly over UNTIMED_SPAN_DAYS, so run dates
    and horizons exist; the order, hence every split, is unchanged."""
    if ds.temporal:
        return ds
    t0, span = int(ds.data.ts.min()), max(1, int(ds.data.ts.max() - ds.data.ts.min()))
    step = max(1, UNTIMED_SPAN_DAYS * DAY // span)
    data = dataclasses.replace(ds.data, ts=t0 + (ds.data.ts - t0) * step, _csr={})
    return dataclasses.replace(ds, data=data)


def frame_of(data: Interactions) -> pl.DataFrame:
    """Interactions as a frame user_id, item_id, ts, value (one row per interaction)."""
    return pl.DataFrame(
        {
            "user_id": np.asarray(data.user_ids)[data.user].astype(str),
            "item_id": np.asarray(data.item_ids)[data.item].astype(str),
            "ts": data.ts.astype(np.int64),
            "value": data.weight.astype(np.float64),
        },
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "value": pl.Float64},
    )


def registry(ds: Dataset) -> pl.DataFrame:
    """raw/users: the side table when the dataset has user features, else every user id."""
    if ds.side.users is not None:
        return ds.side.users.with_columns(pl.col("user_id").cast(pl.String))
    return pl.DataFrame({"user_id": np.asarray(ds.data.user_ids).astype(str)})


def assign_shots(new_user_ids: np.ndarray, seed: int) -> dict[str, int]:
    """A balanced, seeded support size from SHOTS for every new user."""
    ids = np.sort(np.asarray(new_user_ids).astype(str))
    order = np.random.default_rng([seed, 10]).permutation(len(ids))
    return {str(ids[j]): SHOTS[i % len(SHOTS)] for i, j in enumerate(order)}


def cold_spec(ds: Dataset, seed: int) -> LakeSpec:
    """The cold-start lake of `ds` for `seed` (see the module docstring)."""
    data = ds.data
    split = temporal_split(data, n_values=SHOTS, new_items=True)
    shots = assign_shots(split.new_user_ids, seed)
    shot_of = pl.DataFrame({"user_id": list(shots), "n": list(shots.values())},
                           schema={"user_id": pl.String, "n": pl.Int64})  # fmt: skip
    train = frame_of(split.train)
    # Each new user's first n events (rows are sorted by (user, ts) within Interactions).
    rank = np.arange(len(data)) - data.user_slices()[data.user]
    support = (
        frame_of(data).with_columns(pl.Series("rank", rank)).join(shot_of, on="user_id")
        .filter(pl.col("rank") < pl.col("n")).drop("rank", "n")
    )  # fmt: skip
    events = pl.concat([train, support]).sort("ts", "user_id", "item_id")
    targets = []
    for n in SHOTS:
        mine = shot_of.filter(pl.col("n") == n).select("user_id")
        seg = frame_of(split.segments[f"new_n{n}"].targets).join(mine, on="user_id")
        targets.append(_targets(f"new_n{n}", seg))
    warm = frame_of(split.segments["warm"].targets)
    targets.append(_targets("warm", warm))
    in_lake = events["item_id"].unique().implode()
    targets.append(_targets("new_items", warm.filter(~pl.col("item_id").is_in(in_lake))))
    run_date = _date(events["ts"].max())
    cutoff = split.cutoff
    info = {
        "cutoff": cutoff.isoformat(),
        "days_cutoff_to_run_date": round((end_of_day(run_date) - cutoff).total_seconds() / DAY, 1),
        "new_users": len(shots),
        "shots": {f"n{n}": sum(v == n for v in shots.values()) for n in SHOTS},
        "train_rows": train.height,
        "support_rows": support.height,
    }
    return LakeSpec("cold", ds.name, run_date, events, registry(ds), ds.side.items,
                    pl.concat(targets), info)  # fmt: skip


def replay_dates(data: Interactions, count: int = 3, horizon: int = max(HORIZONS)) -> list:
    """`count` run dates over the last part of the data: the dates at the 80/85/90% event
    quantiles, each at most `horizon` days before the last event's date (so the longest
    horizon is complete) and a week before the next; a dataset shorter than that keeps only
    the shortest horizon complete, dates 3 days apart (the longer horizon is truncated)."""
    ts = np.sort(data.ts)
    end = _date(ts[-1])
    latest, step = end - dt.timedelta(days=horizon), 7
    if latest < _date(np.quantile(ts, 0.5)):
        latest, step = end - dt.timedelta(days=min(HORIZONS)), 3
    out: list[dt.date] = []
    for q in np.linspace(0.9, 0.8, count):
        bound = latest if not out else out[-1] - dt.timedelta(days=step)
        out.append(min(_date(np.quantile(ts, q)), bound))
    return sorted(out)


def replay_spec(ds: Dataset, run_date: dt.date) -> LakeSpec:
    """The replay lake of `ds` at `run_date` (see the module docstring)."""
    rows = frame_of(ds.data)
    now = int(end_of_day(run_date).timestamp())
    events = rows.filter(pl.col("ts") < now).sort("ts", "user_id", "item_id")
    later = rows.filter(pl.col("ts") >= now)
    last = int(rows["ts"].max())
    known = events.group_by("user_id").agg(
        pl.len().alias("length"), pl.col("ts").max().alias("last_ts")
    )
    registered = registry(ds).select("user_id")
    targets, horizons = [], {}
    for h in HORIZONS:
        window = later.filter(pl.col("ts") < now + h * DAY)
        horizons[f"h{h}"] = round(min(h, (last - now) / DAY), 1)
        window = _targets("", window.join(events, on=["user_id", "item_id"], how="anti"))
        users = window.select("user_id").unique()
        users = users.join(known, on="user_id", how="left").with_columns(
            pl.col("length").fill_null(0), ((now - pl.col("last_ts")) // DAY).alias("gap")
        )
        # Users who arrive after D are scorable only when they are in the registry.
        users = users.filter((pl.col("length") > 0) | pl.col("user_id").is_in(
            registered["user_id"].implode()))  # fmt: skip
        parts = [users.with_columns(pl.lit("all").alias("seg"))]
        for lo, hi, name in LENGTH_BINS:
            parts.append(_binned(users, "length", lo, hi, name))
        for lo, hi, name in GAP_BINS:
            parts.append(_binned(users.filter(pl.col("length") > 0), "gap", lo, hi, name))
        seg = pl.concat(parts).select("user_id", "seg")
        targets.append(
            window.drop("segment")
            .join(seg, on="user_id")
            .select((pl.lit(f"h{h}/") + pl.col("seg")).alias("segment"), "user_id", "item_id")
        )
    info = {"horizon_days": horizons, "events_after": later.height}
    return LakeSpec("replay", ds.name, run_date, events, registry(ds), ds.side.items,
                    pl.concat(targets), info)  # fmt: skip


def segment_users(spec: LakeSpec) -> dict[str, int]:
    """Users per segment, every segment of the protocol listed (0 when empty)."""
    names = COLD_SEGMENTS if spec.protocol == "cold" else REPLAY_SEGMENTS
    counts = spec.targets.group_by("segment").agg(pl.col("user_id").n_unique())
    found = dict(counts.iter_rows())
    return {name: int(found.get(name, 0)) for name in names}


def land(lake: Lake, spec: LakeSpec) -> list[str]:
    """Write the spec's events and side tables to the lake's raw landing zone."""
    files = write_interactions(lake, spec.events, spec.dataset)
    files.append(lake.write_parquet_file(RAW_USERS, "users.parquet", spec.users))
    if spec.items is not None:
        files.append(lake.write_parquet_file(RAW_ITEMS, "items.parquet", spec.items))
    return files


def _targets(segment: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Unique (segment, user_id, item_id) target rows."""
    return frame.select(pl.lit(segment).alias("segment"), "user_id", "item_id").unique(
        maintain_order=True
    )


def _binned(users: pl.DataFrame, column: str, lo: int, hi: int, name: str) -> pl.DataFrame:
    return users.filter(pl.col(column).is_between(lo, hi)).with_columns(pl.lit(name).alias("seg"))


def _date(ts: int | float) -> dt.date:
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).date()
