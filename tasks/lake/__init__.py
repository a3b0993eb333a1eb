"""The lake layer: storage, table paths, dates, stamps. Every other stage stands on it.

Reads and writes any table declared in `schemas.tables`, under a local folder or fsspec
URL. `Lake` is the only code that reads or writes Parquet; `stamps` is the one "skip if
unchanged" mechanism; `dates` parses run dates once, at the edge; `roots` checks a
`--storage` value; `durable` makes local writes survive a crash (fsync, then rename);
`lock` keeps one writer per lake (a lease file under `_locks/`).
"""

from tasks.lake.dates import date_range, end_of_day, parse_date
from tasks.lake.storage import Lake, lake_from

__all__ = ["Lake", "date_range", "end_of_day", "lake_from", "parse_date"]
