"""The injected faults: which rows get which fault, the rows as text, and the manifest.

With a dirty rate, rows get exactly one fault each, counted per day under the names of
`schemas.interactions.REASONS`; the manifest states what validation should find.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from schemas.interactions import REASONS
from tasks.sources.synth.params import (
    CODE,
    CORRUPT,
    CSV,
    DUPLICATE,
    EVENT_TYPES,
    JSONL,
    PARQUET,
    SynthParams,
)
from tasks.sources.synth.world import id_expr

_BAD_TS = ("not-a-date", "2024-13-45", "yesterday", "31/12/2023 10:00")
_BAD_TYPES = ("hover", "share", "wishlist", "like")
_BAD_VALUES = ("abc", "n/a", "1.2.3", "five")
# The reasons the generator injects: those of the first rule set (a later reason, e.g.
# ts_before_floor, is checked by its own tests; leaving it out keeps every seed's files
# byte-identical). The manifest still counts every reason in REASONS (0 for the others).
INJECTED = (
    "malformed_line", "invalid_encoding", "missing_user_id", "missing_item_id", "missing_ts",
    "unparseable_ts", "future_ts", "unknown_event_type", "unparseable_value",
    "value_out_of_range", "conflicting_duplicate",
)  # fmt: skip
# Faults made by editing a row in place (the row stops being clean); the other two kinds
# are added copies, and invalid_encoding is drawn from CSV rows only.
_IN_PLACE = tuple(r for r in INJECTED if r not in ("invalid_encoding", "conflicting_duplicate"))
_ISO = "%Y-%m-%dT%H:%M:%SZ"


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


def plan_faults(
    file: np.ndarray, has_value: np.ndarray, rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick disjoint rows for each fault kind.

    Returns the per-row fault code (-1 = clean) for faults made in place, and the indices
    of rows that get a conflicting copy and an exact copy. Conflict originals come from
    the CSV (the first file) so their copies, appended later, come later in file order.
    """
    kinds = [*INJECTED, "duplicate"]
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


def assemble(
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
    item_s = id_expr("item", "i", p.items)
    return frame.select(
        "file",
        "fault",
        "var",
        "ts",
        pl.when(f == CODE["missing_user_id"]).then(None).otherwise(id_expr("user", "u", p.users))
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
