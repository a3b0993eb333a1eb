"""Scoring: recommend() on ML-100K histories with a random-factor stand-in model, user
segments, and the score stage staging a baseline's lists on a lake."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from schemas.recommendations import SCORED
from schemas.tables import MODELS, STAGING_RECOMMENDATIONS
from tasks.config import Settings
from tasks.lake.dates import end_of_day
from tasks.lake.storage import Lake
from tasks.learn.history import load_history
from tasks.learn.holdout import segments_at
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.baselines import MostPopularConfig, RecentPopularConfig
from tasks.serve.candidates import Candidate
from tasks.serve.gate import ChampionDecision, SegmentGate
from tasks.serve.score import STAGED, assign_segments, recommend, score_stage
from tests.serve.conftest import ML100K_LAST_DAY
from tests.serve.fakes import Exploring, RandomFactors

K = 10


def test_recommend_contract_on_ml100k(histories: Interactions) -> None:
    model = RandomFactors(histories.item_ids)
    recs = recommend(model, histories, SideFeatures(), K, segments=None, block_users=128)

    assert recs.columns == ["user_id", "rank", "item_id", "score"]
    assert recs.schema["rank"] == pl.Int16 and recs.schema["score"] == pl.Float32
    assert recs.schema["user_id"] == pl.String and recs.schema["item_id"] == pl.String
    # Every user (zero-shot ones too) has K rows ranked 1..K, best first.
    per_user = recs.group_by("user_id").agg(
        pl.len().alias("n"), pl.col("rank").sort().alias("ranks"), pl.col("score").alias("s")
    )
    assert set(per_user["user_id"]) == set(histories.user_ids)
    assert (per_user["n"] == K).all()
    assert per_user["ranks"].to_list() == [list(range(1, K + 1))] * per_user.height
    ordered = recs.sort("user_id", "rank")
    assert ordered.group_by("user_id").agg(pl.col("score").diff().max() <= 0)["score"].all()
    # No seen item: the semi-join against the histories keeps nothing.
    seen = pl.DataFrame(
        {
            "user_id": histories.user_ids[histories.user],
            "item_id": histories.item_ids[histories.item],
        }
    ).unique()
    assert recs.join(seen, on=["user_id", "item_id"], how="semi").height == 0
    # Scores are the model's dot products.
    u = {uid: i for i, uid in enumerate(histories.user_ids)}
    i = {iid: j for j, iid in enumerate(histories.item_ids)}
    sample = recs.sample(200, seed=0)
    uf = model.user_factors(histories, SideFeatures())[[u[x] for x in sample["user_id"]]]
    itf = model.item_factors()[[i[x] for x in sample["item_id"]]]
    np.testing.assert_allclose((uf * itf).sum(1), sample["score"].to_numpy(), rtol=1e-4, atol=1e-5)


def test_recommend_with_segments(histories: Interactions) -> None:
    last = dt.datetime.fromtimestamp(int(histories.ts.max()), dt.UTC).date()
    segments = assign_segments(histories, last, new_user_days=30)
    recs = recommend(RandomFactors(histories.item_ids), histories, SideFeatures(), 5, segments)
    assert recs.columns[-1] == "user_segment"
    got = dict(recs.select("user_id", "user_segment").unique().iter_rows())
    assert got == dict(zip(histories.user_ids, segments, strict=True))


def test_every_published_list_shows_a_new_item(histories: Interactions) -> None:
    model = Exploring(histories.item_ids)
    rec = recommend(model, histories, SideFeatures(), K)
    new = histories.item_ids[np.arange(10)]
    per_user = rec.group_by("user_id").agg(pl.col("item_id").is_in(new).any())
    assert per_user.height == histories.n_users and per_user["item_id"].all()


def test_recommend_rejects_a_foreign_catalogue(histories: Interactions) -> None:
    model = RandomFactors(histories.item_ids[::-1].copy())
    with pytest.raises(ValueError, match="catalogue"):
        recommend(model, histories, SideFeatures(), K, None, None)


def test_assign_segments_on_ml100k(histories: Interactions) -> None:
    last = dt.datetime.fromtimestamp(int(histories.ts.max()), dt.UTC).date()
    segments = assign_segments(histories, last, new_user_days=30)

    assert segments.shape == (histories.n_users,)
    by_user = dict(zip(histories.user_ids, segments, strict=True))
    assert by_user["zs1"] == by_user["zs2"] == "cold_zero_shot"
    # Cross-check with Polars: first interaction within 30 days before the end of run_date.
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    assert end == end_of_day(last)
    first = (
        pl.DataFrame({"u": histories.user, "ts": histories.ts})
        .group_by("u")
        .agg(pl.col("ts").min())
        .with_columns(new=pl.col("ts") >= int(end.timestamp()) - 30 * 86_400)
    )
    expected = np.full(histories.n_users, "cold_zero_shot", dtype=object)
    expected[first["u"].to_numpy()] = np.where(first["new"].to_numpy(), "new", "warm")
    assert (segments == expected).all()
    assert {"new", "warm"} <= set(segments)  # ML-100K has both on its last day
    # A later run date turns today's new users warm.
    later = assign_segments(histories, last + dt.timedelta(days=400))
    assert set(later) == {"warm", "cold_zero_shot"}


def test_score_stage_stages_a_baseline(silver_lake: Lake) -> None:
    lake, day = silver_lake, ML100K_LAST_DAY
    settings = Settings(storage=lake.root, top_k=K)

    # The gate: most-popular for everyone, except the users with 51+ events, whom a
    # 30-day recent popularity serves.
    pooled = ChampionDecision("most_popular", False, "test", "ndcg@10", 0.1)
    gate = SegmentGate(pooled, {"n51_plus": "recent_popular_30d"}, {"n51_plus": "test"})
    candidates = {
        "most_popular": Candidate("most_popular", MostPopularConfig()),
        "recent_popular_30d": Candidate("recent_popular", RecentPopularConfig(30.0)),
    }

    result = score_stage(lake, day, settings, gate, candidates)

    staged = lake.partition_file(STAGING_RECOMMENDATIONS, run_date=day, model=STAGED)
    assert result.staged_path == staged
    assert result.model == "most_popular+recent_popular_30d"
    assert result.users == 943 and result.rows == 943 * K
    assert sum(result.segments.values()) == 943 and set(result.segments) <= {"new", "warm"}
    frame = lake.read_partition(STAGING_RECOMMENDATIONS, run_date=day, model=STAGED)
    assert frame.to_arrow().schema.names == SCORED.names
    # Each user's list comes from the model of their segment at the end of the day.
    history = load_history(lake, day)
    seg = segments_at(history.interactions, end_of_day(day), settings.returning_gap_days)
    long = set(history.interactions.user_ids[seg == "n51_plus"])
    by_user = frame.group_by("user_id").agg(pl.col("model").unique())
    for user, models in by_user.iter_rows():
        assert models == (["recent_popular_30d"] if user in long else ["most_popular"])
    assert result.users_by_model == {"most_popular": 943 - len(long),
                                     "recent_popular_30d": len(long)}  # fmt: skip
    assert frame.filter(pl.col("model") == "most_popular")["model_version"].unique().to_list() == [
        "most_popular@1998-04-22"
    ]
    frame = frame.filter(pl.col("model") == "most_popular")
    assert frame.schema["rank"] == pl.Int16 and frame.schema["score"] == pl.Float32
    # Popularity: the same best unseen items for everyone, so item "50" (Star Wars, the
    # most rated) tops the list of every user who has not rated it.
    top = frame.filter(pl.col("rank") == 1)["item_id"].value_counts(sort=True)
    assert top["item_id"][0] == "50"
    assert len(long) > 100  # the composition was exercised
    # The refitted baseline is saved beside tonight's model.
    assert Path(lake.path(MODELS, run_date=day), "most_popular").is_dir()
