"""flows/ingest.py end to end under the Prefect test harness: ML-100K (every row clean),
a synthetic dirty run whose quarantine matches the generator's manifest exactly, a failing
date that does not stop the others, idempotent reruns; and hostile input (issue 12):
folders that are not dates, dates completed with warnings, an error confined to its date."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from prefect.artifacts import Artifact

import flows.ingest
from flows.ingest import ingest_flow
from tasks.lake.storage import Lake
from tasks.sources.movielens import import_movielens
from tasks.sources.synth import SynthParams, generate

pytestmark = pytest.mark.usefixtures("prefect_harness")  # tests/conftest.py


def _assert_accounted(lake: Lake, s: dict) -> None:
    """raw = silver + quarantined + duplicates, in the summary, gold/runs and the partitions."""
    day = dt.date.fromisoformat(s["date"])
    quarantined = sum(s["quarantined"].values())
    assert s["raw_rows"] == s["silver_rows"] + quarantined + s["duplicates"]
    assert lake.read_partition("bronze/interactions", dt=day).height == s["raw_rows"]
    assert lake.read_partition("silver/interactions", dt=day).height == s["silver_rows"]
    q_table = "quarantine/interactions"
    q_rows = lake.read_partition(q_table, dt=day).height if lake.exists(q_table, dt=day) else 0
    assert q_rows == quarantined
    run = lake.read_partition("gold/runs", stage="validate", dt=day).row(0, named=True)
    assert (run["run_date"], run["raw_rows"], run["silver_rows"]) == (
        day, s["raw_rows"], s["silver_rows"]
    )  # fmt: skip
    assert (run["quarantined_rows"], run["duplicates"]) == (quarantined, s["duplicates"])


def _run(lake: Lake, start: str, end: str) -> tuple[bool, list[dict]]:
    state = ingest_flow(storage=lake.root, start=start, end=end, return_state=True)
    return state.is_completed(), state.result(raise_on_failure=False)


@pytest.mark.slow
def test_movielens_100k_all_rows_clean(shared_data: Path, lake_root: str) -> None:
    lake = Lake(lake_root)
    imported = import_movielens(shared_data / "ml-100k", lake)
    ok, summaries = _run(lake, str(imported.first_date), str(imported.last_date))
    assert ok
    # Only dates with raw files are visited (ML-100K has days without ratings).
    assert len(summaries) == imported.dates < (imported.last_date - imported.first_date).days + 1
    silver = lake.scan("silver/interactions")
    assert silver.height == 100_000
    assert sum(s["silver_rows"] for s in summaries) == 100_000
    assert all(sum(s["quarantined"].values()) == 0 and s["duplicates"] == 0 for s in summaries)
    assert silver.select(pl.struct("user_id", "item_id").n_unique()).item() == 100_000
    assert silver["value"].is_between(1, 5).all()
    for s in summaries[:: len(summaries) // 10]:  # a spread of dates, each exactly
        _assert_accounted(lake, s)


def test_synthetic_dirty_run_matches_the_manifest(
    lake_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAREC_MAX_BAD_SHARE", "0.2")
    lake = Lake(lake_root)
    params = SynthParams(users=300, items=200, days=3, events_per_day=3000, dirty_rate=0.05)
    generate(lake, params)
    manifest = lake.read_json("raw/_synth_manifest.json")
    days = [d["date"] for d in manifest["days"]]
    ok, summaries = _run(lake, days[0], days[-1])
    assert ok
    corrupt_seen = 0
    for expected, got in zip(manifest["days"], summaries, strict=True):
        assert got["date"] == expected["date"]
        assert got["raw_rows"] == expected["rows_written"]
        assert got["silver_rows"] == expected["clean_rows"]
        assert got["duplicates"] == expected["duplicates"]
        want = {k: v for k, v in expected["quarantine"].items() if v}
        assert got["quarantined"] == want
        assert [tuple(c) for c in got["corrupt_files"]] == [
            (c["file"], c["reason"]) for c in expected["corrupt_files"]
        ]
        assert sorted(got["unknown_columns"]) == sorted(expected["unknown_column_files"])
        corrupt_seen += len(expected["corrupt_files"])
        _assert_accounted(lake, got)
    assert corrupt_seen >= 1  # the run did exercise an unreadable file

    # Idempotent: a second run skips every ingest and validation, silver stays row for row.
    before = lake.scan("silver/interactions")
    ok2, again = _run(lake, days[0], days[-1])
    assert ok2 and all(s["ingest_skipped"] and s["validate_skipped"] for s in again)
    after = lake.scan("silver/interactions")
    assert after.equals(before)


def test_a_failing_date_is_reported_and_the_others_go_on(lake_root: str) -> None:
    lake = Lake(lake_root)
    good = b"user_id,item_id,ts\nu1,i1,2024-01-01T10:00:00Z\n"
    lake.write_bytes("raw/interactions/dt=2024-01-01/a.csv", good)
    lake.write_bytes("raw/interactions/dt=2024-01-02/a.csv", b"user_id,item_id,ts\n" + b"x\n" * 9)
    lake.write_bytes("raw/interactions/dt=2024-01-03/a.csv", good.replace(b"01T", b"03T"))
    ok, summaries = _run(lake, "2024-01-01", "2024-01-03")
    assert not ok
    assert [s["status"] for s in summaries] == ["ok", "failed", "ok"]
    assert "PartitionQualityError" in summaries[1]["error"]
    assert "malformed_line=9" in summaries[1]["error"]
    assert lake.exists("silver/interactions", dt=dt.date(2024, 1, 3))
    assert not lake.exists("silver/interactions", dt=dt.date(2024, 1, 2))
    _assert_accounted(lake, summaries[0])
    run = lake.read_partition("gold/runs", stage="validate", dt=dt.date(2024, 1, 2)).row(
        0, named=True
    )
    assert (run["status"], run["quarantined_rows"], run["silver_rows"]) == ("failed", 9, 0)


GOOD = b"user_id,item_id,ts\nu1,i1,2024-01-01T10:00:00Z\n"


def _latest_artifact() -> tuple[list[dict], str]:
    art = Artifact.get(key="metarec-validate")
    data = art.data if isinstance(art.data, list) else json.loads(art.data)
    return data, art.description


def test_stray_folders_are_skipped_and_named_never_fatal(lake_root: str) -> None:
    lake = Lake(lake_root)
    for folder in ("dt=2024-01-01", "dt=junk", "dt=20240115", "dt=2024-W03-1"):
        lake.write_bytes(f"raw/interactions/{folder}/a.csv", GOOD)
    state = ingest_flow(storage=lake.root, start="2024-01-01", end="2024-01-31",
                        return_state=True)  # fmt: skip
    assert state.is_completed()
    assert state.message == (
        "1 dates ingested; skipped 3 raw folders that are not dt=YYYY-MM-DD: "
        "['dt=2024-W03-1', 'dt=20240115', 'dt=junk']"
    )
    (summary,) = state.result()
    assert (summary["date"], summary["status"], summary["silver_rows"]) == ("2024-01-01", "ok", 1)
    _, description = _latest_artifact()
    assert description.endswith(
        ". Skipped, not dt=YYYY-MM-DD folders: dt=2024-W03-1, dt=20240115, dt=junk"
    )


def test_warnings_complete_the_flow_with_a_message_and_show_in_runs(lake_root: str) -> None:
    lake = Lake(lake_root)
    lake.write_bytes("raw/interactions/dt=2024-01-01/a.csv", GOOD)
    lake.write_bytes("raw/interactions/dt=2024-01-02/a.csv.gz", b"\x1f\x8b cut off")  # only file
    lake.write_bytes("raw/interactions/dt=2024-01-03/a.csv", GOOD.replace(b"01T", b"03T"))
    lake.write_bytes("raw/interactions/dt=2024-01-03/empty.csv", b"")
    state = ingest_flow(storage=lake.root, start="2024-01-01", end="2024-01-03",
                        return_state=True)  # fmt: skip
    assert state.is_completed()
    assert state.message == "3 dates ingested; 2 with warnings: ['2024-01-02', '2024-01-03']"
    summaries = state.result()
    assert [s["status"] for s in summaries] == ["ok", "warning", "warning"]
    assert summaries[1]["warnings"] == [
        "unreadable file raw/interactions/dt=2024-01-02/a.csv.gz: invalid_gzip"
    ]
    assert summaries[2]["warnings"] == [
        "unreadable file raw/interactions/dt=2024-01-03/empty.csv: empty_file"
    ]
    assert [(s["raw_rows"], s["silver_rows"]) for s in summaries] == [(1, 1), (0, 0), (1, 1)]
    for s in summaries:
        _assert_accounted(lake, s)
    for s in summaries:
        run = lake.read_partition(
            "gold/runs", stage="validate", dt=dt.date.fromisoformat(s["date"])
        )
        assert run["status"].to_list() == [s["status"]]
    rows, _ = _latest_artifact()
    assert [(r["date"], r["status"], r["warnings"]) for r in rows] == [
        ("2024-01-01", "ok", ""),
        ("2024-01-02", "warning", summaries[1]["warnings"][0]),
        ("2024-01-03", "warning", summaries[2]["warnings"][0]),
    ]


def test_an_error_in_one_date_never_fails_another(
    lake_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = flows.ingest.validate_dates

    def fragile(lake: Lake, days: list[dt.date], settings: object) -> list:
        if dt.date(2024, 1, 2) in days:
            raise RuntimeError("disk on fire")
        return real(lake, days, settings)

    monkeypatch.setattr(flows.ingest, "validate_dates", fragile)
    lake = Lake(lake_root)
    for d in ("01", "02", "03"):
        lake.write_bytes(
            f"raw/interactions/dt=2024-01-{d}/a.csv", GOOD.replace(b"01T", d.encode() + b"T")
        )
    state = ingest_flow(storage=lake.root, start="2024-01-01", end="2024-01-03",
                        return_state=True)  # fmt: skip
    assert state.is_failed()
    assert state.message == "1 of 3 dates failed: ['2024-01-02']"
    summaries = state.result(raise_on_failure=False)
    assert [(s["date"], s["status"]) for s in summaries] == [
        ("2024-01-01", "ok"), ("2024-01-02", "failed"), ("2024-01-03", "ok")
    ]  # fmt: skip
    assert summaries[1]["error"] == "RuntimeError: disk on fire"
    _assert_accounted(lake, summaries[0])
    _assert_accounted(lake, summaries[2])


# ---- one writer per lake: the flow itself holds the lock (the ingest deployment) --------


def test_the_flow_holds_the_lake_lock_and_waits_for_another_writer(
    lake_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.lake.lock import WRITER, acquire, release

    lake = Lake(lake_root)
    lake.write_bytes("raw/interactions/dt=2024-01-01/a.csv", GOOD)
    lease_file = Path(lake.base) / "_locks" / "writer.json"
    seen: list[bool] = []
    real = flows.ingest.ingest_dates

    def watched(lake: Lake, days: list[dt.date], settings: object) -> list:
        seen.append(lease_file.exists())  # the lease is there while the flow writes
        return real(lake, days, settings)

    monkeypatch.setattr(flows.ingest, "ingest_dates", watched)
    other = acquire(lake, WRITER, ttl=60, wait=0)  # another run (not this context) holds it
    try:
        state = ingest_flow(storage=lake.root, start="2024-01-01", return_state=True,
                            settings_overrides={"lock_wait_seconds": 0.2})  # fmt: skip
    finally:
        release(lake, other)
    assert state.is_failed()
    assert "another metarec run holds the lake lock since " in state.message
    assert f"(lease {lease_file}, expires " in state.message
    assert seen == [] and not lake.exists("bronze/interactions", dt=dt.date(2024, 1, 1))

    ok, (summary,) = _run(lake, "2024-01-01", "2024-01-01")
    assert ok and summary["silver_rows"] == 1
    assert seen == [True] and not lease_file.exists()  # released at the end


def test_a_run_that_holds_the_lock_calls_the_flow_without_waiting(lake_root: str) -> None:
    from tasks.config import Settings
    from tasks.lake.lock import WRITER, lake_lock

    lake = Lake(lake_root)
    lake.write_bytes("raw/interactions/dt=2024-01-01/a.csv", GOOD)
    # `metarec ingest`, or a nightly: the lock is already this context's. With no wait at
    # all, a lock that were not re-entrant would fail the flow at once.
    with lake_lock(lake, WRITER, Settings(lock_wait_seconds=0)) as lease:
        state = ingest_flow(storage=lake.root, start="2024-01-01", return_state=True,
                            settings_overrides={"lock_wait_seconds": 0})  # fmt: skip
        assert state.is_completed(), state.message
        assert (Path(lake.base) / "_locks" / "writer.json").exists()  # still the outer's
    assert lease is not None


def test_a_storage_root_with_no_lake_fails_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    state = ingest_flow(storage=str(missing), start="2024-01-01", return_state=True)
    assert state.is_failed() and f"no lake at {missing}" in state.message
    assert not missing.exists()  # the lock did not create a lake there
