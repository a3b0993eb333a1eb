"""gold/runs: one schema for every run record, partitioned by (stage, dt).

Grain: one row per (stage, date). `stage=validate` rows are a raw partition's row
accounting (raw = silver + quarantined + duplicates); `stage=nightly` rows are one night's
record (what was published, by which model, why, and how long each stage took). Columns a
stage does not fill are null.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
# The stages of a night whose wall time is recorded as `seconds_<stage>`.
NIGHTLY_STAGES = ("ingest_validate", "episodes", "train", "evaluate", "score", "publish")

RUNS = pa.schema(
    [
        ("run_date", pa.date32()),  # the partition date (a raw partition or a night)
        ("status", pa.string()),  # validate: ok | warning | failed; nightly: published | ...
        ("started_at", TS),
        ("finished_at", TS),
        ("duration_seconds", pa.float64()),
        ("error", pa.string()),
        # -- stage=validate: the partition's accounting
        ("raw_rows", pa.int64()),
        ("silver_rows", pa.int64()),
        ("quarantined_rows", pa.int64()),
        ("duplicates", pa.int64()),
        ("bad_share", pa.float64()),
        ("quarantined", pa.string()),  # JSON {reason: rows}
        ("corrupt_files", pa.string()),  # JSON [[file, reason], ...]
        ("gx_success", pa.bool_()),
        ("gx_statistics", pa.string()),  # JSON
        ("gx_result", pa.string()),  # lake path of the GX result of the partition's batch
        # -- stage=nightly: the night's record
        ("champion_model", pa.string()),  # best model on the holdout
        ("published_model", pa.string()),  # the model whose table was published
        ("published_from_candidate", pa.bool_()),  # False: the gate fell back to a baseline
        ("gate_reason", pa.string()),
        ("model_version", pa.string()),
        ("top_k", pa.int32()),
        ("users_scored", pa.int64()),
        ("rows_published", pa.int64()),
        *[(f"seconds_{stage}", pa.float64()) for stage in NIGHTLY_STAGES],
    ]
)


def runs_row(record: dict) -> pa.Table:
    """A one-row gold/runs table from a record of RUNS columns (missing columns are null;
    an unknown key raises ValueError, so a typo never silently drops a field)."""
    unknown = sorted(set(record) - set(RUNS.names))
    if unknown:
        raise ValueError(f"unknown gold/runs columns {unknown}; known: {RUNS.names}")
    return pa.Table.from_pylist([{name: record.get(name) for name in RUNS.names}], schema=RUNS)
