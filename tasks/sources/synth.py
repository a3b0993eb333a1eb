"""Synthetic interaction logs with known structure and known faults (`metarec synth`).

Users and items have latent taste vectors that correlate with their side features; items
have Zipf popularity; events follow a daily cycle (evening peak, UTC); users and items
arrive over time and some users never interact (zero-shot). With a dirty rate, rows get
exactly one fault each, counted per day under the names of `schemas.interactions.REASONS`.

Writes:
  raw/users/users.parquet      user_id, age, country, device, interests (`|`-joined)
  raw/items/items.parquet      item_id, title, category, tags (`|`-joined), price
  raw/interactions/dt=D/       part-a.csv, part-b.jsonl.gz, part-c.parquet and, on some
                               dirty days, part-d.jsonl.gz (a truncated gzip: unreadable)
  raw/_synth_manifest.json     expected row accounting per day (SynthManifest)
  raw/_synth_truth.npz         true taste vectors, arrival days, zero-shot mask
The same parameters give the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import io
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from schemas.interactions import RAW_COLUMNS, REASONS
from tasks.lake.storage import Lake
from tasks.sources.movielens import parquet_bytes

FILES = ("part-a.csv", "part-b.jsonl.gz", "part-c.parquet", "part-d.jsonl.gz")
CSV, JSONL, PARQUET, CORRUPT = range(4)
EVENT_TYPES = ("view", "click", "cart", "purchase", "rating", "play")
_EVENT_P = np.array([0.45, 0.22, 0.08, 0.05, 0.08, 0.12])
# Hour-of-day weights: trough around 08:00 UTC, peak around 20:00 UTC.
_HOUR_P = 1.0 + 0.85 * np.cos(2 * np.pi * (np.arange(24) - 20) / 24)
_HOUR_P /= _HOUR_P.sum()
_CANDIDATES = 10  # popularity-drawn candidates per event; taste picks one of them
_TASTE = 2.0  # how strongly taste (vs popularity) decides the pick
_CHUNK = 250_000  # events per vectorised block (bounds memory at millions of events a day)

CATEGORIES = ("books", "music", "movies", "games", "sports", "garden", "kitchen", "fashion",
              "beauty", "toys", "electronics", "travel")  # fmt: skip
TAGS = tuple(f"tag{k:02d}" for k in range(32))
COUNTRIES = ("US", "IN", "BR", "DE", "GB", "FR", "JP", "ES", "MX", "NG")
DEVICES = ("android", "ios", "web")

# Fault codes index REASONS; DUPLICATE marks an exact copy (counted, not quarantined).
CODE = {name: code for code, name in enumerate(REASONS)}
DUPLICATE = len(REASONS)
_BAD_TS = ("not-a-date", "2024-13-45", "yesterday", "31/12/2023 10:00")
_BAD_TYPES = ("hover", "share", "wishlist", "like")
_BAD_VALUES = ("abc", "n/a", "1.2.3", "five")
# Faults made by editing a row in place (the row stops being clean); the other two kinds
# are added copies, and invalid_encoding is drawn from CSV rows only.
_IN_PLACE = tuple(r for r in REASONS if r not in ("invalid_encoding", "conflicting_duplicate"))
_ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class SynthParams:
    """What `metarec synth` generates (users..seed and start are command-line options)."""

    users: int = 1_000
    items: int = 500
    days: int = 7
    events_per_day: int = 5_000
    dirty_rate: float = 0.0  # about this share of rows gets one fault, spread over kinds
    seed: int = 0
    start: dt.date = dt.date(2024, 1, 1)
    dim: int = 8  # latent taste dimension
    zero_shot_share: float = 0.05  # users in raw/users who never interact
    initial_share: float = 0.6  # users/items present on day 0; the rest arrive later

    def __post_init__(self) -> None:
        if min(self.users, self.items, self.days, self.events_per_day) < 1:
            raise ValueError("users, items, days and events_per_day must be >= 1")
        if not 0.0 <= self.dirty_rate <= 0.5:
            raise ValueError("dirty_rate must be within [0, 0.5]")


@dataclass(frozen=True)
class DayManifest:
    """Expected accounting of one raw partition: rows_written = clean + quarantined + dups."""

    date: dt.date
    rows_written: int  # data rows in readable files (lines, not headers)
    clean_rows: int  # rows silver should hold
    quarantine: dict[str, int]  # every reason in REASONS, 0 included
    duplicates: int  # exact copies to drop and count
    corrupt_files: tuple[dict, ...] = ()  # {file, reason: "truncated_gzip", rows}
    unknown_column_files: tuple[str, ...] = ()  # lake-relative paths
    files: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class SynthManifest:
    """The generator's ground truth: parameters, per-day accounting and totals."""

    params: SynthParams
    users: int
    items: int
    zero_shot_users: int
    days: tuple[DayManifest, ...]

    @property
    def totals(self) -> dict:
        """Sums over days (corrupt files and unknown-column files as counts)."""
        out = {k: sum(getattr(d, k) for d in self.days) for k in ("rows_written", "clean_rows")}
        out["quarantine"] = {r: sum(d.quarantine[r] for d in self.days) for r in REASONS}
        out["duplicates"] = sum(d.duplicates for d in self.days)
        out["corrupt_files"] = sum(len(d.corrupt_files) for d in self.days)
        out["corrupt_rows"] = sum(c["rows"] for d in self.days for c in d.corrupt_files)
        out["unknown_column_files"] = sum(len(d.unknown_column_files) for d in self.days)
        return out

    def to_json(self) -> dict:
        """A JSON-ready dict (dates as ISO strings, lake-relative file names)."""
        doc = dataclasses.asdict(self)
        doc["params"]["start"] = self.params.start.isoformat()
        for day in doc["days"]:
            day["date"] = day["date"].isoformat()
            day.pop("files")  # absolute paths would make the bytes depend on the lake root
        doc["totals"] = self.totals
        return doc


@dataclass(frozen=True)
class _World:
    users: pl.DataFrame
    items: pl.DataFrame
    user_vec: np.ndarray  # (n_users, dim) float32
    item_vec: np.ndarray  # (n_items, dim) float32
    user_arrival: np.ndarray  # day index of first possible activity
    item_arrival: np.ndarray
    zero_shot: np.ndarray  # bool: never interacts
    activity: np.ndarray  # relative user activity
    popularity: np.ndarray  # Zipf weight per item
    price: np.ndarray

    def truth_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            user_ids=self.users["user_id"].to_numpy().astype(str),
            item_ids=self.items["item_id"].to_numpy().astype(str),
            user_vec=self.user_vec,
            item_vec=self.item_vec,
            user_arrival=self.user_arrival,
            item_arrival=self.item_arrival,
            zero_shot=self.zero_shot,
        )
        return buf.getvalue()


def generate(lake: Lake, params: SynthParams) -> SynthManifest:
    """Generate side tables and `params.days` days of raw interaction files into `lake`.

    Returns the manifest (also written to raw/_synth_manifest.json) that states, per day,
    how many rows validation should keep, quarantine (by reason) and drop as duplicates.
    """
    world = _build_world(params, _rng(params, 0))
    lake.write_file("raw/users", "users.parquet", parquet_bytes(world.users))
    lake.write_file("raw/items", "items.parquet", parquet_bytes(world.items))
    lake.write_bytes("raw/_synth_truth.npz", world.truth_npz())
    manifest = SynthManifest(
        params=params,
        users=params.users,
        items=params.items,
        zero_shot_users=int(world.zero_shot.sum()),
        days=tuple(_generate_day(lake, world, params, t) for t in range(params.days)),
    )
    lake.write_json("raw/_synth_manifest.json", manifest.to_json())
    return manifest


def _rng(params: SynthParams, *stream: int) -> np.random.Generator:
    # One independent stream per purpose and day: a day's bytes depend on nothing else.
    return np.random.default_rng([params.seed, *stream])


# ---- users and items ----------------------------------------------------------------


def _build_world(p: SynthParams, rng: np.random.Generator) -> _World:
    n_u, n_i, d = p.users, p.items, p.dim
    cat_emb = rng.normal(size=(len(CATEGORIES), d))
    tag_emb = rng.normal(size=(len(TAGS), d))
    country_emb = rng.normal(size=(len(COUNTRIES), d))
    age_dir = rng.normal(size=d)
    cat_p = rng.dirichlet(np.full(len(CATEGORIES), 2.0))

    # Items: category first, tags leaning to the category, taste vector from both.
    cat = rng.choice(len(CATEGORIES), n_i, p=cat_p)
    tag_bias = rng.normal(0.0, 1.5, size=(len(CATEGORIES), len(TAGS)))
    n_tags = rng.integers(1, 5, n_i)
    tag_mask = _top_k_mask(tag_bias[cat] + rng.gumbel(size=(n_i, len(TAGS))), n_tags)
    item_vec = cat_emb[cat] + 0.6 * (tag_mask @ tag_emb) / n_tags[:, None]
    item_vec += 0.5 * rng.normal(size=(n_i, d))
    price_mu = rng.normal(3.0, 0.8, len(CATEGORIES))
    price = np.maximum(np.round(np.exp(rng.normal(price_mu[cat], 0.5)), 2), 0.99)

    # Users: interests, country and age shape the taste vector.
    country = rng.choice(len(COUNTRIES), n_u, p=rng.dirichlet(np.full(len(COUNTRIES), 1.5)))
    device = rng.choice(len(DEVICES), n_u, p=[0.45, 0.4, 0.15])
    age = np.clip(rng.normal(36, 12, n_u), 16, 80).astype(np.int32)
    n_int = rng.integers(1, 4, n_u)
    int_mask = _top_k_mask(np.log(cat_p) + rng.gumbel(size=(n_u, len(CATEGORIES))), n_int)
    user_vec = (int_mask @ cat_emb) / n_int[:, None] + 0.4 * country_emb[country]
    user_vec += 0.4 * ((age - 36) / 12)[:, None] * age_dir + 0.5 * rng.normal(size=(n_u, d))
    # Scale so a random user-item dot product has unit spread.
    sample = rng.integers(0, [n_u, n_i], size=(2048, 2))
    spread = np.std(np.einsum("nd,nd->n", user_vec[sample[:, 0]], item_vec[sample[:, 1]]))
    scale = 1.0 / np.sqrt(max(spread, 1e-6))

    zero_shot = rng.random(n_u) < p.zero_shot_share
    zero_shot[0] = False  # someone is active on day 0
    if n_u > 1:
        zero_shot[-1] = True  # at least one zero-shot user
    user_arrival = _arrivals(rng, n_u, p)
    item_arrival = _arrivals(rng, n_i, p)
    user_arrival[0] = item_arrival[0] = 0

    uid = _ids("u", n_u)
    users = pl.DataFrame(
        {
            "user_id": uid,
            "age": age,
            "country": np.array(COUNTRIES)[country],
            "device": np.array(DEVICES)[device],
            "interests": _join_names(int_mask, CATEGORIES),
        }
    )
    items = pl.DataFrame(
        {
            "item_id": _ids("i", n_i),
            "title": [f"{CATEGORIES[c]} item {k}" for k, c in enumerate(cat.tolist())],
            "category": np.array(CATEGORIES)[cat],
            "tags": _join_names(tag_mask, TAGS),
            "price": price,
        }
    )
    return _World(
        users=users,
        items=items,
        user_vec=(user_vec * scale).astype(np.float32),
        item_vec=(item_vec * scale).astype(np.float32),
        user_arrival=user_arrival,
        item_arrival=item_arrival,
        zero_shot=zero_shot,
        activity=rng.lognormal(0.0, 1.0, n_u),
        # Zipf-Mandelbrot over a random order: a long tail without one item taking it all.
        popularity=1.0 / (rng.permutation(n_i) + 10.0) ** 0.9,
        price=price,
    )


def _arrivals(rng: np.random.Generator, n: int, p: SynthParams) -> np.ndarray:
    later = rng.integers(1, max(p.days, 2), n) if p.days > 1 else np.zeros(n, np.int64)
    return np.where(rng.random(n) < p.initial_share, 0, later).astype(np.int32)


def _top_k_mask(scores: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Row-wise mask of the k[r] largest scores of each row r."""
    order = np.argsort(-scores, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return ranks < k[:, None]


def _join_names(mask: np.ndarray, names: tuple[str, ...]) -> pl.Series:
    _, cols = np.nonzero(mask)  # row-major: each row's names in vocabulary order
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.array(names)[cols]))
    return pl.Series(lists).list.join("|")


# ---- events -------------------------------------------------------------------------


def _sample_events(w: _World, p: SynthParams, t: int, rng: np.random.Generator) -> pl.DataFrame:
    """The day's clean events: unique on (user, item, event_type, ts), sorted by time."""
    n = p.events_per_day
    active_u = np.flatnonzero((w.user_arrival <= t) & ~w.zero_shot)
    # Newcomers are busier for a few days; new items get a freshness boost.
    w_u = w.activity[active_u] * (1 + 2 * np.exp(-(t - w.user_arrival[active_u]) / 3))
    user = active_u[_draw(w_u, n, rng)]
    active_i = np.flatnonzero(w.item_arrival <= t)
    w_i = w.popularity[active_i] * (1 + 3 * np.exp(-(t - w.item_arrival[active_i]) / 7))
    item = np.empty(n, np.int64)
    affinity = np.empty(n, np.float32)
    for lo in range(0, n, _CHUNK):  # blocks of events, each fully vectorised
        hi = min(lo + _CHUNK, n)
        cand = active_i[_draw(w_i, (hi - lo) * _CANDIDATES, rng)].reshape(hi - lo, -1)
        aff = np.einsum("nd,ncd->nc", w.user_vec[user[lo:hi]], w.item_vec[cand])
        gumbel = -np.log(-np.log(np.maximum(rng.random(aff.shape, np.float32), 1e-7)))
        pick = np.argmax(_TASTE * aff + gumbel, axis=1)
        item[lo:hi] = np.take_along_axis(cand, pick[:, None], 1)[:, 0]
        affinity[lo:hi] = np.take_along_axis(aff, pick[:, None], 1)[:, 0]

    etype = _draw(_EVENT_P, n, rng).astype(np.int8)
    rating = np.clip(np.round(3 + 1.2 * affinity + rng.normal(0, 0.8, n)), 1, 5)
    by_type = [
        np.full(n, np.nan),  # view
        np.full(n, np.nan),  # click
        1.0 + rng.poisson(0.3, n),  # cart: quantity
        w.price[item],  # purchase: price paid
        rating,  # rating: 1..5
        rng.geometric(0.3, n).astype(np.float64),  # play: count
    ]
    value = np.choose(etype, by_type)
    day0 = int(dt.datetime.combine(p.start, dt.time(), dt.UTC).timestamp()) + t * 86_400
    ts = day0 + 3600 * _draw(_HOUR_P, n, rng).astype(np.int64) + rng.integers(0, 3600, n)
    # Sort by (ts, user, item, type) as two int64 keys; equal keys are then adjacent.
    key = (user.astype(np.int64) * len(w.item_vec) + item) * len(EVENT_TYPES) + etype
    order = np.lexsort((key, ts))
    key, ts = key[order], ts[order]
    first = np.concatenate([[True], (key[1:] != key[:-1]) | (ts[1:] != ts[:-1])])
    keep = order[first]
    return pl.DataFrame(
        {"user": user[keep], "item": item[keep], "etype": etype[keep], "ts": ts[first]}
    ).with_columns(value=pl.Series(value[keep]).fill_nan(None))


def _draw(weights: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` i.i.d. indices drawn with probability proportional to `weights`.

    Multinomial counts, repeated and shuffled: the same distribution as a CDF search per
    draw, but linear in memory order (5x faster than searchsorted on large catalogues).
    """
    counts = rng.multinomial(size, weights / weights.sum())
    return rng.permutation(np.repeat(np.arange(len(weights), dtype=np.int32), counts))


# ---- one day: plan the faults, render the files -------------------------------------


def _generate_day(lake: Lake, w: _World, p: SynthParams, t: int) -> DayManifest:
    rng = _rng(p, 1, t)
    day = p.start + dt.timedelta(days=t)
    events = _sample_events(w, p, t, rng)
    dirty = p.dirty_rate > 0
    # File-level faults on a regular schedule, so even a short run shows each kind.
    period = max(1, round(1 / (5 * p.dirty_rate))) if dirty else 0
    corrupt_day = dirty and t % period == 0
    extra_col = (CSV if t % 2 == 0 else JSONL) if dirty and t % period == 1 % period else None

    n = events.height
    shares = np.array([0.38, 0.28, 0.29, 0.05] if corrupt_day else [0.4, 0.3, 0.3, 0.0])
    file = _draw(shares, n, rng).astype(np.int8)
    fault = np.full(n, -1, np.int16)
    conflict = dups = np.empty(0, np.int64)
    if dirty:
        has_value = events["value"].is_not_null().to_numpy()
        fault, conflict, dups = _plan_faults(file, has_value, p.dirty_rate, rng)
    frame = _assemble(events, file, fault, conflict, dups, p, rng)
    written = _write_files(lake, frame, day, t, extra_col)
    # Stale landing files from an earlier run with other parameters would break the counts.
    names = {f.rsplit("/", 1)[-1] for f in written}
    for old in lake.files("raw/interactions", dt=day):
        if old.rsplit("/", 1)[-1] not in names:
            lake.fs.rm(old)

    counts = dict.fromkeys(REASONS, 0)
    codes, k = np.unique(fault[fault >= 0], return_counts=True)
    counts.update({REASONS[c]: int(m) for c, m in zip(codes, k, strict=True)})
    counts["conflicting_duplicate"] = len(conflict)
    n_corrupt = int((file == CORRUPT).sum())
    rel = f"raw/interactions/dt={day.isoformat()}"
    corrupt = {"file": f"{rel}/{FILES[CORRUPT]}", "reason": "truncated_gzip", "rows": n_corrupt}
    return DayManifest(
        date=day,
        rows_written=n - n_corrupt + len(conflict) + len(dups),
        clean_rows=n - n_corrupt - int((fault >= 0).sum()),
        quarantine=counts,
        duplicates=len(dups),
        corrupt_files=(corrupt,) if corrupt_day else (),
        unknown_column_files=(f"{rel}/{FILES[extra_col]}",) if extra_col is not None else (),
        files=tuple(written),
    )


def _plan_faults(
    file: np.ndarray, has_value: np.ndarray, rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick disjoint rows for each fault kind.

    Returns the per-row fault code (-1 = clean) for faults made in place, and the indices
    of rows that get a conflicting copy and an exact copy. Conflict originals come from
    the CSV (the first file) so their copies, appended later, come later in file order.
    """
    kinds = [*REASONS, "duplicate"]
    total = round(rate * (file != CORRUPT).sum())
    k = dict(zip(kinds, rng.multinomial(total, np.full(len(kinds), 1 / len(kinds))), strict=True))
    csv = rng.permutation(np.flatnonzero(file == CSV))
    conflict = csv[has_value[csv]][: min(k["conflicting_duplicate"], len(csv) // 4)]
    csv = csv[~np.isin(csv, conflict)]
    enc = csv[: min(k["invalid_encoding"], len(csv) // 4)]
    pool = rng.permutation(np.concatenate([csv[len(enc) :], np.flatnonzero(file == JSONL)]))
    fault = np.full(len(file), -1, np.int16)
    fault[enc] = CODE["invalid_encoding"]
    used = 0
    for reason in _IN_PLACE:
        take = min(k[reason], (len(pool) - used) // 2)  # leave room for the others
        fault[pool[used : used + take]] = CODE[reason]
        used += take
    rest = rng.permutation(np.concatenate([pool[used:], np.flatnonzero(file == PARQUET)]))
    return fault, conflict, rest[: k["duplicate"]]


def _assemble(
    events: pl.DataFrame,
    file: np.ndarray,
    fault: np.ndarray,
    conflict: np.ndarray,
    dups: np.ndarray,
    p: SynthParams,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """All rows of the day in file order, with the text each field will be written as."""
    base = events.with_columns(file=pl.Series(file), fault=pl.Series(fault), order=pl.col("ts"))
    last = (1 << 33) - 1  # after any epoch-second ts
    conf_file = rng.choice([CSV, JSONL], len(conflict)).astype(np.int8)
    copies = [
        base[conflict].with_columns(
            # A different valid value: the next rating, or one more of a count/price.
            value=pl.when(pl.col("etype") == EVENT_TYPES.index("rating"))
            .then(pl.col("value") % 5 + 1)
            .otherwise(pl.col("value") + 1),
            file=pl.Series(conf_file),
            fault=pl.lit(CODE["conflicting_duplicate"], pl.Int16),
            # Appended after the CSV's rows (or anywhere in the JSONL, a later file).
            order=pl.when(pl.Series(conf_file) == CSV).then(last).otherwise(pl.col("ts")),
        ),
        base[dups].with_columns(
            file=pl.Series(rng.choice([CSV, JSONL, PARQUET], len(dups)).astype(np.int8)),
            fault=pl.lit(DUPLICATE, pl.Int16),
        ),
    ]
    # One int64 key, stable sort: file, then time; copies after their originals on ties.
    frame = pl.concat([base, *copies]).sort(
        pl.col("file").cast(pl.Int64) * (1 << 33) + pl.col("order"), maintain_order=True
    )
    frame = frame.with_columns(var=pl.Series(rng.integers(0, 1 << 30, frame.height)))
    f, v = pl.col("fault"), pl.col("var")

    def pick(options: tuple[str, ...]) -> pl.Expr:
        return (v % len(options)).replace_strict(dict(enumerate(options)), return_dtype=pl.String)

    iso = pl.from_epoch("ts", time_unit="s").dt.strftime(_ISO)
    future = pl.from_epoch(pl.col("ts") + (3 + v % 20) * 86_400, time_unit="s").dt.strftime(_ISO)
    out_of_range = pl.when(v % 2 == 0).then(-(1.0 + v % 50)).otherwise(2e7 * (1 + v % 9))
    item_s = _id_expr("item", "i", p.items)
    return frame.select(
        "file",
        "fault",
        "var",
        "ts",
        pl.when(f == CODE["missing_user_id"]).then(None).otherwise(_id_expr("user", "u", p.users))
        .alias("user_s"),
        pl.when(f == CODE["missing_item_id"]).then(None)
        .when(f == CODE["invalid_encoding"]).then(item_s + "\x01")  # -> Latin-1 byte later
        .otherwise(item_s).alias("item_s"),
        pl.when(f == CODE["missing_ts"]).then(None)
        .when(f == CODE["unparseable_ts"]).then(pick(_BAD_TS))
        .when(f == CODE["future_ts"]).then(future)
        .otherwise(iso).alias("ts_s"),
        pl.when(f == CODE["unknown_event_type"]).then(pick(_BAD_TYPES))
        .otherwise(pl.col("etype").replace_strict(dict(enumerate(EVENT_TYPES)),
                                                  return_dtype=pl.String)).alias("type_s"),
        pl.when(f == CODE["unparseable_value"]).then(pick(_BAD_VALUES))
        .when(f == CODE["value_out_of_range"]).then(out_of_range.cast(pl.String))
        .otherwise(pl.col("value").cast(pl.String)).alias("value_s"),
        pl.col("value"),
    )  # fmt: skip


def _id_expr(column: str, prefix: str, n: int) -> pl.Expr:
    return pl.lit(prefix) + pl.col(column).cast(pl.String).str.zfill(len(str(n - 1)))


def _ids(prefix: str, n: int) -> pl.Series:
    return pl.DataFrame({"k": np.arange(n)}).select(_id_expr("k", prefix, n).alias("id"))["id"]


def _write_files(
    lake: Lake, frame: pl.DataFrame, day: dt.date, t: int, extra_col: int | None
) -> list[str]:
    """Render and atomically write the day's files; returns their paths."""
    written = []
    for (code,), rows in sorted(
        frame.partition_by("file", as_dict=True, maintain_order=True).items()
    ):
        extra = code == extra_col
        if code == CSV:
            payload = _csv_bytes(rows, extra)
        elif code == PARQUET:
            payload = parquet_bytes(_typed(rows, epoch=t % 2 == 0))
        else:
            payload = gzip.compress(_jsonl_bytes(rows, extra), compresslevel=1, mtime=0)
            if code == CORRUPT:
                payload = payload[: len(payload) // 2]  # cut mid-stream: unreadable
        written.append(lake.write_file("raw/interactions", FILES[code], payload, dt=day))
    return written


def _csv_bytes(rows: pl.DataFrame, extra: bool) -> bytes:
    f, v = pl.col("fault"), pl.col("var")
    fields = [pl.col(c).fill_null("") for c in ("user_s", "item_s", "ts_s", "type_s", "value_s")]
    header = list(RAW_COLUMNS)
    if extra:  # a column the contract does not know: kept in bronze, rows stay clean
        fields.append(pl.lit("s") + (pl.col("ts") % 99_991).cast(pl.String))
        header.append("session_id")
    line = pl.concat_str(fields, separator=",")
    line = (
        pl.when(f != CODE["malformed_line"]).then(line)
        .when(v % 2 == 0).then(pl.concat_str(fields[:2], separator=","))  # too few fields
        .otherwise(line + ",extra,fields")  # too many fields
    )  # fmt: skip
    body = ",".join(header) + "\n" + rows.select(line.str.join("\n"))[0, 0] + "\n"
    # The marker set by _assemble becomes a lone Latin-1 byte: an invalid UTF-8 sequence.
    return body.encode().replace(b"\x01", b"\xe9")


def _jsonl_bytes(rows: pl.DataFrame, extra: bool) -> bytes:
    f, v = pl.col("fault"), pl.col("var")

    def text(key: str, col: str, missing: int | None = None) -> pl.Expr:
        piece = pl.lit(f'"{key}":"') + pl.col(col) + '"'
        if missing is None:
            return piece
        # A missing field is spelled three ways in real logs: absent, "", or null.
        return (
            pl.when(f != missing).then(piece)
            .when(v % 3 == 0).then(None)
            .when(v % 3 == 1).then(pl.lit(f'"{key}":""'))
            .otherwise(pl.lit(f'"{key}":null'))
        )  # fmt: skip

    value = (
        pl.when(pl.col("value_s").is_null()).then(pl.lit('"value":null'))
        .when(f == CODE["unparseable_value"]).then(pl.lit('"value":"') + pl.col("value_s") + '"')
        .otherwise(pl.lit('"value":') + pl.col("value_s"))
    )  # fmt: skip
    pieces = [
        text("user_id", "user_s", CODE["missing_user_id"]),
        text("item_id", "item_s", CODE["missing_item_id"]),
        text("ts", "ts_s", CODE["missing_ts"]),
        text("event_type", "type_s"),
        value,
    ]
    if extra:
        pieces.append(pl.lit('"app_version":"1.') + pl.col("var").mod(9).cast(pl.String) + '"')
    line = pl.lit("{") + pl.concat_str(pieces, separator=",", ignore_nulls=True) + "}"
    cut = line.str.slice(0, line.str.len_chars() // 2)  # broken JSON: cut mid-object
    line = pl.when(f == CODE["malformed_line"]).then(cut).otherwise(line)
    return (rows.select(line.str.join("\n"))[0, 0] + "\n").encode()


def _typed(rows: pl.DataFrame, epoch: bool) -> pa.Table:
    """Parquet rows (clean or exact copies): ts as epoch seconds or as a UTC timestamp."""
    ts = pa.array(rows["ts"].to_numpy(), pa.int64())
    return pa.table(
        {
            "user_id": rows["user_s"].to_arrow().cast(pa.string()),
            "item_id": rows["item_s"].to_arrow().cast(pa.string()),
            "ts": ts if epoch else ts.cast(pa.timestamp("s", tz="UTC")),
            "event_type": rows["type_s"].to_arrow().cast(pa.string()),
            "value": rows["value"].to_arrow().cast(pa.float64()),
        }
    )
