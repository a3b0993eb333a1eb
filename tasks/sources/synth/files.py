"""Writing one day's rows as landing files: CSV, gzip'd JSONL, Parquet, a truncated gzip.

Each format spells the faults its own way (a missing field is absent, "" or null in
JSONL; an invalid byte only exists in the CSV); rows come in the order `assemble` gave.
"""

from __future__ import annotations

import datetime as dt
import gzip

import polars as pl
import pyarrow as pa

from schemas.interactions import RAW_COLUMNS
from schemas.tables import RAW_INTERACTIONS
from tasks.lake.storage import Lake
from tasks.sources.synth.params import CODE, CORRUPT, CSV, FILES, PARQUET


def write_files(
    lake: Lake, frame: pl.DataFrame, day: dt.date, t: int, extra_col: int | None
) -> list[str]:
    """Render and atomically write the day's files; returns their paths.

    `extra_col` is the file code (CSV or JSONL) that gets a column the contract does not
    know, or None; day index `t` decides whether Parquet ts is epoch seconds or a timestamp.
    """
    written = []
    for (code,), rows in sorted(
        frame.partition_by("file", as_dict=True, maintain_order=True).items()
    ):
        extra = code == extra_col
        if code == PARQUET:
            table = _typed(rows, epoch=t % 2 == 0)
            written.append(lake.write_parquet_file(RAW_INTERACTIONS, FILES[code], table, dt=day))
            continue
        if code == CSV:
            payload = _csv_bytes(rows, extra)
        else:
            payload = gzip.compress(_jsonl_bytes(rows, extra), compresslevel=1, mtime=0)
            if code == CORRUPT:
                payload = payload[: len(payload) // 2]  # cut mid-stream: unreadable
        written.append(lake.write_file(RAW_INTERACTIONS, FILES[code], payload, dt=day))
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
    # The marker set by assemble becomes a lone Latin-1 byte: an invalid UTF-8 sequence.
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
