"""The black-box yardstick's plumbing (benchmarks/quality/published.py), on a tiny world.

Asserts what the lakes hold, that the real nightly ran and published for both protocols,
that every segment is reported with its user count, and the scoring function on
hand-made lists; never the quality numbers (those are docs/results.md's business).
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from benchmarks.quality import report
from benchmarks.quality.data import synth_dataset
from benchmarks.quality.lakes import (
    COLD_SEGMENTS,
    DAY,
    REPLAY_SEGMENTS,
    SHOTS,
    assign_shots,
    cold_spec,
    frame_of,
    replay_dates,
    replay_spec,
)
from benchmarks.quality.published import Options, run_one
from benchmarks.quality.scoring import score_lists
from tasks.lake.dates import end_of_day
from tasks.learn.metrics import ndcg_at_k, recall_at_k
from tasks.learn.split import temporal_split
from tasks.serve.tuning import TuningGrid
from tasks.sources.synth import SynthParams

KEY = ["user_id", "item_id", "ts"]


@pytest.fixture(scope="module")
def world():
    return synth_dataset(SynthParams(users=200, items=150, days=20, events_per_day=300, seed=0))


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory) -> dict[str, dict]:
    """Both protocols end to end (the two nightlies run side by side), lakes kept."""
    base = tmp_path_factory.mktemp("blackbox")
    grid = TuningGrid(ease_l2=(500.0,), als_factors=(16,), als_regularization=(0.1,),
                      als_alpha=(1.0,), recent_window_days=(7.0,), knn_neighbors=(50,))  # fmt: skip
    opts = Options(out=base / "out", train_steps=10, keep_lakes=True, lakes=base,
                   grid=grid)  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        futures = {p: pool.submit(run_one, world, p, 0, opts) for p in ("cold", "replay")}
        return {p: f.result() for p, f in futures.items()}


def test_cold_lake_holds_exactly_the_split(world) -> None:
    spec = cold_spec(world, seed=0)
    split = temporal_split(world.data, n_values=SHOTS, new_items=True)
    shots = assign_shots(split.new_user_ids, 0)
    assert sorted(shots) == sorted(split.new_user_ids.astype(str))
    assert set(shots.values()) == set(SHOTS)
    rows = frame_of(world.data).with_columns(
        (pl.int_range(pl.len()).over("user_id", order_by=["ts", "item_id"])).alias("rank")
    )
    shot = pl.DataFrame({"user_id": list(shots), "n": list(shots.values())})
    support = rows.join(shot, on="user_id").filter(pl.col("rank") < pl.col("n"))
    expected = pl.concat([frame_of(split.train).select(KEY), support.select(KEY)])
    assert spec.events.height == expected.height
    assert spec.events.select(KEY).join(expected, on=KEY, how="anti").height == 0
    assert int(spec.events["ts"].max()) < end_of_day(spec.run_date).timestamp()
    assert spec.run_date == dt.datetime.fromtimestamp(spec.events["ts"].max(), dt.UTC).date()
    n0 = [u for u, n in shots.items() if n == 0]
    assert not spec.events.filter(pl.col("user_id").is_in(n0)).height  # registry only
    assert set(n0) <= set(spec.users["user_id"])
    # Targets: never an item of the user's lake history; each new user in its own segment.
    assert not spec.targets.join(spec.events, on=["user_id", "item_id"], how="semi").height
    seg_of = spec.targets.filter(pl.col("segment").str.starts_with("new_n")).unique(
        ["segment", "user_id"]
    )
    for segment, user in seg_of.select("segment", "user_id").iter_rows():
        assert segment == f"new_n{shots[user]}"
    warm = spec.targets.filter(pl.col("segment") == "warm").join(
        frame_of(world.data), on=["user_id", "item_id"]
    )
    assert int(warm["ts"].min()) >= split.cutoff.timestamp()
    fresh = spec.targets.filter(pl.col("segment") == "new_items")["item_id"]
    assert not fresh.is_in(spec.events["item_id"].implode()).any()


def test_replay_lake_is_everything_up_to_the_run_date(world) -> None:
    days = replay_dates(world.data)
    assert len(days) == 3 and days == sorted(days)
    spec = replay_spec(world, days[0])
    now = end_of_day(days[0]).timestamp()
    everything = frame_of(world.data)
    assert spec.events.height == everything.filter(pl.col("ts") < now).height
    for h in (7, 30):
        t = spec.targets.filter(pl.col("segment") == f"h{h}/all").join(everything, on=KEY[:2])
        assert t["ts"].min() >= now and t["ts"].max() < now + h * DAY
    lengths = spec.events.group_by("user_id").len()
    arrivals = spec.targets.filter(pl.col("segment") == "h30/len_0")["user_id"].unique()
    assert not arrivals.is_in(lengths["user_id"].implode()).any()
    many = spec.targets.filter(pl.col("segment") == "h30/len_11-50")["user_id"].unique()
    counts = lengths.filter(pl.col("user_id").is_in(many.implode()))["len"]
    assert counts.min() >= 11 and counts.max() <= 50


def test_scoring_perfect_disjoint_and_missing_lists() -> None:
    targets = pl.DataFrame(
        {
            "segment": ["a", "a", "b", "b", "c"],
            "user_id": ["u1", "u1", "u2", "u2", "u3"],
            "item_id": ["x", "y", "x", "y", "z"],
        }
    )
    lists = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u2"],
            "rank": [1, 2, 3, 1, 2],
            "item_id": ["x", "y", "q", "p", "q"],
        }
    )
    got = {r["segment"]: r for r in score_lists(lists, targets, 10).iter_rows(named=True)}
    assert got["a"]["ndcg@10"] == pytest.approx(1.0) and got["a"]["recall@20"] == 1.0
    assert got["b"]["ndcg@10"] == 0.0 and got["b"]["recall@20"] == 0.0
    assert got["c"]["ndcg@10"] == 0.0 and got["c"]["unlisted"] == 1  # no list: a miss
    assert got["a"]["coverage"] == pytest.approx(0.3)


def test_scoring_matches_the_library_metrics() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, k = 40, 60, 20
    items = np.array([rng.permutation(n_items)[:k] for _ in range(n_users)])
    truth = [rng.choice(n_items, size=rng.integers(1, 30), replace=False) for _ in range(n_users)]
    lists = pl.DataFrame({"user_id": np.repeat(np.arange(n_users), k).astype(str),
                          "rank": np.tile(np.arange(1, k + 1), n_users),
                          "item_id": items.ravel().astype(str)})  # fmt: skip
    targets = pl.DataFrame({"segment": "s", "user_id": np.concatenate(
        [np.full(len(t), u) for u, t in enumerate(truth)]).astype(str),
        "item_id": np.concatenate(truth).astype(str)})  # fmt: skip
    hits = np.array([np.isin(items[u], truth[u]) for u in range(n_users)])
    n_rel = np.array([len(t) for t in truth])
    row = score_lists(lists, targets, n_items).row(0, named=True)
    assert row["ndcg@10"] == pytest.approx(ndcg_at_k(hits, n_rel, 10).mean())
    assert row["recall@20"] == pytest.approx(recall_at_k(hits, n_rel, 20).mean())


def test_nightly_ran_published_and_every_segment_is_reported(runs) -> None:
    for protocol, doc in runs.items():
        checks = doc["checks"]
        assert checks["landed_events"] == checks["silver_events"] > 0
        assert checks["landed_not_in_silver"] == checks["silver_not_landed"] == 0
        assert checks["registry_users_unlisted"] == 0  # raw/users users are all scored
        assert checks["list_length_max"] == 20
        assert doc["published_model"] and doc["night"]["status"].startswith("published")
        assert doc["night"]["train"]["steps"] <= 10
        raw = sorted(Path(doc["lake"], "raw", "interactions").glob("dt=*/*.csv.gz"))
        assert raw and max(p.parent.name for p in raw) <= f"dt={doc['run_date']}"
        names = COLD_SEGMENTS if protocol == "cold" else REPLAY_SEGMENTS
        assert list(doc["segments"]) == list(names)
        rows = pl.DataFrame(doc["metrics"])
        present = [s for s, n in doc["segments"].items() if n]
        must = {"h7/all", "h30/all"} if protocol == "replay" else {"warm", "new_n0", "new_n1"}
        assert must <= set(present)
        for model in ("published", "most_popular", "ease"):
            got = rows.filter(pl.col("model") == model)
            assert sorted(got["segment"]) == sorted(present)
            users = dict(zip(got["segment"], got["users"], strict=True))
            assert users == {s: doc["segments"][s] for s in present}
    text = report.render(list(runs.values()))
    for name in (*COLD_SEGMENTS, *REPLAY_SEGMENTS):
        assert f"| {name} |" in text
