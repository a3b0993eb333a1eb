"""Privacy: what leaves the serving path carries pseudonyms, never a real user id — the
UI's preview artifact, gold/episodes, error messages — and what must hold no user id at
all does not: metrics and model files. The published table keeps real ids unless
Settings.publish_pseudonyms says otherwise."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from flows import artifacts
from schemas.tables import EPISODES, METRICS, RECOMMENDATIONS, SILVER, STAGING_RECOMMENDATIONS
from tasks.config import Settings
from tasks.lake.pseudonyms import KEY_ENV, pseudonyms_for
from tasks.lake.storage import Lake
from tasks.learn.episodes import build_episodes, make_episodes
from tasks.learn.interactions import Interactions
from tasks.learn.split import temporal_split
from tasks.models.metalearner import MetaConfig
from tasks.models.metalearner.stage import save_checkpoint, train_metalearner
from tasks.serve.candidates import fit_baselines
from tasks.serve.evaluate import evaluate_models, write_metrics
from tasks.serve.gate import ChampionDecision
from tasks.serve.publish import publish_stage, write_recommendations
from tasks.serve.score import STAGED, ScoreStageResult
from tests.models.worlds import catalogue, two_groups

DAY = dt.date(2024, 6, 1)
USERS = [f"person-{n:03d}@example.org" for n in range(12)]
K = 3


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture()
def lake(lake_root: str) -> Lake:
    return Lake(lake_root)


def lists(users: list[str]) -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": [u for u in users for _ in range(K)],
        "rank": list(range(1, K + 1)) * len(users),
        "item_id": [f"i{r}" for r in range(K)] * len(users),
        "score": [1.0 / r for r in range(1, K + 1)] * len(users),
        "user_segment": ["warm"] * (K * len(users)),
    })  # fmt: skip


def publish(lake: Lake, **settings: object):
    staged = lists(USERS).with_columns(model=pl.lit("ease"), model_version=pl.lit("ease@1"))
    lake.write_partition(STAGING_RECOMMENDATIONS, staged, run_date=DAY, model=STAGED)
    scored = ScoreStageResult(
        run_date=DAY, staged_path="", model="ease", model_version="ease@1", users=len(USERS),
        rows=K * len(USERS), segments={}, users_by_model={"ease": len(USERS)},
        users_by_gate_segment={},
    )  # fmt: skip
    decision = ChampionDecision("ease", False, "baseline", "ndcg@10", 0.1)
    config = Settings(storage=lake.root, top_k=K, **settings)
    return publish_stage(lake, DAY, config, scored, decision, {"score": 1.0})


@pytest.mark.usefixtures("prefect_harness")
def test_the_ui_preview_carries_pseudonyms(lake: Lake) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    result = publish(lake)
    p = pseudonyms_for(lake, Settings(storage=lake.root))
    assert {r["user_id"] for r in result.preview} == {p.of(u) for u in USERS[:3]}
    flow(name="privacy-preview")(artifacts.published)(result, lake)  # as the nightly does
    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=["metarec-recommendations"])
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=key), sort=ArtifactSort.CREATED_DESC, limit=1
        )  # newest
    data = artifact.data if isinstance(artifact.data, str) else json.dumps(artifact.data)
    rows = json.loads(data)
    assert [r["user_id"] for r in rows] == [r["user_id"] for r in result.preview]
    assert not any(u in data for u in USERS)  # no real id anywhere in the artifact


def test_the_published_table_keeps_real_ids_unless_told(lake: Lake, lake_root: str) -> None:
    publish(lake)
    assert sorted(lake.read_partition(RECOMMENDATIONS, run_date=DAY)["user_id"].unique()) == USERS
    result = publish(lake, publish_pseudonyms=True)
    p = pseudonyms_for(lake, Settings(storage=lake_root))
    table = lake.read_partition(RECOMMENDATIONS, run_date=DAY)
    assert set(table["user_id"]) == {p.of(u) for u in USERS}
    assert table["user_id"].is_sorted()  # still sorted for lookups, by pseudonym now
    assert result.users == len(USERS) and table.height == K * len(USERS)


def test_contract_errors_name_no_user(lake: Lake) -> None:
    broken = lists(USERS).filter(~((pl.col("user_id") == USERS[4]) & (pl.col("rank") == 2)))
    with pytest.raises(ValueError) as info:
        write_recommendations(lake, DAY, broken, "ease", "v1", dt.datetime.now(dt.UTC))
    assert str(info.value) == (
        "ranks are not 1..n for 1 users, e.g. {'n': 2, 'lo': 1, 'hi': 3, 'ranks': 2, 'items': 2}"
    )
    twice = lists(USERS).with_columns(item_id=pl.lit("i0"))
    with pytest.raises(ValueError, match="users have an item twice") as info:
        write_recommendations(lake, DAY, twice, "ease", "v1", dt.datetime.now(dt.UTC))
    assert not any(u in str(info.value) for u in USERS)


def silver_rows() -> pl.DataFrame:
    frame, _ = two_groups(n_per_group=6)
    return frame.select(
        pl.col("user_id").str.replace("u", "-person-"), "item_id",
        pl.from_epoch("ts", "s").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC")),
        pl.lit("rating").alias("event_type"), "value",
        pl.lit("f.csv").alias("source_file"), pl.int_range(pl.len()).alias("source_line"),
    )  # fmt: skip


def test_episodes_carry_pseudonyms(lake: Lake) -> None:
    silver = silver_rows()
    lake.write_partition(SILVER, silver, dt=DAY)
    settings = Settings(storage=lake.root)
    build_episodes(lake, DAY, settings)
    stored = lake.read_partition(EPISODES, run_date=DAY)
    p = pseudonyms_for(lake, settings)
    real = silver["user_id"].unique().to_list()
    assert set(stored["user_id"]) == {p.of(u) for u in real}
    assert (stored["episode_id"] == stored["user_id"] + ":" + stored["support_size"]
            .cast(pl.String)).all()  # fmt: skip
    text = stored.write_ndjson()
    assert not any(u in text for u in real)
    # The same episodes as from the real ids: only the names changed.
    plain = make_episodes(silver, seed=settings.seed).with_columns(
        p.series(pl.Series("user_id", make_episodes(silver)["user_id"]))
    )
    cols = ["user_id", "support_size", "cut", "support_items", "query_items"]
    assert stored.select(cols).sort(cols[:2]).equals(plain.select(cols).sort(cols[:2]))


@pytest.fixture(scope="module")
def world():
    """The two-group world, plus user columns that copy the id (a careless export). 61
    users: above 50 rows an id-like column is not a feature (tasks.learn.features)."""
    frame, side = two_groups(n_per_group=30)
    users = side.users.with_columns(user_ref=pl.col("user_id"), email=pl.col("user_id") + "@x")
    side = type(side)(users=users, items=side.items)
    return Interactions.from_frame(frame, item_ids=catalogue(side)), side


def files_text(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_metrics_hold_no_user_ids(lake: Lake, world) -> None:
    train, side = world
    split = temporal_split(train)
    models = fit_baselines(split.train, side, split.cutoff, names=("most_popular", "ease"))
    path = write_metrics(lake, DAY, evaluate_models(models, split, side))
    stored = lake.read_partition(METRICS, run_date=DAY)
    assert "user_id" not in stored.columns and stored.height > 0
    text = Path(path).read_bytes() + stored.write_csv().encode()
    assert not any(u.encode() in text for u in train.user_ids)


def test_model_files_hold_no_user_ids(lake: Lake, world, tmp_path: Path) -> None:
    train, side = world
    config = MetaConfig(dim=8, hidden=16, batch_users=16, eval_every=5, patience=100)
    result = train_metalearner(train, side, config, budget_seconds=60, max_steps=5, seed=0)
    save_checkpoint(result, lake, DAY)
    for name, model in fit_baselines(train, side, dt.datetime(2024, 1, 1, tzinfo=dt.UTC)).items():
        model.save(tmp_path / name)
    saved = files_text(Path(lake.path("models", run_date=DAY))) | files_text(tmp_path)
    assert any(p.endswith("encoders.json") for p in saved)
    ids = [u.encode() for u in train.user_ids] + [b"zs_b"]
    leaks = {p: [u for u in ids if u in data] for p, data in saved.items()}
    assert not any(leaks.values()), leaks
