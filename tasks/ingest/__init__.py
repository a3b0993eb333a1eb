"""Ingest: the landing files of many dates -> one typed bronze partition per date.

Reads   raw/interactions/dt=D/*.{csv,jsonl,ndjson,json,parquet}[.gz]  (schemas.tables
        RAW_INTERACTIONS, as delivered; only exact dt=YYYY-MM-DD folders)
Writes  bronze/interactions/dt=D/part-0.parquet  (BRONZE: schemas.interactions.BRONZE)
        bronze/interactions/dt=D/_stamp.json     (tasks.lake.stamps: fingerprint of the
        file hashes and read settings; result {rows, corrupt_files, unknown_columns,
        files, listing})

Every physical line of a text file becomes exactly one bronze row, so `source_line` is the
line an operator sees in an editor (header = line 1). A line that cannot be parsed is kept
with `parse_error` set and its text in `extra` (`{"_raw_line": ...}`), so validation
quarantines it visibly. Blank lines are not events and are skipped. A file that cannot be
read completely (truncated gzip, broken Parquet, a decompression bomb, an empty file)
contributes no rows and is reported with its reason. Files are streamed with caps
(Settings.max_file_bytes, max_compression_ratio): memory follows a piece of lines, never
a whole file. Only declared columns reach bronze unless Settings.keep_unknown_columns.

Modules: `stage` (dates, listing, skip, chunks, writing), `readers` (files -> typed rows,
Parquet), `text` (CSV / JSONL lines), `landing` (caps, streaming gzip, format, line
blocks), `typed` (ts, value).
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
