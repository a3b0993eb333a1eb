"""Validate: one bronze partition -> silver + quarantine, with row accounting and GX evidence.

Reads   bronze/interactions/dt=D/part-0.parquet (+ its _files.json: corrupt files)
Writes  silver/interactions/dt=D/part-0.parquet        (schemas.interactions.SILVER)
        silver/interactions/dt=D/_gx_result.json       (Great Expectations result)
        quarantine/interactions/dt=D/part-0.parquet    (QUARANTINE: bronze + reason)
        gold/runs/stage=validate/dt=D/part-0.parquet   (one accounting row)

Each row's fate comes from `schemas.interactions.RULES`, compiled here into Polars
predicates that run on every row; the first failing rule names the reason. The same RULES
build the Great Expectations suite that then validates the cleaned silver frame (on a
deterministic sample for big partitions; see docs/validation.md), so the rules are
declared once and the GX result is the evidence of what was checked.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from schemas.interactions import (
    BRONZE,
    QUARANTINE,
    REQUIRED_RAW_COLUMNS,
    RULES,
    SILVER,
    UNIQUE_KEY,
    Rule,
)
from tasks.config import Settings
from tasks.ingest import BRONZE_TABLE, MANIFEST, lake_relative
from tasks.storage import Lake, parse_date

SILVER_TABLE = "silver/interactions"
QUARANTINE_TABLE = "quarantine/interactions"
RUNS_TABLE = "gold/runs"
GX_RESULT = "_gx_result.json"
# Source order decides which copy of a key is "first" (kept) and which are later.
_SOURCE_ORDER = ("source_file", "source_line")
_SILVER_ORDER = ("ts", "user_id", "item_id", "event_type", "source_file", "source_line")
# pandas type names GX observes for each Arrow type (after Polars' to_pandas).
_GX_TYPES = {pa.string(): "str", pa.float64(): "float64", pa.int64(): "int64"}
_GX_CACHE: dict[str, Any] = {}


class PartitionQualityError(Exception):
    """A partition's quarantined share exceeds Settings.max_bad_share."""


@dataclass(frozen=True)
class ValidationResult:
    """Accounting of one partition: raw_rows == silver_rows + sum(quarantined) + duplicates."""

    date: dt.date
    raw_rows: int
    silver_rows: int
    quarantined: dict[str, int]
    duplicates: int
    corrupt_files: list[tuple[str, str]]
    bad_share: float
    gx_success: bool | None
    gx_statistics: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)


def validate_date(lake: Lake, date: str | dt.date, settings: Settings) -> ValidationResult:
    """Split the bronze partition of `date` into silver, quarantine and duplicates.

    Quarantine and the accounting row are always written. Silver and its GX result are
    written only when the quarantined share is within `settings.max_bad_share`; otherwise
    `PartitionQualityError` is raised (the previous silver partition, if any, is kept).
    """
    day = parse_date(date)
    bronze = lake.read_partition(BRONZE_TABLE, dt=day)
    manifest = lake.read_json(lake_relative(lake, f"{lake.path(BRONZE_TABLE, dt=day)}/{MANIFEST}"))
    corrupt = [tuple(x) for x in (manifest or {}).get("corrupt_files", [])]

    silver, quarantine, duplicates = split_rows(bronze, day, settings)
    counts = dict(quarantine.group_by("reason").len().sort("reason").iter_rows())
    n_bad = quarantine.height
    if bronze.height != silver.height + n_bad + duplicates:  # must hold exactly, always
        raise RuntimeError(
            f"row accounting broken for {day}: {bronze.height} bronze != "
            f"{silver.height} silver + {n_bad} quarantined + {duplicates} duplicates"
        )
    bad_share = n_bad / bronze.height if bronze.height else 0.0
    failed = bad_share > settings.max_bad_share

    paths = {
        "quarantine": lake.write_partition(
            QUARANTINE_TABLE, quarantine.to_arrow().cast(QUARANTINE), dt=day
        )
    }
    gx_success, gx_stats = None, {}
    if not failed:
        paths["silver"] = lake.write_partition(SILVER_TABLE, silver.to_arrow().cast(SILVER), dt=day)
        gx = run_gx(silver, day, settings)
        gx_success, gx_stats = gx["success"], gx["statistics"]
        paths["gx_result"] = lake.write_json(
            lake_relative(lake, f"{lake.path(SILVER_TABLE, dt=day)}/{GX_RESULT}"), gx
        )
    result = ValidationResult(
        date=day,
        raw_rows=bronze.height,
        silver_rows=silver.height,
        quarantined=counts,
        duplicates=duplicates,
        corrupt_files=corrupt,
        bad_share=bad_share,
        gx_success=gx_success,
        gx_statistics=gx_stats,
        paths=paths,
    )
    paths["runs"] = lake.write_partition(
        RUNS_TABLE, _accounting_row(result, failed), stage="validate", dt=day
    )
    if failed:
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        reasons = ", ".join(f"{r}={c}" for r, c in top)
        raise PartitionQualityError(
            f"{SILVER_TABLE}/dt={day}: {n_bad} of {bronze.height} rows quarantined "
            f"({bad_share:.1%} > max_bad_share {settings.max_bad_share:.1%}); "
            f"top reasons: {reasons}; see {paths['quarantine']}"
        )
    return result


# ---- row-level rules --------------------------------------------------------------------
def compile_rule(rule: Rule, day: dt.date, settings: Settings) -> pl.Expr:
    """A Polars predicate that is True where a row FAILS `rule` (unique_key excluded)."""
    col = pl.col(rule.column)
    if rule.kind == "parse_ok":  # parse_error carries the reason code of the failed read
        return col.is_not_null() & (col == rule.reason)
    if rule.kind == "not_empty":
        return col.is_null() | (col.str.strip_chars() == "")
    if rule.kind == "parsed":
        raw = pl.col(f"{rule.column}_raw")
        return raw.is_not_null() & (raw.str.strip_chars() != "") & col.is_null()
    if rule.kind == "not_future":
        return col.is_not_null() & (col > future_limit(day, settings))
    if rule.kind == "in_set":
        return col.is_null() | ~col.is_in(list(settings.event_types))
    if rule.kind == "in_range":
        inside = col.is_between(settings.value_min, settings.value_max) & ~col.is_nan()
        return col.is_not_null() & ~inside
    raise ValueError(f"rule {rule.reason!r}: no row predicate for kind {rule.kind!r}")


def future_limit(day: dt.date, settings: Settings) -> dt.datetime:
    """Latest acceptable event time of landing day `day`: its end plus the tolerance."""
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return end + dt.timedelta(hours=settings.future_tolerance_hours)


def split_rows(
    bronze: pl.DataFrame, day: dt.date, settings: Settings
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(silver, quarantine, exact duplicates dropped) for one bronze partition.

    The reason of a row is the first rule (in RULES order) it fails. Among rows that pass
    every other rule, rows sharing UNIQUE_KEY are ordered by (source_file, source_line):
    the first is kept, later ones with the same value are exact duplicates (counted), and
    later ones with a different value are quarantined as the unique_key rule's reason.
    """
    row_rules = [r for r in RULES if r.kind != "unique_key"]
    key_rule = next(r for r in RULES if r.kind == "unique_key")
    reason = pl.lit(None, pl.String)
    for rule in reversed(row_rules):  # built inside out, so the first rule wins
        reason = (
            pl.when(compile_rule(rule, day, settings)).then(pl.lit(rule.reason)).otherwise(reason)
        )
    expectation = {r.reason: r.expectation for r in RULES}
    frame = bronze.with_columns(reason=reason)
    passing = frame.filter(pl.col("reason").is_null())
    # Only rows whose key occurs more than once need ordering; that is a tiny share, so
    # the sort and the windows run on it alone, not on the whole partition.
    repeated = pl.struct(UNIQUE_KEY).is_duplicated()
    dup_keys = passing.filter(repeated).sort(*_SOURCE_ORDER)
    conflict = ~pl.col("value").eq_missing(pl.col("value").first().over(UNIQUE_KEY))
    later = pl.int_range(pl.len()).over(UNIQUE_KEY) > 0
    dup_keys = dup_keys.with_columns(
        reason=pl.when(conflict).then(pl.lit(key_rule.reason)), _dup=later & ~conflict
    )
    keep = pl.concat(
        [
            passing.filter(~repeated).select(SILVER.names),
            dup_keys.filter(pl.col("reason").is_null() & ~pl.col("_dup")).select(SILVER.names),
        ]
    )
    silver = keep.sort(*_SILVER_ORDER)
    quarantine = (
        pl.concat(
            [
                frame.filter(pl.col("reason").is_not_null()),
                dup_keys.filter(pl.col("reason").is_not_null()).select(*BRONZE.names, "reason"),
            ]
        )
        .with_columns(expectation=pl.col("reason").replace_strict(expectation))
        .sort(*_SOURCE_ORDER)
        .select(QUARANTINE.names)
    )
    return silver, quarantine, int(dup_keys["_dup"].sum())


# ---- Great Expectations -----------------------------------------------------------------
def build_suite(schema: pa.Schema, day: dt.date, settings: Settings) -> Any:
    """The GX suite stating RULES (plus column presence and types) for frames of `schema`.

    A rule is stated on its own column or, when the frame has only the typed column
    (silver has `ts`, not `ts_raw`), on that; a rule whose column the frame lacks is
    skipped, so a suite never names a column outside `schema`.
    """
    gxe = _gx()["expectations"]
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
            add(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(UNIQUE_KEY)))
    suite = _gx()["module"].ExpectationSuite(name=f"interactions_{day.isoformat()}")
    for exp in expectations.values():
        suite.add_expectation(exp)
    return suite


def run_gx(frame: pl.DataFrame, day: dt.date, settings: Settings) -> dict[str, Any]:
    """Validate `frame` (or a deterministic sample of settings.gx_sample_rows) with GX.

    Returns the GX result as a JSON-able dict, plus `rows_validated` and `rows_total`.
    """
    sample = frame
    if frame.height > settings.gx_sample_rows:
        sample = frame.sample(n=settings.gx_sample_rows, seed=settings.seed)
    suite = build_suite(frame.to_arrow().schema, day, settings)
    batch = _gx()["batch"].get_batch(batch_parameters={"dataframe": sample.to_pandas()})
    result = batch.validate(suite, result_format="SUMMARY").to_json_dict()
    result["rows_validated"], result["rows_total"] = sample.height, frame.height
    return result


def _gx() -> dict[str, Any]:
    """GX module, expectations and a pandas batch definition; imported once per process.

    The import costs ~3 s, so it happens only when a partition is actually validated.
    """
    if not _GX_CACHE:
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


# ---- accounting -------------------------------------------------------------------------
def _accounting_row(r: ValidationResult, failed: bool) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": [r.date],
            "status": ["failed" if failed else "ok"],
            "raw_rows": [r.raw_rows],
            "silver_rows": [r.silver_rows],
            "quarantined_rows": [sum(r.quarantined.values())],
            "duplicates": [r.duplicates],
            "bad_share": [r.bad_share],
            "quarantined": [json.dumps(r.quarantined, sort_keys=True)],
            "corrupt_files": [json.dumps(r.corrupt_files)],
            "gx_success": [r.gx_success],
            "gx_statistics": [json.dumps(r.gx_statistics, sort_keys=True)],
            "validated_at": [dt.datetime.now(dt.UTC)],
        },
        schema_overrides={"gx_success": pl.Boolean},
    )
