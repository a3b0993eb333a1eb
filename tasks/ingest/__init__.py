"""Ingest: the landing files of many dates -> one typed bronze partition per date.

Reads   raw/interactions/dt=D/*.{csv,jsonl,ndjson,json,parquet}[.gz]  (schemas.tables
        RAW_INTERACTIONS, as delivered)
Writes  bronze/interactions/dt=D/part-0.parquet  (BRONZE: schemas.interactions.BRONZE)
        bronze/interactions/dt=D/_stamp.json     (tasks.lake.stamps: fingerprint of the
        file hashes; result {rows, corrupt_files, unknown_columns, files})

Every physical line of a text file becomes exactly one bronze row, so `source_line` is the
line an operator sees in an editor (header = line 1). A line that cannot be parsed is kept
with `parse_error` set and its text in `extra` (`{"_raw_line": ...}`), so validation
quarantines it visibly. Blank lines are not events and are skipped. A file that cannot be
read completely (truncated gzip, broken Parquet) contributes no rows and is reported.

Modules: `stage` (dates, chunks, skip, writing), `readers` (files -> typed rows, Parquet),
`text` (CSV / JSONL lines), `landing` (gzip, format, line splitting), `typed` (ts, value).
"""

from tasks.ingest.landing import UnreadableFile
from tasks.ingest.stage import (
    MANIFEST_VERSION,
    IngestResult,
    ingest_date,
    ingest_dates,
    plan_chunks,
)

__all__ = [
    "MANIFEST_VERSION",
    "IngestResult",
    "UnreadableFile",
    "ingest_date",
    "ingest_dates",
    "plan_chunks",
]
