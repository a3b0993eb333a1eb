"""The validate stage: many bronze partitions -> silver + quarantine + accounting, one pass.

Dates are read in groups of about `GROUP_ROWS` bronze rows (a bigger date goes alone),
split by tasks.validate.rules, written per date through the Lake, then accounted for;
Great Expectations runs once per call, on a sample of the silver rows written. A date is
skipped when its silver stamp was computed from the same bronze stamp, rules and schema.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import replace

import polars as pl

from schemas import tables
from schemas.interactions import SILVER, VERSION
from tasks.config import Settings
from tasks.lake.stamps import fingerprint, read_stamp, unchanged, write_stamp
from tasks.lake.storage import Lake
from tasks.validate.accounting import (
    ValidationResult,
    accounting_row,
    result_from_json,
    result_to_json,
)
from tasks.validate.gx import run_gx
from tasks.validate.rules import DAY, sorted_pieces, split

GX_RESULT = "_gx_result.json"
# Bronze rows validated together (a bigger partition goes alone): bounds memory.
GROUP_ROWS = 2_000_000
# The settings a partition's fate depends on (part of its silver fingerprint).
_RULE_SETTINGS = {
    "event_types", "value_min", "value_max", "future_tolerance_hours", "max_bad_share",
    "min_ts", "max_id_length",
}  # fmt: skip


class PartitionQualityError(Exception):
    """A partition's quarantined share exceeds Settings.max_bad_share."""


def validate_date(lake: Lake, day: dt.date, settings: Settings) -> ValidationResult:
    """Split the bronze partition of `day` into silver, quarantine and duplicates.

    The single-date case of `validate_dates`, except that a failed partition raises
    `PartitionQualityError` (after quarantine and accounting are written).
    """
    result = validate_dates(lake, [day], settings)[0]
    if result.status == "failed":
        raise PartitionQualityError(result.error)
    return result


def validate_dates(
    lake: Lake, days: Iterable[dt.date], settings: Settings
) -> list[ValidationResult]:
    """Validate many bronze partitions in one pass; one result per distinct date, in order.

    Quarantine (where non-empty) and the accounting row are always written. Silver is
    written only for a partition whose quarantined share is within
    `settings.max_bad_share`; a partition over it gets status "failed" (its previous
    silver, if any, is kept) and the others go on. A written partition with an unreadable
    landing file, or in a batch whose Great Expectations check failed, gets status
    "warning" (its `warnings` say why); a clean one "ok". A partition whose bronze stamp and
    validation settings match its silver stamp is skipped. Great Expectations runs once,
    on a deterministic sample of the silver rows of all partitions validated.
    """
    started_at = dt.datetime.now(dt.UTC)
    days = sorted(set(days))
    bronze = {d: read_stamp(lake, tables.BRONZE, dt=d) or {} for d in days}
    keys = {d: _fingerprint(bronze[d].get("fingerprint"), settings) for d in days}
    results: dict[dt.date, ValidationResult] = {}
    todo = []
    for day in days:
        stamped = unchanged(lake, tables.SILVER, keys[day], dt=day)
        if stamped is not None:
            results[day] = result_from_json(stamped)
        else:
            todo.append(day)
    if todo:
        ingested = {d: bronze[d].get("result") or {} for d in todo}
        pending, samples = [], []
        for group in _groups(todo, ingested):
            done, sample = _split_group(lake, group, ingested, settings)
            pending += done
            samples.append(sample)
        for result in _finish_batch(lake, pending, samples, settings):
            row = accounting_row(result, started_at)
            runs = lake.write_partition(tables.RUNS, row, stage="validate", dt=result.date)
            result = replace(result, paths={**result.paths, "runs": runs})
            if result.status != "failed":  # a failed date has no stamp: always redone
                write_stamp(
                    lake, tables.SILVER, keys[result.date], result_to_json(result), dt=result.date
                )
            results[result.date] = result
    return [results[d] for d in days]


def _fingerprint(bronze: str | None, settings: Settings) -> str:
    """What a partition's validation depends on: its bronze (the bronze stamp's
    fingerprint; None for bronze written without one), the rules and the schema."""
    return fingerprint(bronze, settings.model_dump(include=_RULE_SETTINGS), VERSION)


def _split_group(
    lake: Lake, days: list[dt.date], ingested: dict[dt.date, dict], settings: Settings
) -> tuple[list[ValidationResult], pl.DataFrame]:
    """Split the bronze rows of these dates; write silver and quarantine per date.

    Returns each date's counts (as a result without GX fields yet) and a GX sample of the
    silver rows written.
    """
    bronze = _read_bronze(lake, days)
    raw_n = dict(bronze.group_by(DAY).len().collect().iter_rows())
    silver, quarantine, dups = split(bronze, settings)
    silver_n = (
        _per_day(silver.filter("_keep")) if len(days) > 1 else {days[0]: silver["_keep"].sum()}
    )
    dup_n = _per_day(dups)
    reasons: dict[dt.date, dict[str, int]] = {}
    for day, reason, n in quarantine.group_by(DAY, "reason").len().sort(DAY, "reason").iter_rows():
        reasons.setdefault(day, {})[reason] = n
    del bronze
    silver_parts, q_parts = _by_day(silver, days), _by_day(quarantine, days)
    out, written = [], []
    for day in days:
        counts = reasons.get(day, {})
        raw, n_bad = raw_n.get(day, 0), sum(counts.values())
        n_silver, n_dup = silver_n.get(day, 0), dup_n.get(day, 0)
        if raw != n_silver + n_bad + n_dup:  # must hold exactly
            raise RuntimeError(
                f"row accounting broken for {day}: {raw} bronze != {n_silver} silver + "
                f"{n_bad} quarantined + {n_dup} duplicates"
            )
        failed = raw > 0 and n_bad / raw > settings.max_bad_share
        corrupt = [tuple(x) for x in ingested[day].get("corrupt_files", [])]
        warnings = [f"unreadable file {name}: {reason}" for name, reason in corrupt]
        paths = {}
        if day in q_parts:
            paths["quarantine"] = lake.write_partition(tables.QUARANTINE, q_parts[day], dt=day)
        elif lake.exists(tables.QUARANTINE, dt=day):  # a rerun left nothing to quarantine
            lake.delete_partition(tables.QUARANTINE, dt=day)
        if not failed:
            part = silver_parts.get(day)
            pieces = () if part is None else sorted_pieces(part)  # none: an empty partition
            paths["silver"] = lake.write_partition(tables.SILVER, pieces, dt=day)
            written.append(day)
        out.append(
            ValidationResult(
                date=day,
                raw_rows=raw,
                silver_rows=n_silver,
                quarantined=counts,
                duplicates=n_dup,
                corrupt_files=corrupt,
                bad_share=n_bad / raw if raw else 0.0,
                gx_success=None,
                gx_statistics={},
                paths=paths,
                status="failed" if failed else "warning" if warnings else "ok",
                warnings=warnings,
            )
        )
    # Sample row numbers, then gather: no copy of the kept rows is made.
    rows = silver.select(pl.arg_where(pl.col("_keep") & pl.col(DAY).is_in(written))).to_series()
    rows = rows.sample(n=min(rows.len(), settings.gx_sample_rows), seed=settings.seed).sort()
    # With its date: the key is unique per partition, the same event may land on two dates.
    sample = silver.select(pl.col(SILVER.names).gather(rows), pl.col(DAY).gather(rows).alias("dt"))
    return out, sample.cast({"source_file": pl.String})


def _finish_batch(
    lake: Lake, pending: list[ValidationResult], samples: list[pl.DataFrame], settings: Settings
) -> list[ValidationResult]:
    """Run GX once on the batch sample; each result completed with GX or its error."""
    ok = [r for r in pending if r.status != "failed"]
    gx_success, gx_stats, gx_path = None, {}, None
    if ok:
        ok_days = [r.date for r in ok]
        sample = pl.concat(samples)
        if sample.height > settings.gx_sample_rows:
            sample = sample.sample(n=settings.gx_sample_rows, seed=settings.seed)
        gx = run_gx(sample, max(ok_days), settings, rows_total=sum(r.silver_rows for r in ok))
        gx["batch_dates"] = [d.isoformat() for d in ok_days]
        gx_success, gx_stats = gx["success"], gx["statistics"]
        batch = f"{min(ok_days).isoformat()}_{max(ok_days).isoformat()}"
        gx_path = lake.write_json(
            f"{lake.relpath(lake.path(tables.VALIDATION, batch=batch))}/{GX_RESULT}", gx
        )
    out = []
    for r in pending:
        if r.status == "failed":
            out.append(replace(r, error=_failure(r, settings)))
        else:
            paths = {**r.paths, "gx_result": gx_path}
            r = replace(r, gx_success=gx_success, gx_statistics=gx_stats, paths=paths)
            if gx_success is False:  # the contract failed on silver: a bug to look at
                bad = f"{gx_stats.get('unsuccessful_expectations')} of "
                bad += f"{gx_stats.get('evaluated_expectations')} expectations"
                note = f"Great Expectations failed {bad} on the batch sample (see {gx_path})"
                r = replace(r, status="warning", warnings=[*r.warnings, note])
            out.append(r)
    return out


def _failure(r: ValidationResult, settings: Settings) -> str:
    """Why a partition failed: counts, share, top reasons, where its quarantine is."""
    n_bad = sum(r.quarantined.values())
    top = sorted(r.quarantined.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return (
        f"{tables.SILVER}/dt={r.date}: {n_bad} of {r.raw_rows} rows "
        f"quarantined ({r.bad_share:.1%} > max_bad_share {settings.max_bad_share:.1%}); "
        f"top reasons: {', '.join(f'{k}={n}' for k, n in top)}; "
        f"see {r.paths.get('quarantine')}"
    )


# ---- reading ----------------------------------------------------------------------------
def _groups(days: list[dt.date], ingested: dict[dt.date, dict]) -> list[list[dt.date]]:
    """Consecutive dates of about GROUP_ROWS bronze rows (a bigger date goes alone)."""
    groups: list[list[dt.date]] = [[]]
    size = 0
    for day in days:
        rows = int(ingested[day].get("rows", 0))
        if groups[-1] and size + rows > GROUP_ROWS:
            groups.append([])
            size = 0
        groups[-1].append(day)
        size += rows
    return groups


def _read_bronze(lake: Lake, days: list[dt.date]) -> pl.LazyFrame:
    """The bronze rows of these dates as one lazy frame, with their date in `DAY`.

    Lazy, so each pass decodes only the columns it needs; the scan of the few suspect
    rows decodes the wide columns (ts_raw, extra) for those rows only (prefiltered).
    """
    return lake.scan_lazy(tables.BRONZE, days).rename({"dt": DAY})


def _by_day(frame: pl.DataFrame, days: list[dt.date]) -> dict[dt.date, pl.DataFrame]:
    """Rows per partition date (one date: the frame itself, no copy; `DAY` is kept, the
    Lake's writer selects the table's columns)."""
    if len(days) == 1:
        return {days[0]: frame} if frame.height else {}
    parts = frame.partition_by(DAY, as_dict=True)
    return {key[0]: part for key, part in parts.items()}


def _per_day(frame: pl.DataFrame) -> dict[dt.date, int]:
    return dict(frame.group_by(DAY).len().iter_rows())
