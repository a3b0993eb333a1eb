"""Erasure under the names that are not partitions (issue 12): `dt=junk`, `dt=20240115`, a
loose file. No stage reads them, yet they hold landed events (renamed to their date, they
are ingested next) or hand-made copies of a table; `metarec forget` erases the user there
too, keeps every other line as it was, and names the files it could not check."""

from __future__ import annotations

import datetime as dt
import gzip
import io

import polars as pl
import pytest

from flows.cli import main
from schemas.tables import BRONZE, QUARANTINE, RAW_INTERACTIONS, RECOMMENDATIONS, SILVER
from tasks.config import Settings
from tasks.ingest.stage import ingest_dates
from tasks.lake.parquet import parquet_bytes
from tasks.lake.pseudonyms import KEY_ENV
from tasks.lake.storage import Lake
from tasks.serve.erase import forget
from tasks.serve.erase_files import mentions
from tasks.validate.stage import validate_dates

DAY = dt.date(2024, 5, 1)
GOOD = b"user_id,item_id,ts\nalice,i1,2024-05-01T10:00:00Z\nbob,i1,2024-05-01T10:01:00Z\n"
JUNK_CSV = [
    b"user_id,item_id,ts,event_type",
    b"bob,i2,2024-05-01T10:00:00Z,view",
    b"alice,i2,2024-05-01T10:01:00Z,view",  # 3
    b'alice,"i3,broken',  # 4: malformed, names alice
    b"carol,i2,2024-05-01T10:02:00Z,view",
    b"",
]
NESTED_JSONL = b'{"user_id": "alice", "item_id": "i4", "ts": 1714557600}\n'


@pytest.fixture()
def lake(lake_root: str, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """A lake with one real date, ingested, and strays in raw, bronze, silver, quarantine
    and gold/recommendations."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    lake = Lake(lake_root)
    raw = lake.path(RAW_INTERACTIONS)
    lake.write_file(RAW_INTERACTIONS, "a.csv", GOOD, dt=DAY)
    lake.write_bytes(lake.relpath(f"{raw}/dt=junk/events.csv"), b"\n".join(JUNK_CSV))
    lake.write_bytes(lake.relpath(f"{raw}/dt=20240501/sub/x.jsonl.gz"), gzip.compress(NESTED_JSONL))
    lake.write_bytes(lake.relpath(f"{raw}/loose.parquet"), parquet_bytes(pl.DataFrame({
        "user_id": ["carol", "alice"], "item_id": ["i5", "i6"], "ts": [1714557600, 1714557601],
    })))  # fmt: skip
    lake.write_bytes(lake.relpath(f"{raw}/dt=junk/_SUCCESS"), b"")  # hidden: not data
    settings = Settings(storage=lake_root, max_bad_share=0.5)
    ingest_dates(lake, [DAY], settings)
    validate_dates(lake, [DAY], settings)
    # Hand-made copies of a real partition under names that are not dates.
    for table in (BRONZE, SILVER):
        copy = lake.read_partition(table, dt=DAY)
        lake.write_bytes(f"{table}/dt=20240501/part-0.parquet", parquet_bytes(copy))
    bad = lake.read_partition(BRONZE, dt=DAY).with_columns(reason=pl.lit("malformed_line"))
    lake.write_bytes(f"{QUARANTINE}/dt=old/part-0.parquet", parquet_bytes(bad))
    recs = pl.DataFrame({"user_id": ["alice", "bob"], "rank": [1, 1], "item_id": ["i1", "i1"]})
    lake.write_bytes(f"{RECOMMENDATIONS}/run_date=latest/part-0.parquet", parquet_bytes(recs))
    return lake


def _read(lake: Lake, relpath: str) -> bytes:
    return lake.fs.cat_file(f"{lake.base}/{relpath}")


def _users(lake: Lake, relpath: str) -> list[str]:
    return pl.read_parquet(io.BytesIO(_read(lake, relpath)))["user_id"].to_list()


def test_forget_erases_the_user_under_stray_folders_too(lake: Lake, capsys) -> None:
    raw = "raw/interactions"
    assert main(["forget", "--storage", lake.root, "--user", "alice", "--keep-models"]) == 0
    out = capsys.readouterr().out
    # Raw: each stray file is rewritten in its own format, every other line byte for byte.
    kept = [line for n, line in enumerate(JUNK_CSV, start=1) if n not in (3, 4)]
    assert _read(lake, f"{raw}/dt=junk/events.csv") == b"\n".join(kept)
    assert not lake.fs.exists(f"{lake.base}/{raw}/dt=20240501/sub/x.jsonl.gz")  # all hers
    assert _users(lake, f"{raw}/loose.parquet") == ["carol"]
    assert _read(lake, f"{raw}/dt=junk/_SUCCESS") == b""
    # Table copies: the user's rows are gone, everyone else's stay.
    assert _users(lake, f"{BRONZE}/dt=20240501/part-0.parquet") == ["bob"]
    assert _users(lake, f"{SILVER}/dt=20240501/part-0.parquet") == ["bob"]
    assert _users(lake, f"{QUARANTINE}/dt=old/part-0.parquet") == ["bob"]
    assert _users(lake, f"{RECOMMENDATIONS}/run_date=latest/part-0.parquet") == ["bob"]
    base = lake.base
    assert f"deleted {base}/{raw}/dt=20240501/sub/x.jsonl.gz (1 rows removed)\n" in out
    for path, n in (
        (f"{raw}/dt=junk/events.csv", 2),
        (f"{raw}/loose.parquet", 1), (f"{BRONZE}/dt=20240501/part-0.parquet", 1),
        (f"{QUARANTINE}/dt=old/part-0.parquet", 1),
        (f"{RECOMMENDATIONS}/run_date=latest/part-0.parquet", 1),
    ):  # fmt: skip
        assert f"rewrote {base}/{path} ({n} rows removed)\n" in out, path
    # 3 raw files, then the copies in bronze, silver, quarantine and gold/recommendations.
    assert "checked 7 files under folders that are not partitions (e.g. dt=junk;" in out
    assert "removed 2 rows from bronze/interactions" in out  # 1 in dt=2024-05-01, 1 in the copy
    # Nothing of the user is left in any file, real partition or stray.
    settings = Settings(storage=lake.root)
    again = forget(lake, "alice", settings, keep_models=True)
    assert not again.found and again.strays_checked == 6 and again.unreadable == ()
    assert lake.scan(BRONZE).filter(mentions("alice")).height == 0


def test_a_stray_file_that_cannot_be_read_is_named(lake: Lake, capsys) -> None:
    notes = lake.write_bytes("raw/interactions/notes.txt", b"alice called on 2024-05-01")
    copy = lake.write_bytes(f"{BRONZE}/dt=junk/part-0.parquet", b"PAR1 not really")
    assert main(["forget", "--storage", lake.root, "--user", "alice", "--keep-models"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"unreadable files could not be checked; replace or delete them by hand: {notes}, {copy}\n"
    )
    assert _read(lake, "raw/interactions/notes.txt") == b"alice called on 2024-05-01"
    assert _users(lake, "raw/interactions/loose.parquet") == ["carol"]  # the rest went on
