"""Validate: bronze partitions -> silver + quarantine, with row accounting and GX evidence.

Reads   bronze/interactions/dt=D/part-0.parquet   (BRONZE)
        bronze/interactions/dt=D/_stamp.json      (ingest's stamp: fingerprint, rows,
                                                   corrupt files)
Writes  silver/interactions/dt=D/part-0.parquet   (SILVER: schemas.interactions.SILVER)
        silver/interactions/dt=D/_stamp.json      (tasks.lake.stamps: fingerprint of the
                                                   bronze stamp + rules; the result)
        quarantine/interactions/dt=D/part-0.parquet  (QUARANTINE: bronze + reason; only
                                                      where rows were quarantined)
        gold/runs/stage=validate/dt=D/part-0.parquet (RUNS: one accounting row)
        gold/validation/batch=D1_D2/_gx_result.json  (Great Expectations, once per batch)

Each row's fate comes from `schemas.interactions.RULES`, compiled into Polars predicates
that run on every row (`rules`); the first failing rule names the reason. The same RULES
build the Great Expectations suite (`gx`) that then validates a deterministic sample of
the batch's silver rows (see docs/validation.md), so the rules are declared once and the
GX result is the evidence of what was checked. A date's status is "ok", "warning" (written,
with an unreadable landing file or a failed GX check: docs/operations.md, "Bad input
policy") or "failed" (bad share over the threshold). `accounting`: the result and its
gold/runs row; `stage`: dates, groups, writes and the skip.
"""

from tasks.validate.accounting import ValidationResult
from tasks.validate.gx import build_suite, load_gx, run_gx
from tasks.validate.rules import compile_rule, future_limit, split_rows
from tasks.validate.stage import PartitionQualityError, validate_date, validate_dates

__all__ = [
    "PartitionQualityError",
    "ValidationResult",
    "build_suite",
    "compile_rule",
    "future_limit",
    "load_gx",
    "run_gx",
    "split_rows",
    "validate_date",
    "validate_dates",
]
