"""The meta-learner's item-item parts (tasks/models/item_item.py): matrices, user rows,
buckets and the mixing tuner, on hand-made sequences and on ML-100K."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from tasks.learn.interactions import Interactions
from tasks.models.item_item import (
    N_MIX,
    STALE,
    ItemItemConfig,
    fit_parts,
    history_rows,
    make_part,
    mix_bucket,
    ndcg_rows,
    part_from_tensors,
    part_to_tensors,
    recent_popularity,
    sequence_weights,
    stale_users,
)
from tasks.sources.movielens import _read_ml100k

DAY = 86_400


def events(rows: list[tuple[str, str, int]], items: list[str]) -> Interactions:
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")
    return Interactions.from_frame(frame, item_ids=np.array(items, dtype=object))


def test_buckets_and_staleness():
    got = mix_bucket(np.array([0, 1, 2, 3, 5, 6, 10, 11, 20, 21, 500]))
    assert got.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    stale = np.array([False, True, False])
    assert mix_bucket(np.array([3, 3, 50]), stale).tolist() == [2, STALE, 5]
    data = events([("u", "a", 0), ("v", "a", 10 * DAY)], ["a"])
    assert stale_users(data, 10 * DAY + 3600, 1.0).tolist() == [True, False]
    assert not stale_users(data, None, 1.0).any()


def test_ndcg_rows():
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    rel = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 0, 0, 0]], np.float32))
    np.testing.assert_allclose(ndcg_rows(scores, rel, k=2), [1.0, 0.0])
    np.testing.assert_allclose(ndcg_rows(scores[1:], rel[1:], k=4), [1 / np.log2(5)])


def test_history_rows_keep_the_latest_event_per_item():
    data = events([("u", "a", 1), ("u", "b", 2), ("u", "a", 3), ("u", "c", 4)], ["a", "b", "c"])
    x, rec = history_rows(data, data.item.astype(np.int64), 3)
    assert x.toarray().tolist() == [[1, 1, 1]]
    assert rec.toarray().tolist() == [[2, 3, 1]]  # 1 + events back: c latest, a 1 back


def test_sequence_weights_count_nearby_pairs():
    data = events([("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("v", "c", 1)], ["a", "b", "c"])
    c = sequence_weights(data, ItemItemConfig(window=1, backward=0.5, beta=0.0))
    assert c.tolist() == [[0, 1, 0], [0.5, 0, 1], [0, 0.5, 0]]  # v's lone event pairs with none
    c2 = sequence_weights(data, ItemItemConfig(window=2, backward=0.0, beta=1.0))
    assert c2[0].tolist() == [0, 1, 1] and c2[2].tolist() == [0, 0, 0]
    np.testing.assert_allclose(c2[1], [0, 0, 1])  # b seen once: count^-1 = 1


def test_recent_popularity_gives_unseen_items_the_newcomer_prior():
    rows = [(f"u{k}", "old", k * DAY) for k in range(100)]
    rows += [(f"w{k}", "hit", 40 * DAY + k * 3600) for k in range(20)]  # arrives day 40
    data = events(rows, ["old", "hit", "never"])
    pop = recent_popularity(data, days=30.0)
    assert pop[0] > pop[1]  # "old" had more events in the last 30 days than "hit"
    # "never" has no event: it gets the newcomer prior ("hit" is the only arrival): its
    # 20 events in its first 30 days against that window's traffic.
    assert pop[2] > 0 and np.isfinite(pop).all()


@pytest.fixture(scope="module")
def ml100k(shared_data) -> Interactions:
    ratings, _, items = _read_ml100k(shared_data / "ml-100k")
    return Interactions.from_frame(ratings, item_ids=np.sort(items["item_id"].to_numpy()))


def test_fit_parts_on_ml100k_beats_popularity_on_the_tuning_users(ml100k):
    train = ml100k
    pop = np.log1p(np.bincount(train.item, minlength=train.n_items)).astype(np.float32)
    first_ts = train.ts[train.user_slices()[:-1]]
    val = np.argsort(first_ts)[-100:]  # the latest-arriving users, as the trainer picks
    cfg = ItemItemConfig(kinds=("ease", "sequence", "recent"), window=50)
    parts, summary = fit_parts(train, val, cfg, lambda h: np.tile(pop, (h.n_users, 1)))
    gains = {row["bucket"]: row["ndcg_best"] - row["ndcg_base"] for row in summary["tuning"]}
    assert set(gains) == {0, 1, 2, 3, 4, 5, "stale"}
    # Users with a few events: the item-item evidence is worth > 0.03 NDCG@10 over
    # popularity (measured ~0.05-0.09 on ML-100K), and the sequence part is kept.
    assert gains[2] > 0.03 and gains[3] > 0.03
    kinds = {p.kind: p for p in parts}
    assert "sequence" in kinds and kinds["sequence"].mix[2] > 0
    assert set(summary["kinds"]) == {"ease", "sequence", "recent:7", "recent:30", "recent:90",
                                     "recent:365"}  # fmt: skip
    for p in parts:
        assert p.mix.shape == (N_MIX,)
        assert p.weights.shape == ((1,) if p.kind.startswith("recent") else (train.n_items,)) + (
            train.n_items,
        )
    # Saved as float16 tensors (the pruned sequence matrix as coordinates): exact round trip.
    seq = kinds["sequence"]
    assert (np.count_nonzero(seq.weights, axis=1) <= cfg.top_k).all()
    doc = part_to_tensors(seq)
    assert "values" in doc and "weights" not in doc  # sparse on disk
    back = part_from_tensors("sequence", doc, cfg)
    np.testing.assert_array_equal(back.weights, seq.weights)
    np.testing.assert_array_equal(back.col_mean, seq.col_mean)
    # The parts as factors: rows @ weights reproduces the tuned evidence.
    part = make_part("sequence", kinds["sequence"].weights, kinds["sequence"].mix, cfg)
    x, rec = history_rows(train, train.item.astype(np.int64), train.n_items)
    rows = part.rows(x[:5], rec[:5], np.full(5, 2))
    assert rows.shape == (5, train.n_items) and np.isfinite(rows @ part.weights).all()
