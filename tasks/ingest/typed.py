"""Raw text (or typed Parquet columns) -> the typed bronze `ts` and `value`.

Typed columns are null where the text did not parse; the raw text stays beside them, so
validation can tell "missing" from "unparseable". Epoch numbers are read by magnitude
(`epoch_micros`): seconds, milliseconds, microseconds or nanoseconds.
"""

from __future__ import annotations

import polars as pl

UTC = pl.Datetime("us", "UTC")
# Epoch magnitudes: below 1e11 is seconds (up to the year 5138), below 1e14 milliseconds
# (1973..5138), below 1e17 microseconds, above nanoseconds. Seconds after 5138 and
# milliseconds before 1973 cannot be told apart; both are read as seconds.
_EPOCH_UNITS = ((1e11, 1e6), (1e14, 1e3), (1e17, 1.0))


def type_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Add typed `ts` and `value` (null where the text did not parse) when missing.

    `ts` takes the common `2024-01-01T10:00:00Z` spelling in one fast pass; only the rest
    (other ISO spellings, epoch seconds) goes through the general parser.
    """
    if "value" not in frame.columns:
        value = pl.col("value_raw").str.strip_chars().cast(pl.Float64, strict=False)
        frame = frame.with_columns(value=value)
    if "ts" in frame.columns:
        return frame
    fast = pl.col("ts_raw").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", strict=False, time_unit="us")
    frame = frame.with_columns(ts=fast.dt.replace_time_zone("UTC"))
    todo = frame.select(
        pl.arg_where(pl.col("ts").is_null() & pl.col("ts_raw").is_not_null())
    ).to_series()
    if todo.len():
        slow = frame.select(pl.col("ts_raw").gather(todo)).select(parse_ts(pl.col("ts_raw")))
        frame = frame.with_columns(frame["ts"].scatter(todo, slow.to_series()))
    return frame


def parse_ts(raw: pl.Expr) -> pl.Expr:
    """General ts parser: epoch seconds, or ISO-8601 (Z, +hh:mm, +hhmm, naive = UTC,
    space or T, date only = midnight)."""
    s = raw.str.strip_chars()
    epoch = s.str.contains(r"^[+-]?\d+(\.\d+)?$")
    iso = s.str.replace(" ", "T", literal=True).str.replace(r"[zZ]$", "+00:00")
    iso = pl.when(iso.str.len_bytes() == 10).then(iso + "T00:00:00").otherwise(iso)
    iso = pl.when(iso.str.contains(r"[+-]\d\d:?\d\d$")).then(iso).otherwise(iso + "+00:00")
    parsed_iso = pl.coalesce(
        iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us"),
        iso.str.to_datetime("%Y-%m-%dT%H:%M%z", strict=False, time_unit="us"),
    ).dt.convert_time_zone("UTC")
    from_epoch = epoch_micros(s.cast(pl.Float64, strict=False))
    return pl.when(epoch).then(from_epoch).otherwise(parsed_iso).alias("ts")


def epoch_micros(x: pl.Expr) -> pl.Expr:
    """Epoch numbers (Float64) as UTC timestamps, the unit told by magnitude (_EPOCH_UNITS)."""
    scale = pl.lit(1e-3)  # nanoseconds
    for bound, factor in reversed(_EPOCH_UNITS):
        scale = pl.when(x.abs() < bound).then(factor).otherwise(scale)
    return (x * scale).cast(pl.Int64, strict=False).cast(UTC)


def as_text(column: str, dtype: pl.DataType | None) -> pl.Expr:
    """A Parquet column as text: scalars printed, a nested value or a boolean as its JSON
    text (kept as evidence; `is_scalar` says whether it can be an id)."""
    if dtype is None:
        return pl.lit(None, pl.String)
    col = pl.col(column)
    if is_scalar(dtype):
        return col.cast(pl.String, strict=False)
    # {"v":<json>} -> <json>: Polars encodes JSON only for structs.
    wrapped = pl.struct(col.alias("v")).struct.json_encode()
    return pl.when(col.is_not_null()).then(wrapped.str.slice(5).str.head(-1))


def is_scalar(dtype: pl.DataType) -> bool:
    """True for Parquet types an id can have: text and numbers (not nested, not boolean)."""
    return not (dtype.is_nested() or dtype == pl.Boolean or dtype == pl.Null)


def typed_ts(dtype: pl.DataType | None) -> dict[str, pl.Expr]:
    """`ts` and `ts_raw` of a Parquet `ts` column of type `dtype` (None: no such column).

    A timestamp is taken as it is (naive = UTC) and numbers as epoch seconds (or ms, us,
    ns by magnitude), not printed and parsed back; any other type is left to `type_text`
    as text.
    """
    if dtype is None:
        return {"ts_raw": pl.lit(None, pl.String)}
    ts = pl.col("ts")
    if isinstance(dtype, pl.Datetime):
        ts = ts.dt.replace_time_zone("UTC") if dtype.time_zone is None else ts
        ts = ts.dt.convert_time_zone("UTC").cast(UTC)
        return {"ts": ts, "ts_raw": ts.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00")}
    if dtype.is_numeric():  # epoch seconds, or ms/us/ns by magnitude
        return {"ts": epoch_micros(ts.cast(pl.Float64)), "ts_raw": ts.cast(pl.String)}
    return {"ts_raw": as_text("ts", dtype)}


def typed_value(dtype: pl.DataType | None) -> dict[str, pl.Expr]:
    """`value` and `value_raw` of a Parquet `value` column (numbers taken as they are)."""
    if dtype is None:
        return {"value_raw": pl.lit(None, pl.String)}
    if dtype.is_numeric():
        return {
            "value": pl.col("value").cast(pl.Float64),
            "value_raw": pl.col("value").cast(pl.String),
        }
    return {"value_raw": as_text("value", dtype)}
