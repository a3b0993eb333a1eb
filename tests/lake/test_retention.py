"""Retention (`metarec gc`): partitions past their layer's retention go, with sizes; the
latest published night, the newest complete model and bronze whose raw stays are kept."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from flows.cli import main
from schemas.tables import (
    BRONZE,
    EPISODES,
    MODELS,
    QUARANTINE,
    RAW_INTERACTIONS,
    RECOMMENDATIONS,
    STAGING_RECOMMENDATIONS,
)
from tasks.config import Settings
from tasks.lake.retention import collect_garbage, human
from tasks.lake.storage import Lake

TODAY = dt.date(2024, 3, 20)


def day(n: int) -> dt.date:
    """The date n days before TODAY."""
    return TODAY - dt.timedelta(days=n)


def build(lake: Lake) -> None:
    """Every layer with partitions 0..19 days old; models of days 0 and 1 incomplete, the
    latest published night 12 days old."""
    for n in range(20):
        d = day(n)
        lake.write_file(RAW_INTERACTIONS, "a.csv", b"user_id,item_id,ts\nu,i,2024-01-01\n", dt=d)
        lake.write_partition(BRONZE, BRONZE.schema.empty_table(), dt=d)
        lake.write_partition(QUARANTINE, QUARANTINE.schema.empty_table(), dt=d)
        lake.write_partition(EPISODES, EPISODES.schema.empty_table(), run_date=d)
        lake.write_partition(STAGING_RECOMMENDATIONS, STAGING_RECOMMENDATIONS.schema.empty_table(),
                             run_date=d, model="ease")  # fmt: skip
        rel = lake.relpath(lake.path(MODELS, run_date=d))
        lake.write_bytes(f"{rel}/model.pt", b"x" * 1000)
        if n > 1:  # days 0 and 1 crashed before metrics.json: incomplete checkpoints
            lake.write_json(f"{rel}/metrics.json", {"steps": 1})
    lake.write_partition(RECOMMENDATIONS, RECOMMENDATIONS.schema.empty_table(), run_date=day(12))


SETTINGS = dict(retain_days_raw=10, retain_days_bronze=5, retain_days_quarantine=15,
                retain_days_models=3, retain_days_episodes=2, retain_days_staging=7)  # fmt: skip


def ages(lake: Lake, table, key: str = "dt") -> list[int]:
    return sorted((TODAY - dt.date.fromisoformat(v)).days for v in lake.partitions(table, key))


@pytest.fixture()
def lake(lake_root: str) -> Lake:
    lake = Lake(lake_root)
    build(lake)
    return lake


def test_dry_run_then_gc(lake: Lake) -> None:
    settings = Settings(storage=lake.root, **SETTINGS)
    dry = collect_garbage(lake, TODAY, settings, dry_run=True)
    assert dry.dry_run and dry.removed and dry.bytes == sum(r.bytes for r in dry.removed)
    assert ages(lake, MODELS, "run_date") == list(range(20))  # nothing deleted
    models = [r for r in dry.removed if r.table == "models"]
    assert [r.partition for r in models][-1] == f"run_date={day(3)}"  # oldest first
    assert all(r.bytes > 1000 for r in models)  # model.pt + metrics.json

    done = collect_garbage(lake, TODAY, settings)
    assert [(r.table, r.partition) for r in done.removed] == [
        (r.table, r.partition) for r in dry.removed
    ]  # the dry run said exactly what goes
    keep12 = [12]  # the latest published night stays in every layer
    assert ages(lake, RAW_INTERACTIONS) == list(range(10)) + keep12
    # Bronze older than 5 days goes only where its raw partition went too.
    assert ages(lake, BRONZE) == list(range(10)) + keep12
    assert ages(lake, QUARANTINE) == list(range(15))
    # Models: the last 3 nights, the newest complete one (day 2 is within them anyway) and
    # the published night's.
    assert ages(lake, MODELS, "run_date") == [0, 1, 2, 12]
    assert ages(lake, EPISODES, "run_date") == [0, 1, 12]
    assert ages(lake, STAGING_RECOMMENDATIONS, "run_date") == list(range(7)) + keep12
    assert ages(lake, RECOMMENDATIONS, "run_date") == [12]  # gold is not gc's
    assert f"models/run_date={day(12)}: the latest published night" in done.protected
    assert (
        f"bronze/interactions/dt={day(5)}: its raw partition stays (the next ingest would "
        "rebuild it)"
    ) in done.protected
    assert collect_garbage(lake, TODAY, settings).removed == ()  # nothing left to do


def test_the_newest_complete_model_is_never_deleted(lake: Lake) -> None:
    for n in (2, 3, 4):  # the complete checkpoints inside the window lose metrics.json
        (Path(lake.path(MODELS, run_date=day(n))) / "metrics.json").unlink()
    settings = Settings(storage=lake.root, **SETTINGS)
    result = collect_garbage(lake, TODAY, settings)
    assert ages(lake, MODELS, "run_date") == [0, 1, 2, 5, 12]
    assert f"models/run_date={day(5)}: the newest complete model" in result.protected


def test_none_keeps_a_layer_forever(lake: Lake) -> None:
    collect_garbage(lake, TODAY, Settings(storage=lake.root, retain_days_models=None,
                                          retain_days_quarantine=None))  # fmt: skip
    assert ages(lake, MODELS, "run_date") == list(range(20))
    assert ages(lake, QUARANTINE) == list(range(20))
    assert ages(lake, RAW_INTERACTIONS) == list(range(20))  # raw: forever by default


def test_the_cli_prints_what_it_deletes_with_sizes(
    lake: Lake, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SETTINGS.items():
        monkeypatch.setenv(f"METAREC_{name.upper()}", str(value))
    size = human(int(lake.fs.du(lake.path(MODELS, run_date=day(3)), total=True)))
    assert main(["gc", "--storage", lake.root, "--date", str(TODAY), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would delete models/run_date={day(3)}  {size}\n" in out
    assert f"kept models/run_date={day(12)}: the latest published night\n" in out
    assert out.rstrip().endswith("(dry run: nothing deleted)")
    assert ages(lake, MODELS, "run_date") == list(range(20))
    assert main(["gc", "--storage", lake.root, "--date", str(TODAY)]) == 0
    assert f"deleted models/run_date={day(3)}  {size}\n" in capsys.readouterr().out
    assert ages(lake, MODELS, "run_date") == [0, 1, 2, 12]


def test_human_sizes() -> None:
    assert [human(n) for n in (12, 1500, 190_300_000, 2_000_000_000)] == [
        "12 B", "1.5 kB", "190.3 MB", "2.0 GB",
    ]  # fmt: skip
