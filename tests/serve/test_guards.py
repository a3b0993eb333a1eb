"""Publish guards (DESIGN.md step 7): an empty table, or one that collapses versus the
previous published night, is refused; the previous `latest` stays, the refused night is
recorded in gold/runs and its staged table is kept."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from schemas.tables import RECOMMENDATIONS, RUNS, STAGING_RECOMMENDATIONS
from tasks.config import Settings
from tasks.lake.storage import Lake
from tasks.serve.gate import ChampionDecision
from tasks.serve.guards import PublishRefused
from tasks.serve.publish import publish_stage
from tasks.serve.score import STAGED, ScoreStageResult
from tasks.serve.warehouse import connect_warehouse

K = 3
DAY1, DAY2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
DECISION = ChampionDecision("ease", False, "metalearner does not beat ease", "ndcg@10", 0.1)


def lists(n_users: int) -> pl.DataFrame:
    """K items for each of users u00..u<n-1>, as the score stage stages them."""
    rows = [
        (f"u{u:02d}", rank, f"i{(u + rank) % 7}", 1.0 / rank, "warm")
        for u in range(n_users)
        for rank in range(1, K + 1)
    ]
    return pl.DataFrame(
        rows,
        schema={"user_id": pl.String, "rank": pl.Int16, "item_id": pl.String,
                "score": pl.Float32, "user_segment": pl.String},
        orient="row",
    )  # fmt: skip


def stage_and_publish(lake: Lake, day: dt.date, n_users: int, **settings: object):
    staged = lists(n_users).with_columns(model=pl.lit("ease"), model_version=pl.lit(f"ease@{day}"))
    lake.write_partition(STAGING_RECOMMENDATIONS, staged, run_date=day, model=STAGED)
    scored = ScoreStageResult(
        run_date=day, staged_path="", model="ease", model_version=f"ease@{day}",
        users=n_users, rows=n_users * K, segments={}, users_by_model={"ease": n_users},
        users_by_gate_segment={},
    )  # fmt: skip
    config = Settings(storage=lake.root, top_k=K, **settings)
    return publish_stage(lake, day, config, scored, DECISION, {"score": 1.0})


@pytest.fixture()
def lake(lake_root: str) -> Lake:
    return Lake(lake_root)


def staged_at(lake: Lake, day: dt.date) -> str:
    return lake.path(STAGING_RECOMMENDATIONS, run_date=day, model=STAGED)


def assert_refused(lake: Lake, day: dt.date, message: str, latest: dt.date | None) -> None:
    """Nothing of `day` published, the staged table kept, the refusal recorded."""
    assert not lake.exists(RECOMMENDATIONS, run_date=day)
    assert lake.exists(STAGING_RECOMMENDATIONS, run_date=day, model=STAGED)
    run = lake.read_partition(RUNS, stage="nightly", dt=day).row(0, named=True)
    assert (run["status"], run["error"]) == ("refused", message)
    assert run["rows_published"] == 0 and run["champion_model"] == "ease"
    with connect_warehouse(lake) as con:
        got = con.execute("SELECT DISTINCT run_date FROM recommendations_latest").fetchall()
        assert got == ([(latest,)] if latest else [])
        status = con.execute("SELECT status FROM runs WHERE dt = ?", [day]).fetchall()
        assert status == [("refused",)]


def test_an_empty_table_is_refused_and_latest_stays(lake: Lake) -> None:
    stage_and_publish(lake, DAY1, 10)
    message = (
        f"publish refused for {DAY2}: the staged table has 0 users (0 rows), below the "
        f"minimum of 1 (min_published_users); nothing was published (the latest published "
        f"night stays {DAY1}); the staged table is kept at {staged_at(lake, DAY2)}"
    )
    with pytest.raises(PublishRefused) as info:
        stage_and_publish(lake, DAY2, 0)
    assert str(info.value) == message
    assert_refused(lake, DAY2, message, latest=DAY1)
    assert lake.read_partition(RECOMMENDATIONS, run_date=DAY1).height == 10 * K


def test_an_empty_first_night_is_refused(lake: Lake) -> None:
    with pytest.raises(PublishRefused, match=r"0 users .* \(nothing was ever published\)"):
        stage_and_publish(lake, DAY1, 0)
    assert lake.partitions(RECOMMENDATIONS) == []


def test_below_the_minimum_of_users_is_refused(lake: Lake) -> None:
    with pytest.raises(PublishRefused, match=r"has 2 users \(6 rows\), below the minimum of 3"):
        stage_and_publish(lake, DAY1, 2, min_published_users=3)
    assert stage_and_publish(lake, DAY1, 3, min_published_users=3).users == 3


def test_a_collapse_versus_the_previous_night_is_refused(lake: Lake) -> None:
    stage_and_publish(lake, DAY1, 10)
    message = (
        f"publish refused for {DAY2}: the staged table has 4 users, fewer than 50% "
        f"(max_collapse) of the 10 users published for {DAY1}; nothing was published "
        f"(the latest published night stays {DAY1}); the staged table is kept at "
        f"{staged_at(lake, DAY2)}"
    )
    with pytest.raises(PublishRefused) as info:
        stage_and_publish(lake, DAY2, 4)
    assert str(info.value) == message
    assert_refused(lake, DAY2, message, latest=DAY1)
    # Half the users is not a collapse at the default share; a stricter share refuses it.
    with pytest.raises(PublishRefused, match="fewer than 60% "):
        stage_and_publish(lake, DAY2, 5, max_collapse=0.6)
    result = stage_and_publish(lake, DAY2, 5)
    assert (result.status, result.users) == ("published_baseline", 5)
    assert not lake.exists(STAGING_RECOMMENDATIONS, run_date=DAY2, model=STAGED)
    run = lake.read_partition(RUNS, stage="nightly", dt=DAY2).row(0, named=True)
    assert (run["status"], run["error"]) == ("published_baseline", None)


def test_a_rerun_is_compared_with_the_night_before_not_with_itself(lake: Lake) -> None:
    stage_and_publish(lake, DAY1, 4)
    stage_and_publish(lake, DAY2, 10)
    # The rerun of DAY2 with 4 users: DAY1 had 4, so no collapse (its own 10 do not count).
    assert stage_and_publish(lake, DAY2, 4).users == 4
