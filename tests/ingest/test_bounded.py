"""Bounded ingest (issue 12, finding 1): a small upload that expands hugely is rejected with
its reason while the rest of its date goes on, files over max_file_bytes are refused, a
gzip that fails after some of its rows were read contributes none, and the memory an
ingest of a gzip bomb adds is measured in a child process (its own peak RSS)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from tasks.config import Settings
from tasks.ingest import ingest_date
from tasks.lake.storage import Lake
from tasks.validate import validate_date
from tests.ingest.samples import CSV, DAY, RAW, bronze, land

REPO = Path(__file__).resolve().parents[2]
HEADER = b"user_id,item_id,ts\n"
BOMB_LINES = 20 << 20  # 20 MiB of newlines: ~20 KiB of gzip


def test_a_gzip_bomb_is_rejected_with_its_reason_and_the_date_goes_on(lake: Lake) -> None:
    land(lake, "a.csv", CSV)
    bomb = gzip.compress(HEADER + b"\n" * BOMB_LINES, compresslevel=9)
    assert len(bomb) < 25_000
    land(lake, "bomb.csv.gz", bomb)
    result = ingest_date(lake, DAY, Settings())
    # Stopped at the first 1 MiB step past ratio_check_min_bytes (8 MiB) and 200x.
    reason = (
        "compression_bomb: compression ratio exceeds max_compression_ratio (200x): "
        f"9,437,184 bytes from {len(bomb):,} and counting"
    )
    assert result.corrupt_files == [(f"{RAW}/bomb.csv.gz", reason)]
    assert result.rows == 3 == bronze(lake).height
    v = validate_date(lake, DAY, Settings(max_bad_share=0.5))
    assert (v.raw_rows, v.silver_rows, v.quarantined, v.duplicates) == (
        3, 2, {"unparseable_value": 1}, 0
    )  # fmt: skip
    assert v.status == "warning"
    assert v.warnings == [f"unreadable file {RAW}/bomb.csv.gz: {reason}"]


def test_files_over_max_file_bytes_are_refused(lake: Lake) -> None:
    body = HEADER + b"".join(b"u%d,i%d,1704103200\n" % (k, k) for k in range(120_000))
    assert len(body) > 2 << 20
    land(lake, "big.csv.gz", gzip.compress(body))  # ~8x: no bomb, only too big
    land(lake, "big.csv", body)
    land(lake, "a.csv", CSV)
    result = ingest_date(lake, DAY, Settings(max_file_bytes=1 << 20))
    assert result.corrupt_files == [
        (f"{RAW}/big.csv", "file_too_large: size exceeds max_file_bytes (1,048,576 bytes)"),
        (
            f"{RAW}/big.csv.gz",
            "file_too_large: decompressed size exceeds max_file_bytes (1,048,576 bytes)",
        ),
    ]
    assert result.rows == 3
    assert bronze(lake)["source_file"].unique().to_list() == [f"{RAW}/a.csv"]


def test_a_gzip_cut_after_rows_were_written_contributes_none(lake: Lake) -> None:
    # 600K lines: the first 250K-line block is parsed and written before the cut is seen,
    # so the date is read again without the file.
    body = HEADER + b"".join(b"u%d,i%d,1704103200\n" % (k, k % 97) for k in range(600_000))
    cut = gzip.compress(body, compresslevel=1)[:-1000]
    land(lake, "a.csv", CSV)
    land(lake, "cut.csv.gz", cut)
    result = ingest_date(lake, DAY, Settings())
    assert result.corrupt_files == [(f"{RAW}/cut.csv.gz", "truncated_gzip")]
    assert result.rows == 3
    assert bronze(lake)["source_file"].unique().to_list() == [f"{RAW}/a.csv"]


_CHILD = """
import datetime as dt, gzip, json, resource, sys
from tasks.config import Settings
from tasks.ingest import ingest_date
from tasks.lake.storage import Lake

lake, settings = Lake(sys.argv[1]), Settings(max_compression_ratio=float(sys.argv[2]))
csv = b"user_id,item_id,ts\\nu1,i1,2024-01-01T10:00:00Z\\n"
warm, day = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
lake.write_bytes(f"raw/interactions/dt={warm}/a.csv.gz", gzip.compress(csv))
lake.write_bytes(f"raw/interactions/dt={day}/a.csv", csv)
lake.write_bytes(f"raw/interactions/dt={day}/bomb.csv.gz",
                 gzip.compress(csv + b"\\n" * int(sys.argv[3]), compresslevel=9))
ingest_date(lake, warm, settings)  # imports, pools and caches warmed up: not measured
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = ingest_date(lake, day, settings)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"delta_mib": (after - before) / 1024, "rows": result.rows,
                  "corrupt": result.corrupt_files}))
"""


def _peak_rss_delta(tmp_path: Path, ratio: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "lake"), str(ratio), str(BOMB_LINES)],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_memory_stays_bounded_on_a_bomb(tmp_path: Path) -> None:
    # Rejected by the ratio cap: a few MB decompressed, then stopped.
    rejected = _peak_rss_delta(tmp_path / "a", 200.0)
    assert rejected["rows"] == 1 and len(rejected["corrupt"]) == 1  # a.csv's row only
    assert rejected["delta_mib"] < 100, rejected
    # Cap off: all 20 MiB of (blank) lines are read, block by block; before this issue,
    # decompressing whole and splitting whole added ~484 MiB here.
    streamed = _peak_rss_delta(tmp_path / "b", 1e9)
    assert (streamed["rows"], streamed["corrupt"]) == (2, [])  # the bomb's row too
    assert streamed["delta_mib"] < 100, streamed
