"""The yardstick's datasets as (Interactions, SideFeatures), read in place.

ML-100K and ml-latest-small come from ../shared/data through tasks/sources/movielens.py's readers
(ML-100K is never copied into the repo); Last.fm 2K from its .dat files; the synthetic
world from tasks/sources/synth's generator, sampled in memory (no lake, no faults).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.sources.movielens import read_ml100k, read_ml_latest
from tasks.sources.synth import SynthParams, build_world, rng_for, sample_events

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
LASTFM_MIN_LISTENERS = 3  # artists with fewer listeners are dropped (EASE stays dense)
LASTFM_TAGS_PER_ARTIST = 8  # most-used tags kept as the artist's features


@dataclass(frozen=True)
class Dataset:
    """One dataset ready for the protocol; `temporal` False = random order (Last.fm)."""

    name: str
    data: Interactions
    side: SideFeatures
    temporal: bool


def load_dataset(name: str, seed: int = 0, root: Path = SHARED) -> Dataset:
    """ml-100k | ml-latest-small | lastfm | synth; `seed` only matters for lastfm (the
    random order that stands in for time) and synth (the world)."""
    if name == "ml-100k":
        ratings, users, items = read_ml100k(root / "ml-100k")
        return Dataset(name, _interactions(ratings, items), SideFeatures(users, items), True)
    if name == "ml-latest-small":
        ratings, _, items = read_ml_latest(root / "ml-latest-small")
        return Dataset(name, _interactions(ratings, items), SideFeatures(None, items), True)
    if name == "lastfm":
        return _lastfm(root / "hetrec2011-lastfm-2k", seed)
    if name == "synth":
        return _synth(seed)
    raise ValueError(f"unknown dataset {name!r}")


def _interactions(ratings: pl.DataFrame, items: pl.DataFrame | None) -> Interactions:
    """The catalogue is every item in the side table plus every rated item."""
    ids = ratings["item_id"].unique()
    if items is not None:
        ids = pl.concat([ids, items["item_id"].cast(pl.String)]).unique()
    return Interactions.from_frame(ratings, item_ids=np.sort(ids.to_numpy().astype(str)))


def _read_dat(path: Path) -> pl.DataFrame:
    text = path.read_bytes().decode("latin-1").replace("\r\n", "\n")
    return pl.read_csv(io.StringIO(text), separator="\t", quote_char=None)


def _lastfm(folder: Path, seed: int) -> Dataset:
    """No timestamps: each event gets a random time (a seeded permutation), so the
    "latest-arriving" users are a random 20% and their support is a random draw."""
    pairs = _read_dat(folder / "user_artists.dat")
    listeners = pairs.group_by("artistID").len()
    keep = listeners.filter(pl.col("len") >= LASTFM_MIN_LISTENERS)["artistID"]
    pairs = pairs.filter(pl.col("artistID").is_in(keep.implode()))
    rng = np.random.default_rng(seed)
    ratings = pairs.select(
        pl.col("userID").cast(pl.String).alias("user_id"),
        pl.col("artistID").cast(pl.String).alias("item_id"),
        pl.Series("ts", rng.permutation(pairs.height).astype(np.int64) + 1_000_000_000),
        pl.col("weight").cast(pl.Float64).alias("value"),
    )
    tags = _read_dat(folder / "tags.dat")
    tagged = (
        _read_dat(folder / "user_taggedartists.dat")
        .group_by("artistID", "tagID")
        .len()
        .join(tags, on="tagID")
        .sort(["artistID", "len", "tagID"], descending=[False, True, False])
        .group_by("artistID", maintain_order=True)
        .head(LASTFM_TAGS_PER_ARTIST)
        .group_by("artistID")
        .agg(pl.col("tagValue").str.replace_all(r"\|", " ").sort().str.join("|").alias("tags"))
        .select(pl.col("artistID").cast(pl.String).alias("item_id"), "tags")
    )
    items = pl.DataFrame({"item_id": keep.cast(pl.String)}).join(tagged, on="item_id", how="left")
    items = items.with_columns(pl.col("tags").fill_null(""))
    data = Interactions.from_frame(ratings, item_ids=np.sort(items["item_id"].to_numpy()))
    return Dataset("lastfm", data, SideFeatures(None, items), False)


def _synth(seed: int) -> Dataset:
    """A small synthetic world (true tastes known, users and items arriving over time)."""
    return synth_dataset(SynthParams(users=1500, items=600, days=28, events_per_day=2500,
                                     seed=seed))  # fmt: skip


def synth_dataset(p: SynthParams) -> Dataset:
    """The synthetic world of `p` sampled in memory (the yardstick's synth; tests use tiny
    worlds): every user and item of the world, the first event per (user, item)."""
    world = build_world(p, rng_for(p, 0))
    days = [sample_events(world, p, t, rng_for(p, 1, t)) for t in range(p.days)]
    events = pl.concat(days)
    uid, iid = world.users["user_id"].to_numpy(), world.items["item_id"].to_numpy()
    # One interaction per (user, item): the first; event types collapse to "interaction".
    first = events.sort("ts").unique(["user", "item"], keep="first", maintain_order=True)
    frame = pl.DataFrame(
        {
            "user_id": uid[first["user"].to_numpy()],
            "item_id": iid[first["item"].to_numpy()],
            "ts": first["ts"].to_numpy(),
        }
    )
    data = Interactions.from_frame(
        frame, item_ids=np.sort(iid.astype(str)), user_ids=np.sort(uid.astype(str))
    )
    return Dataset("synth", data, SideFeatures(world.users, world.items), True)
