"""Erasure (`metarec forget`): one user leaves every table and model input; every other
row stays, byte for byte in the landing files, and the next ingest does not bring them
back."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from schemas.tables import (
    BRONZE,
    EPISODES,
    MODELS,
    QUARANTINE,
    RAW_INTERACTIONS,
    RECOMMENDATIONS,
    SILVER,
    STAGING_RECOMMENDATIONS,
)
from tasks.config import Settings
from tasks.ingest.readers import LandingFile, ReadOptions, ReadReport, read_files
from tasks.ingest.stage import ingest_dates
from tasks.lake.parquet import parquet_bytes
from tasks.lake.pseudonyms import KEY_ENV, pseudonyms_for
from tasks.lake.stamps import read_stamp
from tasks.lake.storage import Lake
from tasks.learn.episodes import build_episodes
from tasks.serve.erase import forget
from tasks.serve.erase_files import mentions
from tasks.serve.publish import write_recommendations
from tasks.serve.score import STAGED
from tasks.validate.stage import validate_dates

D0, D1, D2 = dt.date(2024, 4, 30), dt.date(2024, 5, 1), dt.date(2024, 5, 2)
NOW = dt.datetime(2024, 5, 3, tzinfo=dt.UTC)
CSV_LINES = [
    b"user_id,item_id,ts,event_type,value",
    b"alice,i1,2024-05-01T10:00:00Z,view,1",  # 2: alice
    b"bob,i1,2024-05-01T10:01:00Z,view,1",
    b" alice ,i2,2024-05-01T10:02:00Z,view,1",  # 4: alice, spelled with spaces
    b"carol,i2,2024-05-01T10:03:00Z,view,1",
    b"bob,i3,2024-05-01T10:04:00Z,view,1",
    b"bob,i3,2024-05-01T10:04:00Z,view,1",  # an exact duplicate
    b'alice,"i4,broken',  # 8: malformed, mentions alice
    b'bob,"i9,broken',  # malformed, bob's
    b'"bob",i4,2024-05-01T10:05:00Z,view,1',  # quoted, well formed
    b"dave,i5,not-a-time,view,1",  # quarantined: unparseable_ts
    b"carol,i3,2024-05-01T12:00:00Z,view,1\r",  # a CRLF line stays as it is
    b"",
]
JSONL_LINES = [
    b'{"user_id": "alice", "item_id": "i5", "ts": "2024-05-01T11:00:00Z"}',  # 1
    b'{"user_id": "bob", "item_id": "i5", "ts": "2024-05-01T11:00:00Z"}',
    b'{"user_id": "alice", "item_id": "i6", "ts',  # 3: malformed, mentions alice
    b'{"user_id": "carol", "item_id": "i6", "ts": "2024-05-01T11:05:00Z", "value": 2}',
    b"",
]
LATE = b"user_id,item_id,ts\nbob,i7,2024-05-02T08:00:00Z\ncarol,i7,2024-05-02T09:00:00Z\n"
USERS = b'user_id,age,occupation\nalice,31,artist\nbob,40,"writer, editor"\n'
SETTINGS = {"max_bad_share": 0.5}


def parquet_events() -> bytes:
    frame = pl.DataFrame({
        "user_id": ["alice", "bob", "carol", "alice"],
        "item_id": ["i8", "i8", "i1", "i9"],
        "ts": [dt.datetime(2024, 5, 2, h, tzinfo=dt.UTC) for h in (1, 2, 3, 4)],
        "value": [1.0, 2.0, 3.0, 4.0],
    })  # fmt: skip
    return parquet_bytes(frame)


def land(lake: Lake) -> None:
    lake.write_file(RAW_INTERACTIONS, "events.csv", b"\n".join(CSV_LINES), dt=D1)
    lake.write_file(RAW_INTERACTIONS, "more.jsonl.gz", gzip.compress(b"\n".join(JSONL_LINES)),
                    dt=D1)  # fmt: skip
    lake.write_file(RAW_INTERACTIONS, "batch.parquet", parquet_events(), dt=D2)
    lake.write_file(RAW_INTERACTIONS, "late.csv", LATE, dt=D2)
    lake.write_file("raw/users", "users.csv", USERS)


def lists(users: list[str]) -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": [u for u in users for _ in range(2)],
        "rank": [1, 2] * len(users),
        "item_id": ["i1", "i2"] * len(users),
        "score": [2.0, 1.0] * len(users),
        "user_segment": ["warm"] * (2 * len(users)),
    })  # fmt: skip


@pytest.fixture()
def lake(lake_root: str, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """Landed, ingested, validated; episodes, two published nights (the first with
    pseudonyms), a staged table and three model folders."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    lake = Lake(lake_root)
    land(lake)
    settings = Settings(storage=lake_root, **SETTINGS)
    ingest_dates(lake, [D1, D2], settings)
    assert all(r.status == "ok" for r in validate_dates(lake, [D1, D2], settings))
    build_episodes(lake, D2, settings)
    p = pseudonyms_for(lake, settings)
    users = ["alice", " alice ", "bob", "carol"]
    write_recommendations(lake, D1, p.frame(lists(users)), "ease", "v1", NOW)
    write_recommendations(lake, D2, lists(users), "ease", "v2", NOW)
    staged = lists(users).with_columns(model=pl.lit("ease"), model_version=pl.lit("ease@2"))
    lake.write_partition(STAGING_RECOMMENDATIONS, staged, run_date=D2, model=STAGED)
    for d in (D0, D1, D2):
        lake.write_bytes(f"models/run_date={d}/model.pt", b"weights")
    return lake


def everything(lake: Lake) -> dict[str, pl.DataFrame]:
    """Every table that can hold a user, whole."""
    staged = lake.read_partition(STAGING_RECOMMENDATIONS, run_date=D2, model=STAGED)
    return {
        "bronze": lake.scan(BRONZE), "silver": lake.scan(SILVER),
        "quarantine": lake.scan(QUARANTINE), "episodes": lake.scan(EPISODES),
        "recommendations": pl.concat(
            [lake.read_partition(RECOMMENDATIONS, run_date=d) for d in (D1, D2)]
        ),
        "staging": staged,
    }  # fmt: skip


def alice(frame: pl.DataFrame, names: set[str]) -> pl.Series:
    """Which rows are alice's: by id or pseudonym, or an unparsed line naming her."""
    if "parse_error" in frame.columns:
        return frame.select(mentions("alice")).to_series()
    return frame.select(pl.col("user_id").str.strip_chars().is_in(["alice", *names])).to_series()


def landed_rows(lake: Lake) -> pl.DataFrame:
    """Every raw/interactions row as ingest reads it."""
    files = [
        LandingFile(d, lake.relpath(p), p, int(lake.fs.size(p)))
        for d in (D1, D2)
        for p in lake.files(RAW_INTERACTIONS, dt=d)
    ]
    options = ReadOptions.of(Settings(storage=lake.root))
    return pl.concat(read_files(lake.fs, files, options, ReadReport()), how="diagonal_relaxed")


def test_forget_removes_the_user_everywhere_and_keeps_everyone_else(lake: Lake) -> None:
    settings = Settings(storage=lake.root, **SETTINGS)
    p = pseudonyms_for(lake, settings)
    names = {p.of("alice"), p.of(" alice ")}
    before = everything(lake)
    assert all(alice(f, names).any() for f in before.values())  # alice is everywhere
    late = lake.fs.cat_file(lake.path(RAW_INTERACTIONS, dt=D2) + "/late.csv")

    result = forget(lake, "alice", settings)

    raw = lake.path(RAW_INTERACTIONS, dt=D1)
    assert dict(result.raw_files) == {
        f"{raw}/events.csv": 3, f"{raw}/more.jsonl.gz": 2,
        f"{lake.path(RAW_INTERACTIONS, dt=D2)}/batch.parquet": 2,
    }  # fmt: skip
    # Every other line stays byte for byte, in place.
    kept_csv = [line for n, line in enumerate(CSV_LINES, start=1) if n not in (2, 4, 8)]
    assert lake.fs.cat_file(f"{raw}/events.csv") == b"\n".join(kept_csv)
    kept_jsonl = [line for n, line in enumerate(JSONL_LINES, start=1) if n not in (1, 3)]
    assert gzip.decompress(lake.fs.cat_file(f"{raw}/more.jsonl.gz")) == b"\n".join(kept_jsonl)
    assert lake.fs.cat_file(lake.path(RAW_INTERACTIONS, dt=D2) + "/late.csv") == late
    batch = pl.read_parquet(io.BytesIO(lake.fs.cat_file(result.raw_files[2][0])))
    assert batch["user_id"].to_list() == ["bob", "carol"] and batch["value"].to_list() == [2, 3]
    assert landed_rows(lake).filter(mentions("alice")).height == 0
    assert result.user_files == ((f"{lake.path('raw/users')}/users.csv", 1),)
    assert lake.fs.cat_file(result.user_files[0][0]) == (
        b"user_id,age,occupation\nbob,40,\"writer, editor\"\n"
    )  # fmt: skip

    after = everything(lake)
    for table, frame in after.items():
        assert not alice(frame, names).any(), table
        # Everyone else's rows are exactly as they were, in the same order.
        assert frame.equals(before[table].filter(~alice(before[table], names))), table
    assert result.rows == {
        "bronze/interactions": 7, "silver/interactions": 5, "quarantine/interactions": 2,
        "gold/episodes": before["episodes"].filter(pl.col("user_id").is_in(names)).height,
        "staging/recommendations": 4, "gold/recommendations": 8,
    }  # fmt: skip
    assert result.rows["gold/episodes"] > 0
    assert lake.partitions(MODELS) == [] and result.models_deleted == (str(D0), str(D1), str(D2))
    for d in (D1, D2):  # the next ingest re-reads the rewritten files
        assert read_stamp(lake, BRONZE, dt=d) is None and read_stamp(lake, SILVER, dt=d) is None
    record = Path(result.record).read_text()
    assert "alice" not in record and json.loads(record)["pseudonym"] == p.of("alice")
    assert not forget(lake, "alice", settings).found


def test_the_next_ingest_does_not_bring_the_user_back(lake: Lake) -> None:
    settings = Settings(storage=lake.root, **SETTINGS)
    before = validate_dates(lake, [D1, D2], settings)
    silver_before = lake.scan(SILVER).filter(~pl.col("user_id").str.strip_chars().eq("alice"))

    forget(lake, "alice", settings)
    ingested = ingest_dates(lake, [D1, D2], settings)
    after = validate_dates(lake, [D1, D2], settings)

    assert [r.skipped for r in ingested] == [False, False]  # re-read from the new files
    assert [r.skipped for r in after] == [False, False]
    for old, new, removed in zip(before, after, (5, 2), strict=True):
        assert new.raw_rows == old.raw_rows - removed
        assert new.raw_rows == new.silver_rows + sum(new.quarantined.values()) + new.duplicates
        assert new.duplicates == old.duplicates  # bob's duplicate is still counted
    assert after[0].quarantined == {"malformed_line": 1, "unparseable_ts": 1}  # bob's, dave's
    assert lake.scan(BRONZE).filter(mentions("alice")).height == 0
    assert lake.scan(QUARANTINE).filter(mentions("alice")).height == 0
    key = ["user_id", "item_id", "ts", "event_type", "value"]
    silver = lake.scan(SILVER)
    assert silver.select(key).sort(key).equals(silver_before.select(key).sort(key))


def test_models_since_the_first_event_go_unless_kept(
    lake: Lake, capsys: pytest.CaptureFixture
) -> None:
    # carol is not in raw/users: only checkpoints of nights that read her events go.
    assert main(["forget", "--storage", lake.root, "--user", "carol", "--keep-models"]) == 0
    assert lake.partitions(MODELS) == [str(D0), str(D1), str(D2)]
    out = capsys.readouterr().out
    assert f"rewrote {lake.path(RAW_INTERACTIONS, dt=D1)}/events.csv (2 rows removed)" in out
    assert "removed 4 rows from gold/recommendations" in out
    lake.write_file(RAW_INTERACTIONS, "carol.csv", b"user_id,item_id,ts\ncarol,i1,"
                    b"2024-05-02T10:00:00Z\n", dt=D2)  # fmt: skip
    # Her new events landed on D2: the checkpoints from D2 on go, older ones stay.
    assert main(["forget", "--storage", lake.root, "--user", "carol"]) == 0
    assert lake.partitions(MODELS) == [str(D0), str(D1)]
    assert f"deleted model checkpoints of {D2}\n" in capsys.readouterr().out


def test_an_unreadable_file_is_reported(lake: Lake, capsys: pytest.CaptureFixture) -> None:
    cut = gzip.compress(b"user_id,item_id,ts\nbob,i1,2024-05-02T01:00:00Z\n" * 50)[:40]
    path = lake.write_file(RAW_INTERACTIONS, "cut.csv.gz", cut, dt=D2)
    assert main(["forget", "--storage", lake.root, "--user", "bob"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"unreadable files could not be checked; replace or delete them by hand: {path}\n"
    )
    assert lake.fs.cat_file(path) == cut
