"""Fitting the item-item parts and tuning their mixing weights
(tasks.models.metalearner.item_item_tuning), by hand and on ML-100K."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tasks.models.metalearner.item_item import (
    N_MIX,
    ItemItemConfig,
    fit_matrix,
    history_rows,
    make_part,
    part_from_tensors,
    part_to_tensors,
)
from tasks.models.metalearner.item_item_tuning import fit_parts, ndcg_rows


def test_ndcg_rows():
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    rel = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 0, 0, 0]], np.float32))
    np.testing.assert_allclose(ndcg_rows(scores, rel, k=2), [1.0, 0.0])
    np.testing.assert_allclose(ndcg_rows(scores[1:], rel[1:], k=4), [1 / np.log2(5)])


def test_fit_parts_on_ml100k_beats_popularity_on_the_tuning_users(ml100k):
    train = ml100k
    pop = np.log1p(np.bincount(train.item, minlength=train.n_items)).astype(np.float32)
    first_ts = train.ts[train.user_slices()[:-1]]
    val = np.argsort(first_ts)[-100:]  # the latest-arriving users, as the trainer picks
    cfg = ItemItemConfig(kinds=("cosine", "sequence", "recent"), window=50)
    parts, summary = fit_parts(train, val, cfg, lambda h: np.tile(pop, (h.n_users, 1)))
    gains = {row["bucket"]: row["ndcg_best"] - row["ndcg_base"] for row in summary["tuning"]}
    assert set(gains) == {0, 1, 2, 3, 4, 5, "stale"}
    # Users with a few events: the item-item evidence is worth > 0.03 NDCG@10 over
    # popularity (measured ~0.05-0.09 on ML-100K), and a matrix part is kept for them.
    assert gains[2] > 0.03 and gains[3] > 0.03
    kinds = {p.kind: p for p in parts}
    assert any(k in kinds and kinds[k].mix[2] > 0 for k in ("cosine", "sequence"))
    assert set(summary["kinds"]) == {"cosine", "sequence", "recent:7", "recent:30", "recent:90",
                                     "recent:365"}  # fmt: skip
    for p in parts:
        assert p.mix.shape == (N_MIX,)
        assert p.weights.shape == ((1,) if p.kind.startswith("recent") else (train.n_items,)) + (
            train.n_items,
        )
    # Saved as float16 tensors (the pruned sequence matrix as coordinates): exact round trip.
    seq = make_part("sequence", fit_matrix("sequence", train, cfg), parts[0].mix, cfg)
    assert (np.diff(seq.weights.indptr) <= cfg.top_k).all()
    doc = part_to_tensors(seq)
    assert "values" in doc and "weights" not in doc  # sparse on disk
    back = part_from_tensors("sequence", doc, cfg)
    np.testing.assert_array_equal(back.weights.toarray(), seq.weights.toarray())
    np.testing.assert_array_equal(back.col_mean, seq.col_mean)
    # The parts as factors: rows @ weights reproduces the tuned evidence.
    part = make_part("sequence", seq.weights, seq.mix, cfg)
    x, rec = history_rows(train, train.item.astype(np.int64), train.n_items)
    rows = part.rows(x[:5], rec[:5], np.full(5, 2))
    assert rows.shape == (5, train.n_items) and np.isfinite((rows @ part.weights).data).all()
