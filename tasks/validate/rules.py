"""Each row's fate: `schemas.interactions.RULES` compiled into Polars predicates.

The rules run over all rows of many partitions at once: the partition date of each row is
the column `DAY` (the future-ts limit depends on it), and duplicates are found within each
partition. A cheap "suspect" predicate runs on every row first; the rows it leaves out
provably pass every row rule and need no id normalisation, so the exact rules (and the
normalisation, `schemas.interactions.ID_NORMALISATION`) run on the suspects only.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator

import polars as pl

from schemas.interactions import (
    BRONZE,
    ID_NORMALISATION,
    QUARANTINE,
    RULES,
    SILVER,
    UNIQUE_KEY,
    Rule,
)
from tasks.config import Settings
from tasks.lake.dates import end_of_day

DAY = "_day"  # the partition date of each row, while many partitions are in one frame
# Source order decides which copy of a key is "first" (kept) and which are later.
_SOURCE_ORDER = ("source_file", "source_line")
# Silver order; after dedupe UNIQUE_KEY is unique per partition, so this is total.
_SILVER_ORDER = ("ts", "user_id", "item_id", "event_type")
_BRONZE_NAMES = tuple(BRONZE.names)
_UTC = pl.Datetime("us", "UTC")
_IDS = ("user_id", "item_id")
# Ids that may change under ID_NORMALISATION or be blank: edge whitespace, empty, "1.0".
_ID_SUSPECT = r"^\s|\s$|^$|^[+-]?[0-9]+\.0+$"


def compile_rule(rule: Rule, day: dt.date | pl.Expr, settings: Settings) -> pl.Expr:
    """A Polars predicate that is True where a row FAILS `rule` (unique_key excluded).

    `day` is the partition date, or an expression giving each row's partition date.
    """
    col = pl.col(rule.column)
    if rule.kind == "parse_ok":  # parse_error carries the reason code of the failed read
        return col.is_not_null() & (col == rule.reason)
    if rule.kind == "not_empty":
        return col.is_null() | (col.str.strip_chars() == "")
    if rule.kind == "max_length":
        return col.is_not_null() & (col.str.len_chars() > settings.max_id_length)
    if rule.kind == "not_before":
        return col.is_not_null() & (col < ts_floor(settings))
    if rule.kind == "parsed":
        raw = pl.col(f"{rule.column}_raw")
        return raw.is_not_null() & (raw.str.strip_chars() != "") & col.is_null()
    if rule.kind == "not_future":
        if isinstance(day, dt.date):
            return col.is_not_null() & (col > future_limit(day, settings))
        return col.is_not_null() & (col > _future_limit_expr(day, settings))
    if rule.kind == "in_set":
        return col.is_null() | ~col.is_in(list(settings.event_types))
    if rule.kind == "in_range":
        inside = col.is_between(settings.value_min, settings.value_max) & ~col.is_nan()
        return col.is_not_null() & ~inside
    raise ValueError(f"rule {rule.reason!r}: no row predicate for kind {rule.kind!r}")


def ts_floor(settings: Settings) -> dt.datetime:
    """Earliest acceptable event time: Settings.min_ts, naive meaning UTC."""
    floor = settings.min_ts
    return floor if floor.tzinfo else floor.replace(tzinfo=dt.UTC)


def normalise_id(column: str) -> pl.Expr:
    """An id as silver stores and compares it (ID_NORMALISATION): trimmed, "1.0" -> "1"."""
    pattern, replacement = ID_NORMALISATION
    return pl.col(column).str.strip_chars().str.replace(pattern, replacement)


def future_limit(day: dt.date, settings: Settings) -> dt.datetime:
    """Latest acceptable event time of landing day `day`: its end plus the tolerance."""
    return end_of_day(day) + dt.timedelta(hours=settings.future_tolerance_hours)


def split_rows(
    bronze: pl.DataFrame, day: dt.date, settings: Settings
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(silver, quarantine, exact duplicates dropped) for one bronze partition.

    The reason of a row is the first rule (in RULES order) it fails. Among rows that pass
    every other rule, rows sharing UNIQUE_KEY are ordered by (source_file, source_line):
    the first is kept, later ones with the same value are exact duplicates (counted), and
    later ones with a different value are quarantined as the unique_key rule's reason.
    """
    frame = bronze.lazy().with_columns(pl.lit(day).alias(DAY))
    silver, quarantine, dups = split(frame, settings)
    return pl.concat(sorted_pieces(silver)), quarantine.drop(DAY), dups.height


def split(
    bronze: pl.LazyFrame, settings: Settings
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """`split_rows` over rows of many partitions (`DAY`): silver, quarantine, duplicates.

    Silver is every row's SILVER columns + `DAY` + `_keep` (source_file categorical),
    unfiltered and unsorted: `sorted_pieces` cuts, filters and sorts it piece by piece.
    Quarantine has QUARANTINE + `DAY`; duplicates only `DAY` (one row per dropped copy).
    The wide raw columns (ts_raw, extra, ...) are read for the suspect rows only.
    """
    key_rule = next(r for r in RULES if r.kind == "unique_key")
    key = [*UNIQUE_KEY, DAY]
    cols = [*SILVER.names, DAY]
    core = (
        bronze.with_row_index("_row")
        .select("_row", *cols, _flag=_suspect(settings))
        .with_columns(pl.col("source_file").cast(pl.Categorical))  # one string per file
        .collect()
    )
    flag = core["_flag"]
    wide = [c for c in _BRONZE_NAMES if c not in cols]
    sus = core.filter(flag).drop("_flag")
    sus = sus.join(_fetch(bronze, sus["_row"], wide), on="_row")
    # Ids are judged, deduped and stored normalised; the quarantine shows them as landed.
    raw_ids = {f"_raw_{c}": pl.col(c) for c in _IDS}
    sus = sus.with_columns(**raw_ids, **{c: normalise_id(c) for c in _IDS})
    core = _with_normalised_ids(core, sus)
    sus = sus.with_columns(pl.col("source_file").cast(pl.String), reason=_reason(settings))
    ok = (~flag).scatter(sus.filter(pl.col("reason").is_null())["_row"], True)
    # Only rows whose key occurs more than once need ordering, a tiny share: a 64-bit
    # hash finds them (a collision only adds a row to the exact check below), with a
    # sort of the hashes (cheaper than a hash table of 64-bit keys).
    h = core.select(pl.struct(key).hash(seed=0)).to_series()
    h = pl.select(pl.when(ok).then(h)).to_series()
    hs = h.drop_nulls().sort()
    repeated = h.is_in(hs.filter(hs == hs.shift(1)).unique()).fill_null(False)
    dup_keys = (
        core.filter(repeated)
        .with_columns(pl.col("source_file").cast(pl.String))
        .sort(*_SOURCE_ORDER)
        .with_columns(
            reason=pl.when(~pl.col("value").eq_missing(pl.col("value").first().over(key))).then(
                pl.lit(key_rule.reason)
            ),
            _dup=pl.int_range(pl.len()).over(key) > 0,
        )
        .with_columns(_dup=pl.col("_dup") & pl.col("reason").is_null())
    )
    dropped = dup_keys.filter(pl.col("reason").is_not_null() | pl.col("_dup"))["_row"]
    silver = core.select(*cols, _keep=ok.scatter(dropped, False))
    del core
    conflicts = dup_keys.filter(pl.col("reason").is_not_null()).drop("_flag", "_dup", *_IDS)
    if conflicts.height:
        conflicts = conflicts.join(_fetch(bronze, conflicts["_row"], [*wide, *_IDS]), on="_row")
    expectation = {r.reason: r.expectation for r in RULES}
    rejected = sus.filter(pl.col("reason").is_not_null()).with_columns(
        **{c: pl.col(f"_raw_{c}") for c in _IDS}
    )
    quarantine = (
        pl.concat([rejected, conflicts], how="diagonal_relaxed")
        .with_columns(expectation=pl.col("reason").replace_strict(expectation))
        .sort(DAY, *_SOURCE_ORDER)
        .select(*QUARANTINE.names, DAY)
    )
    return silver, quarantine, dup_keys.filter(pl.col("_dup")).select(DAY)


def sorted_pieces(silver: pl.DataFrame, rows: int = 500_000) -> Iterator[pl.DataFrame]:
    """One partition's kept rows (`_keep`) in silver order, SILVER columns, as consecutive
    pieces of about `rows`.

    ts is the first sort key, so cutting at ts quantiles and sorting each ts range alone
    gives the global order while only one piece is being sorted (a 5M-row sort on string
    keys needs ~1 GB more; pieces of 500K rows ~100 MB).
    """
    out = [pl.col(c).cast(pl.String) if c == "source_file" else pl.col(c) for c in SILVER.names]
    if silver.height <= rows:
        yield silver.filter("_keep").select(out).sort(_SILVER_ORDER)
        return
    ts = silver["ts"].sort()
    cuts = ts.gather(list(range(rows, silver.height, rows))).unique(maintain_order=True)
    bounds = [None, *cuts.to_list(), None]
    for lo, hi in itertools.pairwise(bounds):
        inside = pl.col("_keep")
        if lo is not None:
            inside &= pl.col("ts") >= lo
        if hi is not None:
            inside &= pl.col("ts") < hi
        yield silver.filter(inside).select(out).sort(_SILVER_ORDER)


def _with_normalised_ids(core: pl.DataFrame, sus: pl.DataFrame) -> pl.DataFrame:
    """`core` with the normalised ids of the suspect rows that changed (by row number)."""
    for c in _IDS:
        changed = sus.filter(pl.col(c).ne_missing(pl.col(f"_raw_{c}")))
        if changed.height:
            core = core.with_columns(core[c].scatter(changed["_row"], changed[c]))
    return core


def _future_limit_expr(day: pl.Expr, settings: Settings) -> pl.Expr:
    """`future_limit` of each row's partition date, as an expression."""
    return day.cast(_UTC) + dt.timedelta(days=1, hours=settings.future_tolerance_hours)


def _suspect(settings: Settings) -> pl.Expr:
    """True for every row that may fail a row rule or have its ids changed by
    normalisation; cheap (no string work but one regex per id). Rows it leaves out pass
    every row rule as they are, so the exact rules run on the suspects only."""
    odd_id = [
        pl.col(c).is_null()
        | pl.col(c).str.contains(_ID_SUSPECT)
        | (pl.col(c).str.len_bytes() > settings.max_id_length)  # chars <= bytes
        for c in _IDS
    ]
    ts, value = pl.col("ts"), pl.col("value")
    return (
        pl.col("parse_error").is_not_null()
        | odd_id[0]
        | odd_id[1]
        | ts.is_null()
        | (ts < ts_floor(settings))
        | (ts > _future_limit_expr(pl.col(DAY), settings))
        | ~pl.col("event_type").is_in(list(settings.event_types)).fill_null(False)
        | (value.is_null() & pl.col("value_raw").is_not_null())
        | (
            value.is_not_null()
            & ~(value.is_between(settings.value_min, settings.value_max) & ~value.is_nan())
        )
    )


def _reason(settings: Settings) -> pl.Expr:
    """The first rule (in RULES order) a row fails, or null."""
    reason = pl.lit(None, pl.String)
    for rule in reversed([r for r in RULES if r.kind != "unique_key"]):  # first rule wins
        predicate = compile_rule(rule, pl.col(DAY), settings)
        reason = pl.when(predicate).then(pl.lit(rule.reason)).otherwise(reason)
    return reason


def _fetch(bronze: pl.LazyFrame, rows: pl.Series, columns: list[str]) -> pl.DataFrame:
    """Some columns of the bronze rows numbered `rows` (streamed: bounded memory)."""
    wanted = pl.col("_row").is_in(rows.implode())
    frame = bronze.with_row_index("_row").select("_row", *columns).filter(wanted)
    return frame.collect(engine="streaming")
