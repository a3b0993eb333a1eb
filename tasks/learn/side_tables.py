"""The optional side tables `raw/users/*` (key `user_id`) and `raw/items/*` (key `item_id`).

Reads CSV (header), JSONL or Parquet files, gzip-compressed or not; writes nothing. A
broken file is skipped with a warning (side features are optional: they must not stop a
night); later files win for a repeated key.
"""

from __future__ import annotations

import io
import logging

import polars as pl

from schemas.tables import RAW_ITEMS, RAW_USERS, Table
from tasks.lake.storage import Lake
from tasks.learn.interactions import SideFeatures

log = logging.getLogger(__name__)

_READERS = (".csv", ".jsonl", ".ndjson", ".json", ".parquet")


def read_side_tables(lake: Lake) -> SideFeatures:
    """The optional side tables `raw/users/*` and `raw/items/*` (None where absent)."""
    return SideFeatures(
        users=_read_side_table(lake, RAW_USERS, "user_id"),
        items=_read_side_table(lake, RAW_ITEMS, "item_id"),
    )


def _read_side_table(lake: Lake, table: Table, key: str) -> pl.DataFrame | None:
    folder = lake.path(table)
    if not lake.fs.exists(folder):
        return None
    paths = sorted(
        p
        for p in lake.fs.find(folder)
        if not p.rsplit("/", 1)[-1].startswith((".", "_"))
        and p.removesuffix(".gz").endswith(_READERS)
    )
    frames = []
    for path in paths:
        try:
            frame = _read_file(lake, path, key)
        except Exception as exc:  # a broken side file must not stop the nightly run
            log.warning("side table file %s skipped: %s", path, exc)
            continue
        if key in frame.columns:
            frames.append(frame.with_columns(pl.col(key).cast(pl.String)))
        else:
            log.warning("side table file %s skipped: no %s column", path, key)
    if not frames:
        return None
    # Later files win for a repeated key (files sort by name, e.g. by landing date).
    merged = pl.concat(frames, how="diagonal_relaxed")
    return merged.filter(pl.col(key).is_not_null()).unique(key, keep="last", maintain_order=True)


def _read_file(lake: Lake, path: str, key: str) -> pl.DataFrame:
    with lake.fs.open(path, "rb", compression="infer") as f:
        payload = f.read()
    name = path.removesuffix(".gz")
    if name.endswith(".parquet"):
        return pl.read_parquet(io.BytesIO(payload))
    if name.endswith(".csv"):
        # The key stays text ("007" is not 7); other columns are inferred.
        return pl.read_csv(payload, schema_overrides={key: pl.String}, infer_schema_length=10_000)
    return pl.read_ndjson(io.BytesIO(payload), infer_schema_length=10_000)
