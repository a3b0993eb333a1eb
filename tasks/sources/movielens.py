"""Import MovieLens (ML-100K or ml-latest-small) into the lake's raw landing zone.

Reads a MovieLens folder (plain files, or the bundled `*.csv.gz` copy of ml-latest-small).
Writes:
  raw/interactions/dt=YYYY-MM-DD/<flavour>.csv.gz   one landing file per UTC event date
      (user_id, item_id, ts = ISO-8601 UTC, event_type = 'rating', value = the rating)
  raw/users/users.parquet   ML-100K only: user_id, age, gender, occupation, zip_region
  raw/items/items.parquet   item_id, title, genres, year, tags (ml-latest-small only)

Multi-valued columns (`genres`, `tags`) are `|`-joined strings; an item with none has "".
Every file is written atomically and deterministically: a rerun gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from schemas.interactions import RAW_COLUMNS
from schemas.tables import RAW_INTERACTIONS, RAW_ITEMS, RAW_USERS
from tasks.lake.storage import Lake

ML_100K = "ml-100k"
ML_LATEST_SMALL = "ml-latest-small"

_NO_GENRES = "(no genres listed)"
# Titles end in "(1995)" or, for series, "(2006–2007)": the first year is the item's year.
_TITLE_YEAR = r"\((\d{4})(?:[–-]\d{4})?\)\s*$"


@dataclass(frozen=True)
class ImportResult:
    """What an import landed: counts for the CLI and the Prefect artifact."""

    flavour: str
    rows: int  # interactions written
    dates: int  # raw/interactions partitions written
    first_date: dt.date
    last_date: dt.date
    users: int  # distinct users with interactions
    items: int  # rows of raw/items (the catalogue, rated or not)
    user_features: bool  # whether raw/users was written
    files: tuple[str, ...]  # every file written (paths as the lake's filesystem sees them)

    def __str__(self) -> str:
        users = "with" if self.user_features else "without"
        return (
            f"{self.flavour}: {self.rows:,} interactions over {self.dates:,} days "
            f"({self.first_date} .. {self.last_date}), {self.users:,} users ({users} "
            f"features), {self.items:,} items, {len(self.files):,} files"
        )


def bundled_sample_path() -> Path:
    """The ml-latest-small copy shipped with the repo (gzip'd CSVs + its README/license)."""
    # This file is tasks/sources/movielens.py; the copy lives at the repo's data/.
    return Path(__file__).resolve().parents[2] / "data" / "ml-latest-small"


def detect_flavour(source: Path) -> str:
    """`ml-100k` when the folder has u.data, `ml-latest-small` when it has ratings.csv[.gz]."""
    source = Path(source)
    if (source / "u.data").exists():
        return ML_100K
    if _find(source, "ratings.csv") is not None:
        return ML_LATEST_SMALL
    raise FileNotFoundError(
        f"{source} is not a MovieLens folder (expected u.data, ratings.csv or ratings.csv.gz)"
    )


def import_movielens(source: Path, lake: Lake) -> ImportResult:
    """Land a MovieLens dataset in `lake`: raw interactions per date plus side tables.

    Args:
        source: folder of ML-100K (u.data, u.user, u.item, u.genre) or ml-latest-small
            (ratings.csv, movies.csv, tags.csv; each may be gzip'd as `.csv.gz`).
        lake: destination lake.

    Returns:
        ImportResult with row, date, user and item counts and the files written.
    """
    source = Path(source)
    flavour = detect_flavour(source)
    if flavour == ML_100K:
        ratings, users, items = read_ml100k(source)
    else:
        ratings, users, items = read_ml_latest(source)

    files = write_interactions(lake, ratings, flavour)
    if users is not None:
        files.append(lake.write_parquet_file(RAW_USERS, "users.parquet", users))
    files.append(lake.write_parquet_file(RAW_ITEMS, "items.parquet", items))

    days = ratings.select(pl.from_epoch("ts", time_unit="s").dt.date().alias("d"))["d"]
    return ImportResult(
        flavour=flavour,
        rows=ratings.height,
        dates=days.n_unique(),
        first_date=days.min(),
        last_date=days.max(),
        users=ratings["user_id"].n_unique(),
        items=items.height,
        user_features=users is not None,
        files=tuple(files),
    )


def write_interactions(lake: Lake, ratings: pl.DataFrame, name: str) -> list[str]:
    """Write rating events as one gzip'd CSV landing file per UTC date: dt=D/<name>.csv.gz.

    `ratings` has user_id, item_id (strings), ts (epoch seconds) and value. Rows are sorted
    by (ts, user_id, item_id) so the bytes do not depend on the input order; ts is written
    as ISO-8601 UTC (`1997-09-20T03:05:10Z`).
    """
    lines = (
        ratings.lazy()
        .select(
            pl.col("ts").cast(pl.Int64),
            pl.col("user_id").cast(pl.String),
            pl.col("item_id").cast(pl.String),
            pl.col("value").cast(pl.Float64),
        )
        .sort("ts", "user_id", "item_id")
        .select(
            pl.from_epoch("ts", time_unit="s").dt.date().alias("dt"),
            pl.concat_str(
                pl.col("user_id"),
                pl.col("item_id"),
                pl.from_epoch("ts", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                pl.lit("rating"),
                pl.col("value").cast(pl.String),
                separator=",",
            ).alias("line"),
        )
        .collect()
    )
    # Render the CSV body once, then cut it per date: rows of a date are contiguous, so a
    # date's bytes are one slice, located by the cumulative byte length of the lines.
    body = "\n".join(lines["line"].to_list()).encode() + b"\n"
    ends = (lines["line"].str.len_bytes() + 1).cum_sum().to_numpy()
    days = lines["dt"].to_numpy()
    cuts = np.flatnonzero(days[1:] != days[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(days)]])
    header = (",".join(RAW_COLUMNS) + "\n").encode()
    written = []
    for first, last in zip(starts.tolist(), stops.tolist(), strict=True):
        lo = int(ends[first - 1]) if first else 0
        payload = gzip.compress(header + body[lo : int(ends[last - 1])], mtime=0)
        day = days[first].item()
        written.append(lake.write_file(RAW_INTERACTIONS, f"{name}.csv.gz", payload, dt=day))
    return written


# ---- readers -----------------------------------------------------------------------


def read_ml100k(source: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """ML-100K in memory as (ratings, users, items), nothing written.

    ratings: user_id, item_id (strings), value (float), ts (epoch seconds); users:
    user_id, age, gender, occupation, zip_region; items: item_id, title, genres, year.
    """
    ratings = pl.read_csv(
        source / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user_id", "item_id", "value", "ts"],
        schema_overrides={"user_id": pl.String, "item_id": pl.String, "value": pl.Float64},
    )
    users = pl.read_csv(
        source / "u.user",
        separator="|",
        has_header=False,
        new_columns=["user_id", "age", "gender", "occupation", "zip"],
        schema_overrides={"user_id": pl.String, "age": pl.Int32, "zip": pl.String},
    ).select(
        "user_id",
        "age",
        "gender",
        "occupation",
        # 795 distinct zips for 943 users carry no signal; the first character is the
        # US postal region (a letter for the few Canadian codes).
        pl.col("zip").str.slice(0, 1).alias("zip_region"),
    )
    genre_names = (
        pl.read_csv(source / "u.genre", separator="|", has_header=False, new_columns=["n", "i"])
        .drop_nulls()  # the file ends with a blank line
        .sort("i")["n"]
        .to_list()
    )
    flags = [f"g{i}" for i in range(len(genre_names))]
    text = (source / "u.item").read_bytes().decode("latin-1")  # the file is ISO-8859-1
    raw = pl.read_csv(
        io.StringIO(text),
        separator="|",
        has_header=False,
        quote_char=None,
        new_columns=["item_id", "title", "release", "video_release", "url", *flags],
        schema_overrides={"item_id": pl.String, "release": pl.String},
    )
    genre_list = pl.concat_list(
        [
            pl.when(pl.col(f) == 1).then(pl.lit(name))
            for f, name in zip(flags, genre_names, strict=True)
            if name != "unknown"  # the 'unknown' flag means no genre: leave it empty
        ]
    ).list.drop_nulls()
    items = raw.select(
        "item_id",
        pl.col("title").str.strip_chars(),
        genre_list.list.join("|").alias("genres"),
        pl.col("release").str.slice(-4).cast(pl.Int32, strict=False).alias("year"),
    )
    return ratings, users, items


def read_ml_latest(source: Path) -> tuple[pl.DataFrame, None, pl.DataFrame]:
    """ml-latest-small in memory as (ratings, None, items), nothing written.

    ratings as for `read_ml100k` (there are no user features); items: item_id, title,
    genres, year and, when tags.csv is there, tags (lowercased, sorted, `|`-joined).
    """
    ratings = _read_csv(source, "ratings.csv").select(
        pl.col("userId").cast(pl.String).alias("user_id"),
        pl.col("movieId").cast(pl.String).alias("item_id"),
        pl.col("timestamp").cast(pl.Int64).alias("ts"),
        pl.col("rating").cast(pl.Float64).alias("value"),
    )
    movies = _read_csv(source, "movies.csv").select(
        pl.col("movieId").cast(pl.String).alias("item_id"),
        pl.col("title").str.strip_chars(),
        pl.when(pl.col("genres") == _NO_GENRES)
        .then(pl.lit(""))
        .otherwise(pl.col("genres"))
        .alias("genres"),
    )
    items = movies.with_columns(
        pl.col("title").str.extract(_TITLE_YEAR, 1).cast(pl.Int32).alias("year")
    )
    tags_path = _find(source, "tags.csv")
    if tags_path is not None:
        tags = (
            _read_csv(source, "tags.csv")
            .select(
                pl.col("movieId").cast(pl.String).alias("item_id"),
                pl.col("tag").cast(pl.String).str.strip_chars().str.to_lowercase().alias("tag"),
            )
            .filter(pl.col("tag").str.len_chars() > 0)
            .unique()
            .group_by("item_id")
            .agg(pl.col("tag").sort().str.join("|").alias("tags"))
        )
        items = items.join(tags, on="item_id", how="left").with_columns(
            pl.col("tags").fill_null("")
        )
    return ratings, None, items.sort(pl.col("item_id").cast(pl.Int64))


def _find(source: Path, name: str) -> Path | None:
    for candidate in (source / name, source / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def _read_csv(source: Path, name: str) -> pl.DataFrame:
    path = _find(source, name)
    if path is None:
        raise FileNotFoundError(f"{source}: neither {name} nor {name}.gz")
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return pl.read_csv(io.BytesIO(data))
