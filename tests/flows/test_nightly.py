"""The nightly run end to end on ML-100K (from ../shared/data), through the `metarec` CLI
under the Prefect test harness: the published table follows the contract, DuckDB serves it,
a brand-new user and a zero-shot user get sensible lists, a rerun reproduces the table, and
the quality gate refuses a broken model."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from flows.cli import main
from schemas.recommendations import RECOMMENDATIONS
from tasks.config import Settings
from tasks.lake.dates import end_of_day
from tasks.lake.storage import Lake
from tasks.learn.history import load_history
from tasks.learn.holdout import segments_at
from tasks.models.metalearner import MetaLearner
from tasks.serve import evaluate, publish, score, warehouse
from tasks.sources.movielens import import_movielens

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DAY = dt.date(1998, 4, 22)  # ML-100K's last day
K = 20
STEPS = "150"
NEW_USER = "new-animation-fan"
ZERO_SHOT = "zero-shot-student"
# Three animated children's films: a taste far from the popularity list (Star Wars, ...).
NEW_USER_ITEMS = ("1", "71", "95")


@pytest.fixture(scope="module")
def lake(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("nightly") / "lake"))
    import_movielens(shared_data / "ml-100k", lake)
    # A user who arrived today with three interactions, landed like any other raw file.
    csv = "user_id,item_id,ts,event_type,value\n" + "".join(
        f"{NEW_USER},{item},{DAY}T20:0{n}:00Z,rating,5\n" for n, item in enumerate(NEW_USER_ITEMS)
    )
    lake.write_file("raw/interactions", "signups.csv", csv.encode(), dt=DAY)
    # A user known only from the sign-up form: features, no interactions.
    users_file = f"{lake.path('raw/users')}/users.parquet"
    users = pl.read_parquet(lake.fs.open(users_file, "rb").read())
    extra = pl.DataFrame(
        {"user_id": [ZERO_SHOT], "age": [21], "gender": ["F"], "occupation": ["student"],
         "zip_region": ["0"]},
        schema=users.schema,
    )  # fmt: skip
    lake.write_file("raw/users", "users.parquet", _parquet(pl.concat([users, extra])))
    code = main(["nightly", "--storage", lake.root, "--date", str(DAY), "--train-steps", STEPS])
    assert code == 0
    return lake


def _parquet(frame: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def _published(lake: Lake) -> pl.DataFrame:
    return lake.read_partition("gold/recommendations", run_date=DAY)


def test_table_follows_the_contract(lake: Lake) -> None:
    path = lake.partition_file("gold/recommendations", run_date=DAY)
    assert pq.read_schema(path).remove_metadata() == RECOMMENDATIONS
    recs = _published(lake)
    silver = lake.scan("silver/interactions")
    users = set(silver["user_id"].unique()) | {ZERO_SHOT}
    assert set(recs["user_id"].unique()) == users  # every user present
    per_user = recs.group_by("user_id").agg(
        pl.len().alias("n"), pl.col("rank").sort().alias("ranks"), pl.col("item_id").n_unique()
    )
    assert (per_user["n"] == K).all()
    assert (per_user["item_id"] == K).all()
    assert per_user["ranks"].to_list() == [list(range(1, K + 1))] * per_user.height
    seen = recs.join(silver, on=["user_id", "item_id"], how="semi")
    assert seen.is_empty(), "recommended an item the user already interacted with"
    assert set(recs["user_segment"].unique()) <= {"new", "warm", "cold_zero_shot"}
    assert recs.filter(pl.col("user_id") == ZERO_SHOT)["user_segment"].unique().to_list() == [
        "cold_zero_shot"
    ]
    assert recs.filter(pl.col("user_id") == NEW_USER)["user_segment"].unique().to_list() == ["new"]
    assert recs["run_date"].unique().to_list() == [DAY]


def test_duckdb_serves_the_latest_table(lake: Lake) -> None:
    con = warehouse.connect_warehouse(lake)
    n, latest = con.sql("SELECT count(*), max(run_date) FROM recommendations_latest").fetchall()[0]
    assert latest == DAY
    assert n == _published(lake).height
    rows = con.execute(
        "SELECT rank, item_id FROM recommendations_latest WHERE user_id = ? ORDER BY rank",
        [NEW_USER],
    ).fetchall()
    assert [r[0] for r in rows] == list(range(1, K + 1))
    status = con.sql("SELECT status FROM runs WHERE stage = 'nightly'").fetchall()
    assert status and status[0][0].startswith("published")


def test_new_user_gets_personal_recommendations(lake: Lake) -> None:
    """Tonight's meta-learner adapts to a user who arrived today from 3 interactions.

    (On ML-100K the gate may publish recent popularity, the best model on the pooled
    holdout; the published table is then checked in test_published_list_of_the_new_user.)
    """
    history = load_history(lake, DAY)
    model = MetaLearner.load(lake.url("models", run_date=DAY))
    user = int(np.flatnonzero(history.interactions.user_ids == NEW_USER)[0])
    recs = score.recommend(model, history.interactions.subset_users([user]), history.side, K)
    mine = recs["item_id"].to_list()
    popular = _popular(lake)
    # Personal: at least a quarter of the list is not in the popularity list ...
    assert len(set(mine) & set(popular)) <= 3 * K // 4, "the list is the popularity list"
    # ... and it follows the support items (children's films) more than popularity does.
    kids = _childrens_films(lake)
    assert len(kids & set(mine)) > len(kids & set(popular))


def test_published_model_is_the_gates_choice_and_personal(lake: Lake) -> None:
    """Each user's list comes from the model the per-segment gate chose for their segment
    (gold/metrics marks it), the run record names them, and the user with a distinctive
    history gets a list that is not the popularity list."""
    recs = _published(lake)
    run = lake.read_partition("gold/runs", stage="nightly", dt=DAY).to_dicts()[0]
    metrics = lake.read_partition("gold/metrics", run_date=DAY)
    chosen = dict(metrics.filter(pl.col("is_champion")).select("segment", "model").iter_rows())
    assert chosen.pop("all") == run["champion_model"]
    history = load_history(lake, DAY)
    segment = segments_at(history.interactions, end_of_day(DAY), Settings().returning_gap_days)
    expected = pl.DataFrame(
        {
            "user_id": history.interactions.user_ids.astype(str),
            "want": [chosen.get(s, run["champion_model"]) for s in segment],
        }
    )
    got = recs.group_by("user_id").agg(pl.col("model").unique()).join(expected, on="user_id")
    assert got.height == recs["user_id"].n_unique()
    assert (got["model"].list.len() == 1).all()
    assert got["model"].list.first().to_list() == got["want"].to_list()
    assert sorted(run["published_model"].split("+")) == sorted(recs["model"].unique())
    assert run["rows_published"] == recs.height
    assert run["seconds_train"] > 0 and run["seconds_evaluate"] > 0
    mine = recs.filter(pl.col("user_id") == NEW_USER)
    assert mine.height == K
    assert not set(mine["item_id"]) & set(NEW_USER_ITEMS)
    assert len(set(mine["item_id"]) & set(_popular(lake))) <= 3 * K // 4


def _popular(lake: Lake) -> list[str]:
    """The popularity list for the new user: most interacted items, seen ones excluded."""
    return (
        lake.scan("silver/interactions")
        .group_by("item_id")
        .len()
        .sort(["len", "item_id"], descending=[True, False])
        .filter(~pl.col("item_id").is_in(NEW_USER_ITEMS))["item_id"]
        .head(K)
        .to_list()
    )


def _childrens_films(lake: Lake) -> set[str]:
    items = pl.read_parquet(lake.fs.open(f"{lake.path('raw/items')}/items.parquet", "rb").read())
    return set(items.filter(pl.col("genres").str.contains("Children's"))["item_id"])


def test_zero_shot_user_gets_recommendations(lake: Lake) -> None:
    recs = _published(lake).filter(pl.col("user_id") == ZERO_SHOT)
    assert recs.height == K
    assert recs["score"].is_finite().all()
    # The meta-learner scores them from their features alone.
    history = load_history(lake, DAY)
    model = MetaLearner.load(lake.url("models", run_date=DAY))
    user = int(np.flatnonzero(history.interactions.user_ids == ZERO_SHOT)[0])
    zero = score.recommend(model, history.interactions.subset_users([user]), history.side, K)
    assert zero.height == K and zero["score"].is_finite().all()


def test_rerun_gives_the_same_table(lake: Lake) -> None:
    before = _published(lake).drop("generated_at")
    code = main(["nightly", "--storage", lake.root, "--date", str(DAY), "--train-steps", STEPS])
    assert code == 0
    after = _published(lake).drop("generated_at")
    assert after.equals(before)


def test_gate_refuses_a_broken_model(lake: Lake, tmp_path: Path) -> None:
    # Break tonight's meta-learner in a copy of the lake (other tests read the original):
    # random weights, same shapes.
    shutil.copytree(lake.root, tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    folder = Path(lake.path("models", run_date=DAY))
    state = torch.load(folder / "model.pt", weights_only=True)
    gen = torch.Generator().manual_seed(0)
    broken = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
              for k, v in state.items()}  # fmt: skip
    torch.save(broken, folder / "model.pt")
    settings = Settings(storage=lake.root)
    evaluated = evaluate.evaluate_stage(lake, DAY, settings)
    assert evaluated.decision.model != "metalearner"
    assert not evaluated.decision.published_from_candidate
    assert "metalearner" in evaluated.decision.reason
    assert "metalearner" not in evaluated.gate.models  # it serves no segment either
    scored = score.score_stage(lake, DAY, settings, evaluated.gate, evaluated.candidates)
    publish.publish_stage(lake, DAY, settings, scored, evaluated.gate, {})
    recs = _published(lake)
    assert sorted(recs["model"].unique()) == evaluated.gate.models
    run = lake.read_partition("gold/runs", stage="nightly", dt=DAY)
    assert run["status"].to_list() == ["published_baseline"]
    assert np.isfinite(recs["score"].to_numpy()).all()
