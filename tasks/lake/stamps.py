"""One "skip if unchanged" mechanism: a stamp beside a partition says what it was computed
from (a fingerprint of its inputs) and what the computation reported.

Ingest stamps each bronze partition with the hashes of its landing files, validation each
silver partition with its bronze stamp and the rules, the nightly each night's model with
every input it read. A stage whose fingerprint matches the stamp, with its partition in
place, skips the work and returns the recorded result. The stamp is written after the
partition, so a crash in between only costs a recomputation.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas.tables import Table
from tasks.lake.storage import Lake

STAMP_FILE = "_stamp.json"


def fingerprint(*inputs: Any) -> str:
    """SHA-256 of JSON-serialisable inputs (dates and paths as text, keys sorted)."""
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def stamp_path(lake: Lake, table: Table | str, **partition: Any) -> str:
    """Lake-relative path of a partition's stamp."""
    return f"{lake.relpath(lake.path(table, **partition))}/{STAMP_FILE}"


def write_stamp(
    lake: Lake, table: Table | str, inputs: str, result: dict[str, Any], **partition: Any
) -> str:
    """Record that the partition was computed from `inputs` (a fingerprint) with `result`."""
    return lake.write_json(
        stamp_path(lake, table, **partition), {"fingerprint": inputs, "result": result}
    )


def read_stamp(lake: Lake, table: Table | str, **partition: Any) -> dict[str, Any] | None:
    """The stamp of a partition ({fingerprint, result}), or None."""
    return lake.read_json(stamp_path(lake, table, **partition))


def unchanged(
    lake: Lake, table: Table | str, inputs: str, check_data: bool = True, **partition: Any
) -> dict[str, Any] | None:
    """The recorded result when the partition was computed from these inputs (and, with
    `check_data`, its data file is still in place); None when it must be recomputed."""
    stamp = read_stamp(lake, table, **partition)
    if not stamp or stamp.get("fingerprint") != inputs:
        return None
    if check_data and not lake.exists(table, **partition):
        return None
    return stamp.get("result") or {}
