"""Raw text (or typed Parquet columns) -> the typed bronze `ts` and `value`.

Typed columns are null where the text did not parse; the raw text stays beside them, so
validation can tell "missing" from "unparseable".
"""

from __future__ import annotations

import polars as pl

UTC = pl.Datetime("us", "UTC")


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
    from_epoch = (s.cast(pl.Float64, strict=False) * 1_000_000).cast(pl.Int64, strict=False)
    return pl.when(epoch).then(from_epoch.cast(UTC)).otherwise(parsed_iso).alias("ts")


def typed_ts(dtype: pl.DataType | None) -> dict[str, pl.Expr]:
    """`ts` and `ts_raw` of a Parquet `ts` column of type `dtype` (None: no such column).

    A timestamp is taken as it is (naive = UTC) and numbers as epoch seconds, not printed
    and parsed back; any other type is left to `type_text` as text.
    """
    if dtype is None:
        return {"ts_raw": pl.lit(None, pl.String)}
    ts = pl.col("ts")
    if isinstance(dtype, pl.Datetime):
        ts = ts.dt.replace_time_zone("UTC") if dtype.time_zone is None else ts
        ts = ts.dt.convert_time_zone("UTC").cast(UTC)
        return {"ts": ts, "ts_raw": ts.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00")}
    if dtype.is_numeric():  # epoch seconds
        micros = (ts.cast(pl.Float64) * 1_000_000).cast(pl.Int64, strict=False)
        return {"ts": micros.cast(UTC), "ts_raw": ts.cast(pl.String)}
    return {"ts_raw": ts.cast(pl.String)}


def typed_value(dtype: pl.DataType | None) -> dict[str, pl.Expr]:
    """`value` and `value_raw` of a Parquet `value` column (numbers taken as they are)."""
    if dtype is None:
        return {"value_raw": pl.lit(None, pl.String)}
    if dtype.is_numeric():
        return {
            "value": pl.col("value").cast(pl.Float64),
            "value_raw": pl.col("value").cast(pl.String),
        }
    return {"value_raw": pl.col("value").cast(pl.String)}
