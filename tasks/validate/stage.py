"""Validate: bronze partitions -> silver + quarantine, with row accounting and GX evidence.

Reads   bronze/interactions/dt=D/part-0.parquet (+ its _files.json: corrupt files)
Writes  silver/interactions/dt=D/part-0.parquet        (schemas.interactions.SILVER)
        silver/interactions/dt=D/_validated.json       (what silver was made from; skip key)
        quarantine/interactions/dt=D/part-0.parquet    (QUARANTINE: bronze + reason; only
                                                        where rows were quarantined)
        gold/runs/stage=validate/dt=D/part-0.parquet   (one accounting row)
        gold/validation/batch=D1_D2/_gx_result.json    (Great Expectations, once per batch)

Each row's fate comes from `schemas.interactions.RULES`, compiled here into Polars
predicates that run on every row; the first failing rule names the reason. The rules run
over all rows of many partitions at once (the future-ts limit is a column: it depends on
each row's partition date), and duplicates are found within each partition. The same
RULES build the Great Expectations suite that then validates a deterministic sample of
the batch's silver rows (see docs/validation.md), so the rules are declared once and the
GX result is the evidence of what was checked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
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
    VERSION,
    Rule,
)
from tasks.config import Settings
from tasks.ingest.stage import BRONZE_TABLE, manifest_path, write_frame
from tasks.lake.dates import parse_date
from tasks.lake.storage import Lake

SILVER_TABLE = "silver/interactions"
QUARANTINE_TABLE = "quarantine/interactions"
RUNS_TABLE = "gold/runs"
GX_TABLE = "gold/validation"
GX_RESULT = "_gx_result.json"
STAMP = "_validated.json"
# Bronze rows validated together (a bigger partition goes alone): bounds memory.
_GROUP_ROWS = 2_000_000
_DAY = "_day"  # the partition date of each row, while many partitions are in one frame
# Source order decides which copy of a key is "first" (kept) and which are later.
_SOURCE_ORDER = ("source_file", "source_line")
# Silver order; after dedupe UNIQUE_KEY is unique per partition, so this is total.
_SILVER_ORDER = ("ts", "user_id", "item_id", "event_type")
# pandas type names GX observes for each Arrow type (after Polars' to_pandas).
_GX_TYPES = {pa.string(): "str", pa.float64(): "float64", pa.int64(): "int64"}
_GX_CACHE: dict[str, Any] = {}
_BRONZE_NAMES = tuple(BRONZE.names)


class PartitionQualityError(Exception):
    """A partition's quarantined share exceeds Settings.max_bad_share."""


@dataclass(frozen=True)
class ValidationResult:
    """Accounting of one partition: raw_rows == silver_rows + sum(quarantined) + duplicates.

    status is "ok" or "failed" (bad share over the threshold; `error` says why);
    skipped means bronze and settings were unchanged since the last validation, whose
    result this is.
    """

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
    status: str = "ok"
    error: str | None = None
    skipped: bool = False


def validate_date(lake: Lake, date: str | dt.date, settings: Settings) -> ValidationResult:
    """Split the bronze partition of `date` into silver, quarantine and duplicates.

    The single-date case of `validate_dates`, except that a failed partition raises
    `PartitionQualityError` (after quarantine and accounting are written).
    """
    result = validate_dates(lake, [date], settings)[0]
    if result.status == "failed":
        raise PartitionQualityError(result.error)
    return result


def validate_dates(
    lake: Lake, dates: Iterable[str | dt.date], settings: Settings
) -> list[ValidationResult]:
    """Validate many bronze partitions in one pass; one result per distinct date, in order.

    Quarantine (where non-empty) and the accounting row are always written. Silver is
    written only for a partition whose quarantined share is within
    `settings.max_bad_share`; a partition over it gets status "failed" (its previous
    silver, if any, is kept) and the others go on. A partition whose bronze manifest and
    validation settings match its `_validated.json` stamp is skipped. Great Expectations
    runs once, on a deterministic sample of the silver rows of all partitions validated.
    """
    days = sorted({parse_date(d) for d in dates})
    manifests = {d: lake.read_json(manifest_path(lake, d)) or {} for d in days}
    keys = {d: _fingerprint(manifests[d], settings) for d in days}
    results: dict[dt.date, ValidationResult] = {}
    todo = []
    for day in days:
        stamp = lake.read_json(_stamp_path(lake, day))
        if (
            stamp is not None
            and stamp.get("key") == keys[day]
            and lake.exists(SILVER_TABLE, dt=day)
        ):
            results[day] = _from_json(stamp["result"])
        else:
            todo.append(day)
    if todo:
        pending, samples = [], []
        for group in _groups(todo, manifests):
            done, sample = _split_group(lake, group, manifests, settings)
            pending += done
            samples.append(sample)
        results.update(_finish_batch(lake, pending, samples, keys, settings))
    return [results[d] for d in days]


@dataclass
class _Counts:
    day: dt.date
    raw: int
    silver: int
    quarantined: dict[str, int]
    duplicates: int
    corrupt: list[tuple[str, str]]
    paths: dict[str, str]
    failed: bool


def _split_group(
    lake: Lake, days: list[dt.date], manifests: dict[dt.date, dict], settings: Settings
) -> tuple[list[_Counts], pl.DataFrame]:
    """Split the bronze rows of these dates; write silver and quarantine per date.

    Returns the counts of each date and a GX sample of the silver rows written.
    """
    bronze = _read_bronze(lake, days)
    raw_n = dict(bronze.group_by(_DAY).len().collect().iter_rows())
    silver, quarantine, dups = _split(bronze, settings)
    silver_n = (
        _per_day(silver.filter("_keep")) if len(days) > 1 else {days[0]: silver["_keep"].sum()}
    )
    dup_n = _per_day(dups)
    reasons: dict[dt.date, dict[str, int]] = {}
    for day, reason, n in (
        quarantine.group_by(_DAY, "reason").len().sort(_DAY, "reason").iter_rows()
    ):
        reasons.setdefault(day, {})[reason] = n
    del bronze
    silver_parts, q_parts = _by_day(silver, days), _by_day(quarantine, days)
    out, written = [], []
    for day in days:
        counts = reasons.get(day, {})
        raw, n_bad = raw_n.get(day, 0), sum(counts.values())
        if raw != silver_n.get(day, 0) + n_bad + dup_n.get(day, 0):  # must hold exactly
            raise RuntimeError(
                f"row accounting broken for {day}: {raw} bronze != {silver_n.get(day, 0)} "
                f"silver + {n_bad} quarantined + {dup_n.get(day, 0)} duplicates"
            )
        failed = raw > 0 and n_bad / raw > settings.max_bad_share
        paths = {}
        if day in q_parts:
            paths["quarantine"] = write_frame(
                lake, QUARANTINE_TABLE, q_parts[day], QUARANTINE, dt=day
            )
        elif lake.exists(QUARANTINE_TABLE, dt=day):  # a rerun left nothing to quarantine
            lake.delete_partition(QUARANTINE_TABLE, dt=day)
        if not failed:
            part = silver_parts.get(day)
            pieces = [pl.DataFrame(SILVER.empty_table())] if part is None else _sorted_pieces(part)
            paths["silver"] = write_frame(lake, SILVER_TABLE, pieces, SILVER, dt=day)
            written.append(day)
        corrupt = [tuple(x) for x in manifests[day].get("corrupt_files", [])]
        out.append(
            _Counts(
                day, raw, silver_n.get(day, 0), counts, dup_n.get(day, 0), corrupt, paths, failed
            )
        )
    # Sample row numbers, then gather: no copy of the kept rows is made.
    rows = silver.select(pl.arg_where(pl.col("_keep") & pl.col(_DAY).is_in(written))).to_series()
    rows = rows.sample(n=min(rows.len(), settings.gx_sample_rows), seed=settings.seed).sort()
    sample = silver.select(pl.col(SILVER.names).gather(rows))
    return out, sample.cast({"source_file": pl.String})


def _finish_batch(
    lake: Lake,
    pending: list[_Counts],
    samples: list[pl.DataFrame],
    keys: dict[dt.date, str],
    settings: Settings,
) -> dict[dt.date, ValidationResult]:
    """Run GX once on the batch sample; write accounting rows and stamps per date."""
    ok_days = [c.day for c in pending if not c.failed]
    gx_success, gx_stats, gx_path = None, {}, None
    if ok_days:
        sample = pl.concat(samples)
        total = sum(c.silver for c in pending if not c.failed)
        if sample.height > settings.gx_sample_rows:
            sample = sample.sample(n=settings.gx_sample_rows, seed=settings.seed)
        gx = run_gx(sample, max(ok_days), settings, rows_total=total)
        gx["batch_dates"] = [d.isoformat() for d in ok_days]
        gx_success, gx_stats = gx["success"], gx["statistics"]
        batch = f"{min(ok_days).isoformat()}_{max(ok_days).isoformat()}"
        gx_path = lake.write_json(
            f"{lake.relpath(lake.path(GX_TABLE, batch=batch))}/{GX_RESULT}", gx
        )
    out = {}
    for c in pending:
        bad_share = sum(c.quarantined.values()) / c.raw if c.raw else 0.0
        paths = dict(c.paths)
        error = None
        if c.failed:
            top = sorted(c.quarantined.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            error = (
                f"{SILVER_TABLE}/dt={c.day}: {sum(c.quarantined.values())} of {c.raw} rows "
                f"quarantined ({bad_share:.1%} > max_bad_share {settings.max_bad_share:.1%}); "
                f"top reasons: {', '.join(f'{r}={n}' for r, n in top)}; "
                f"see {paths.get('quarantine')}"
            )
        elif gx_path is not None:
            paths["gx_result"] = gx_path
        result = ValidationResult(
            date=c.day,
            raw_rows=c.raw,
            silver_rows=c.silver,
            quarantined=c.quarantined,
            duplicates=c.duplicates,
            corrupt_files=c.corrupt,
            bad_share=bad_share,
            gx_success=None if c.failed else gx_success,
            gx_statistics={} if c.failed else gx_stats,
            paths=paths,
            status="failed" if c.failed else "ok",
            error=error,
        )
        paths["runs"] = lake.write_partition(
            RUNS_TABLE, _accounting_row(result), stage="validate", dt=c.day
        )
        if not c.failed:
            lake.write_json(
                _stamp_path(lake, c.day), {"key": keys[c.day], "result": _to_json(result)}
            )
        out[c.day] = result
    return out


# ---- reading ----------------------------------------------------------------------------
def _groups(days: list[dt.date], manifests: dict[dt.date, dict]) -> list[list[dt.date]]:
    """Consecutive dates of about _GROUP_ROWS bronze rows (a bigger date goes alone)."""
    groups: list[list[dt.date]] = [[]]
    size = 0
    for day in days:
        rows = int(manifests[day].get("rows", 0))
        if groups[-1] and size + rows > _GROUP_ROWS:
            groups.append([])
            size = 0
        groups[-1].append(day)
        size += rows
    return groups


def _read_bronze(lake: Lake, days: list[dt.date]) -> pl.LazyFrame:
    """The bronze rows of these dates as one lazy frame, with their date in `_day`.

    Lazy, so each pass decodes only the columns it needs; the scan of the few suspect
    rows decodes the wide columns (ts_raw, extra) for those rows only (prefiltered).
    """
    if lake.is_local:
        files = {lake.partition_file(BRONZE_TABLE, dt=d): d for d in days}
        frame = pl.scan_parquet(list(files), include_file_paths="_path", parallel="prefiltered")
        day = pl.col("_path").replace_strict(files, return_dtype=pl.Date)
        return frame.with_columns(day.alias(_DAY)).drop("_path")
    parts = [
        lake.read_partition(BRONZE_TABLE, dt=d).with_columns(pl.lit(d).alias(_DAY)) for d in days
    ]
    return pl.concat(parts).lazy()


def _by_day(frame: pl.DataFrame, days: list[dt.date]) -> dict[dt.date, pl.DataFrame]:
    """Rows per partition date (one date: the frame itself, no copy; `_day` is kept, the
    writers select the table's columns)."""
    if len(days) == 1:
        return {days[0]: frame} if frame.height else {}
    parts = frame.partition_by(_DAY, as_dict=True)
    return {key[0]: part for key, part in parts.items()}


def _per_day(frame: pl.DataFrame) -> dict[dt.date, int]:
    return dict(frame.group_by(_DAY).len().iter_rows())


# ---- row-level rules --------------------------------------------------------------------
def compile_rule(rule: Rule, day: dt.date | pl.Expr, settings: Settings) -> pl.Expr:
    """A Polars predicate that is True where a row FAILS `rule` (unique_key excluded).

    `day` is the partition date, or an expression giving each row's partition date.
    """
    col = pl.col(rule.column)
    if rule.kind == "parse_ok":  # parse_error carries the reason code of the failed read
        return col.is_not_null() & (col == rule.reason)
    if rule.kind == "not_empty":
        return col.is_null() | (col.str.strip_chars() == "")
    if rule.kind == "parsed":
        raw = pl.col(f"{rule.column}_raw")
        return raw.is_not_null() & (raw.str.strip_chars() != "") & col.is_null()
    if rule.kind == "not_future":
        if isinstance(day, dt.date):
            return col.is_not_null() & (col > future_limit(day, settings))
        tolerance = dt.timedelta(days=1, hours=settings.future_tolerance_hours)
        limit = day.cast(pl.Datetime("us", "UTC")) + tolerance
        return col.is_not_null() & (col > limit)
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
    frame = bronze.lazy().with_columns(pl.lit(day).alias(_DAY))
    silver, quarantine, dups = _split(frame, settings)
    return pl.concat(_sorted_pieces(silver)), quarantine.drop(_DAY), dups.height


def _sorted_pieces(silver: pl.DataFrame, rows: int = 500_000) -> Iterator[pl.DataFrame]:
    """One partition's kept rows (`_keep`) in _SILVER_ORDER, SILVER columns, as consecutive
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


def _suspect(settings: Settings) -> pl.Expr:
    """True for every row that may fail a row rule; cheap (no string scans but one
    anchored regex). Rows it leaves out pass every row rule, so the exact rules (string
    stripping per rule) run on the suspects only."""
    blank = [
        pl.col(c).is_null() | pl.col(c).str.contains(r"^(\s|$)") for c in ("user_id", "item_id")
    ]
    ts, value = pl.col("ts"), pl.col("value")
    limit = pl.col(_DAY).cast(pl.Datetime("us", "UTC")) + dt.timedelta(
        days=1, hours=settings.future_tolerance_hours
    )
    return (
        pl.col("parse_error").is_not_null()
        | blank[0]
        | blank[1]
        | ts.is_null()
        | (ts > limit)
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
        predicate = compile_rule(rule, pl.col(_DAY), settings)
        reason = pl.when(predicate).then(pl.lit(rule.reason)).otherwise(reason)
    return reason


def _split(
    bronze: pl.LazyFrame, settings: Settings
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """`split_rows` over rows of many partitions (`_day`): silver, quarantine, duplicates.

    Silver is every row's SILVER columns + `_day` + `_keep` (source_file categorical),
    unfiltered and unsorted: `_sorted_pieces` cuts, filters and sorts it piece by piece.
    Quarantine has QUARANTINE + `_day`; duplicates only `_day` (one row per dropped copy).
    The wide raw columns (ts_raw, extra, ...) are read for the suspect rows only.
    """
    key_rule = next(r for r in RULES if r.kind == "unique_key")
    key = [*UNIQUE_KEY, _DAY]
    cols = [*SILVER.names, _DAY]
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
    conflicts = dup_keys.filter(pl.col("reason").is_not_null()).drop("_flag", "_dup")
    if conflicts.height:
        conflicts = conflicts.join(_fetch(bronze, conflicts["_row"], wide), on="_row")
    expectation = {r.reason: r.expectation for r in RULES}
    quarantine = (
        pl.concat([sus.filter(pl.col("reason").is_not_null()), conflicts], how="diagonal_relaxed")
        .with_columns(expectation=pl.col("reason").replace_strict(expectation))
        .sort(_DAY, *_SOURCE_ORDER)
        .select(*QUARANTINE.names, _DAY)
    )
    return silver, quarantine, dup_keys.filter(pl.col("_dup")).select(_DAY)


def _fetch(bronze: pl.LazyFrame, rows: pl.Series, columns: list[str]) -> pl.DataFrame:
    """Some columns of the bronze rows numbered `rows` (streamed: bounded memory)."""
    wanted = pl.col("_row").is_in(rows.implode())
    frame = bronze.with_row_index("_row").select("_row", *columns).filter(wanted)
    return frame.collect(engine="streaming")


# ---- Great Expectations -----------------------------------------------------------------
def build_suite(schema: pa.Schema, day: dt.date, settings: Settings) -> Any:
    """The GX suite stating RULES (plus column presence and types) for frames of `schema`.

    A rule is stated on its own column or, when the frame has only the typed column
    (silver has `ts`, not `ts_raw`), on that; a rule whose column the frame lacks is
    skipped, so a suite never names a column outside `schema`. `day` is the latest
    partition date of the rows validated (the future-ts bound).
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
    batch = _gx()["batch"].get_batch(batch_parameters={"dataframe": sample.to_pandas()})
    result = batch.validate(suite, result_format="SUMMARY").to_json_dict()
    result["rows_validated"] = sample.height
    result["rows_total"] = frame.height if rows_total is None else rows_total
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


# ---- accounting and stamps --------------------------------------------------------------
_RUNS_SCHEMA = pa.schema(
    [
        ("date", pa.date32()),
        ("status", pa.string()),
        ("raw_rows", pa.int64()),
        ("silver_rows", pa.int64()),
        ("quarantined_rows", pa.int64()),
        ("duplicates", pa.int64()),
        ("bad_share", pa.float64()),
        ("quarantined", pa.string()),
        ("corrupt_files", pa.string()),
        ("gx_success", pa.bool_()),
        ("gx_statistics", pa.string()),
        ("gx_result", pa.string()),
        ("validated_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _accounting_row(r: ValidationResult) -> pa.Table:
    """The partition's row of gold/runs/stage=validate (built in Arrow: thousands of
    partitions make a DataFrame's construction cost count)."""
    row = {
        "date": r.date,
        "status": r.status,
        "raw_rows": r.raw_rows,
        "silver_rows": r.silver_rows,
        "quarantined_rows": sum(r.quarantined.values()),
        "duplicates": r.duplicates,
        "bad_share": r.bad_share,
        "quarantined": json.dumps(r.quarantined, sort_keys=True),
        "corrupt_files": json.dumps(r.corrupt_files),
        "gx_success": r.gx_success,
        "gx_statistics": json.dumps(r.gx_statistics, sort_keys=True),
        "gx_result": r.paths.get("gx_result"),
        "validated_at": dt.datetime.now(dt.UTC),
    }
    return pa.Table.from_pylist([row], schema=_RUNS_SCHEMA)


def _stamp_path(lake: Lake, day: dt.date) -> str:
    return f"{lake.relpath(lake.path(SILVER_TABLE, dt=day))}/{STAMP}"


def _fingerprint(manifest: dict, settings: Settings) -> str:
    """What a partition's validation depends on: its bronze (manifest) and the rules."""
    rules = settings.model_dump(
        include={"event_types", "value_min", "value_max", "future_tolerance_hours", "max_bad_share"}
    )
    text = json.dumps([VERSION, manifest, rules], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _to_json(r: ValidationResult) -> dict[str, Any]:
    return {**asdict(r), "date": r.date.isoformat()}


def _from_json(d: dict[str, Any]) -> ValidationResult:
    return ValidationResult(
        **{
            **d,
            "date": dt.date.fromisoformat(d["date"]),
            "corrupt_files": [tuple(x) for x in d["corrupt_files"]],
            "skipped": True,
        }
    )
