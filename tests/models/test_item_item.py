"""The meta-learner's item-item parts (tasks.models.metalearner.item_item): buckets, user
rows, the matrices and their saved form, on hand-made sequences."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from tasks.learn.interactions import Interactions
from tasks.models.metalearner import cooccurrence
from tasks.models.metalearner.cooccurrence import top_per_row
from tasks.models.metalearner.item_item import (
    STALE,
    ItemItemConfig,
    cosine_weights,
    history_rows,
    make_part,
    mix_bucket,
    part_from_tensors,
    part_to_tensors,
    recent_popularity,
    sequence_weights,
    stale_users,
    user_rows,
)

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


def test_history_rows_keep_the_latest_event_per_item():
    data = events([("u", "a", 1), ("u", "b", 2), ("u", "a", 3), ("u", "c", 4)], ["a", "b", "c"])
    x, rec = history_rows(data, data.item.astype(np.int64), 3)
    assert x.toarray().tolist() == [[1, 1, 1]]
    assert rec.toarray().tolist() == [[2, 3, 1]]  # 1 + events back: c latest, a 1 back


def test_sequence_weights_count_nearby_pairs():
    data = events([("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("v", "c", 1)], ["a", "b", "c"])
    c = sequence_weights(data, ItemItemConfig(window=1, backward=0.5, beta=0.0)).toarray()
    assert c.tolist() == [[0, 1, 0], [0.5, 0, 1], [0, 0.5, 0]]  # v's lone event pairs with none
    c2 = sequence_weights(data, ItemItemConfig(window=2, backward=0.0, beta=1.0)).toarray()
    assert c2[0].tolist() == [0, 1, 1] and c2[2].tolist() == [0, 0, 0]
    np.testing.assert_allclose(c2[1], [0, 0, 1])  # b seen once: count^-1 = 1
    # top_k keeps each row's largest entries only (row b: 1 to c beats 0.5 to a).
    pruned = sequence_weights(data, ItemItemConfig(window=1, backward=0.5, beta=0.0, top_k=1))
    assert pruned.toarray().tolist() == [[0, 1, 0], [0, 0, 1], [0, 0.5, 0]]


def test_cosine_weights_are_shrunk_cosines_without_self_pairs(monkeypatch):
    monkeypatch.setattr(cooccurrence, "BLOCK_ENTRIES", 6)  # blocks of 2 rows of 3 items
    # a and b share both their users; c shares one of two with b.
    rows = [("u", "a", 1), ("u", "b", 2), ("v", "a", 3), ("v", "b", 4), ("w", "b", 5),
            ("w", "c", 6), ("x", "c", 7)]  # fmt: skip
    data = events(rows, ["a", "b", "c"])
    cfg = ItemItemConfig(cosine_shrink=1.0, top_k=0)
    got = cosine_weights(data, cfg).toarray()
    n = np.array([2.0, 3.0, 2.0])  # users per item
    co = np.array([[0, 2, 0], [2, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(got, co / (np.sqrt(np.outer(n, n)) + 1.0), rtol=1e-6)
    top1 = cosine_weights(data, ItemItemConfig(cosine_shrink=1.0, top_k=1))
    assert (np.diff(top1.indptr) <= 1).all() and top1[1].toarray().argmax() == 0


def test_recent_popularity_gives_unseen_items_the_newcomer_prior():
    rows = [(f"u{k}", "old", k * DAY) for k in range(100)]
    rows += [(f"w{k}", "hit", 40 * DAY + k * 3600) for k in range(20)]  # arrives day 40
    data = events(rows, ["old", "hit", "never"])
    pop = recent_popularity(data, days=30.0)
    assert pop[0] > pop[1]  # "old" had more events in the last 30 days than "hit"
    # "never" has no event: it gets the newcomer prior ("hit" is the only arrival): its
    # 20 events in its first 30 days against that window's traffic.
    assert pop[2] > 0 and np.isfinite(pop).all()


def test_parts_round_trip_through_tensors_and_give_user_rows():
    cfg = ItemItemConfig(half_life=2.0)
    rng = np.random.default_rng(0)
    sparse = np.where(rng.random((6, 6)) < 0.2, rng.random((6, 6)), 0.0).astype(np.float16)
    dense = rng.random((6, 6)).astype(np.float16)
    mix = np.arange(7, dtype=np.float32)
    for kind, weights in (("sequence", sparse), ("cosine", dense)):
        part = make_part(kind, weights.astype(np.float32), mix, cfg)
        doc = part_to_tensors(part)
        assert "values" in doc and "weights" not in doc  # coordinates, never a dense matrix
        back = part_from_tensors(kind, doc, cfg)
        np.testing.assert_array_equal(back.weights.toarray(), part.weights.toarray())
        np.testing.assert_array_equal(back.mix, mix)
    # A format-4 checkpoint's dense "weights" still load (warm start across the upgrade).
    old = {"mix": doc["mix"], "weights": torch.from_numpy(dense)}
    np.testing.assert_array_equal(part_from_tensors("ease", old, cfg).weights.toarray(), dense)
    # User rows of several parts side by side: binary history x mix(bucket) for "cosine".
    data = events([("u", "a", 1), ("u", "b", 2), ("v", "c", 3)], ["a", "b", "c", "d", "e", "f"])
    cosine = make_part("cosine", dense.astype(np.float32), mix, cfg)
    rows = user_rows([cosine, cosine], data, data.item.astype(np.int64), 6, None, 1.0)
    x, _ = history_rows(data, data.item.astype(np.int64), 6)
    b = mix_bucket(np.diff(x.indptr))
    expected = np.hstack([x.toarray() * mix[b][:, None]] * 2)
    np.testing.assert_allclose(rows.toarray(), expected)


def test_top_per_row_in_bands_equals_one_pass():
    m = sp.random(40, 30, density=0.4, random_state=2, dtype=np.float32, format="csr")
    m.data = np.round(m.data * 4) + 1  # ties, broken by the lower column
    one = top_per_row(m, 3, chunk=10**9).toarray()
    for chunk in (1, 7, 50):
        np.testing.assert_array_equal(top_per_row(m, 3, chunk=chunk).toarray(), one)
    assert (np.count_nonzero(one, axis=1) == np.minimum(3, np.diff(m.indptr))).all()
