"""Great Expectations: the same RULES as a GX 1.x suite, run on a sample as evidence.

The row-level rules (tasks.validate.rules) decide each row's fate; GX checks that the
silver result satisfies the contract, so a GX failure means a bug, not bad data (see
docs/validation.md). GX is imported lazily, once per process (it costs ~3 s).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import polars as pl
import pyarrow as pa

from schemas.interactions import REQUIRED_RAW_COLUMNS, RULES, UNIQUE_KEY
from tasks.config import Settings
from tasks.validate.rules import future_limit, ts_floor

# pandas type names GX observes for each Arrow type (after Polars' to_pandas).
_GX_TYPES = {pa.string(): "str", pa.float64(): "float64", pa.int64(): "int64"}
_GX_CACHE: dict[str, Any] = {}


def build_suite(schema: pa.Schema, day: dt.date, settings: Settings) -> Any:
    """The GX suite stating RULES (plus column presence and types) for frames of `schema`.

    A rule is stated on its own column or, when the frame has only the typed column
    (silver has `ts`, not `ts_raw`), on that; a rule whose column the frame lacks is
    skipped, so a suite never names a column outside `schema`. `day` is the latest
    partition date of the rows validated (the future-ts bound).
    """
    gxe = load_gx()["expectations"]
    names = set(schema.names)
    expectations: dict[str, Any] = {}

    def add(exp: Any) -> None:
        expectations.setdefault(json.dumps(exp.configuration.to_json_dict(), default=str), exp)

    for f in schema:
        add(gxe.ExpectColumnToExist(column=f.name))
        gx_type = "Timestamp" if pa.types.is_timestamp(f.type) else _GX_TYPES.get(f.type)
        if gx_type:
            add(gxe.ExpectColumnValuesToBeOfType(column=f.name, type_=gx_type))
    for rule in RULES:
        column = rule.column if rule.column in names else rule.column.removesuffix("_raw")
        if column not in names:
            continue
        if rule.kind == "parse_ok":
            add(gxe.ExpectColumnValuesToBeNull(column=column))
        elif rule.kind == "not_empty" or (rule.kind == "parsed" and column in REQUIRED_RAW_COLUMNS):
            add(gxe.ExpectColumnValuesToNotBeNull(column=column))
        elif rule.kind == "max_length":
            add(
                gxe.ExpectColumnValueLengthsToBeBetween(
                    column=column, max_value=settings.max_id_length
                )
            )
        elif rule.kind == "not_before":
            add(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=ts_floor(settings)))
        elif rule.kind == "not_future":
            add(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column, max_value=future_limit(day, settings)
                )
            )
        elif rule.kind == "in_set":
            add(
                gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(settings.event_types))
            )
        elif rule.kind == "in_range":
            add(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column, min_value=settings.value_min, max_value=settings.value_max
                )
            )
        elif rule.kind == "unique_key" and set(UNIQUE_KEY) <= names:
            # Unique within a partition: a sample of many dates carries its date as `dt`.
            key = [*UNIQUE_KEY, *(["dt"] if "dt" in names else [])]
            add(gxe.ExpectCompoundColumnsToBeUnique(column_list=key))
    suite = load_gx()["module"].ExpectationSuite(name=f"interactions_{day.isoformat()}")
    for exp in expectations.values():
        suite.add_expectation(exp)
    return suite


def run_gx(
    frame: pl.DataFrame, day: dt.date, settings: Settings, rows_total: int | None = None
) -> dict[str, Any]:
    """Validate `frame` (or a deterministic sample of settings.gx_sample_rows) with GX.

    Returns the GX result as a JSON-able dict, plus `rows_validated` and `rows_total`
    (`rows_total` defaults to the frame's height: pass it when `frame` is already a sample).
    """
    sample = frame
    if frame.height > settings.gx_sample_rows:
        sample = frame.sample(n=settings.gx_sample_rows, seed=settings.seed)
    suite = build_suite(frame.to_arrow().schema, day, settings)
    batch = load_gx()["batch"].get_batch(batch_parameters={"dataframe": sample.to_pandas()})
    result = batch.validate(suite, result_format="SUMMARY").to_json_dict()
    result["rows_validated"] = sample.height
    result["rows_total"] = frame.height if rows_total is None else rows_total
    return result


def load_gx() -> dict[str, Any]:
    """GX module, expectations, ephemeral context and a pandas batch definition; built
    once per process (benchmarks call it to keep the import out of their timings)."""
    if not _GX_CACHE:
        # Lazy: `import great_expectations` costs ~3 s, paid only when a partition is
        # actually validated (CLI commands and skipped reruns never pay it).
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = ctx.data_sources.add_pandas("metarec").add_dataframe_asset("interactions")
        _GX_CACHE.update(
            module=gx,
            expectations=gxe,
            context=ctx,
            batch=asset.add_batch_definition_whole_dataframe("frame"),
        )
    return _GX_CACHE
