"""The meta-learner's network helpers (tasks.models.metalearner.network): buckets, support
masks, the time prior by hand, and an untrained network's initial state."""

from __future__ import annotations

import numpy as np
import torch

from tasks.learn.features import FeatureEncoder
from tasks.models.metalearner.config import MetaConfig
from tasks.models.metalearner.network import (
    MetaRecModel,
    bucket,
    network_dims,
    prior_features,
    seen_mask,
)


def test_bucket_and_seen_mask():
    assert bucket(torch.tensor([0, 1, 2, 3, 4, 7, 8, 1000])).tolist() == [0, 1, 2, 2, 3, 3, 4, 7]
    seen = seen_mask(torch.tensor([[2, -1], [0, 1], [-1, -1]]), 4)
    assert seen.tolist() == [
        [False, False, True, False], [True, True, False, False], [False] * 4
    ]  # fmt: skip


def test_prior_features_by_hand():
    day = 86_400
    ts = np.array([0, 1, 2, 9, 10]) * day
    items = np.array([0, 0, 1, 2, 2])
    out = prior_features(ts, items, 3, np.array([10 * day, 11 * day]), (7.0, 0.0))
    # At day 10, last 7 days = [3, 10): one event of item 2; all time: 2, 1, 1.
    week = np.log((np.array([0, 0, 1]) + 1) / (1 / 3 + 1))
    alltime = np.log((np.array([2, 1, 1]) + 1) / (4 / 3 + 1))
    np.testing.assert_allclose(out[0, :, 0], week, rtol=1e-6)
    np.testing.assert_allclose(out[0, :, 1], alltime, rtol=1e-6)
    np.testing.assert_allclose(
        out[1, :, 1], np.log((np.array([2, 1, 2]) + 1) / (5 / 3 + 1)), rtol=1e-5
    )


def test_untrained_network_starts_at_log_popularity():
    counts = np.array([0.0, 1.0, 3.0, 7.0])
    users, items = FeatureEncoder("user_id"), FeatureEncoder("item_id")
    item_x = items.encode(None, np.array(["i0", "i1", "i2", "i3"], dtype=object))
    torch.manual_seed(0)
    model = MetaRecModel.untrained(MetaConfig(dim=4), network_dims(4, items, users), counts, item_x)
    pop = np.log1p(counts)
    bias = model.items.id_bias.weight[:, 0].detach().numpy()
    np.testing.assert_allclose(bias, pop - pop.mean(), rtol=1e-6)
    assert model.has_id.tolist() == [0.0, 1.0, 1.0, 1.0]  # no training event: no ID part
    q = (counts + 1.0) ** 0.75
    np.testing.assert_allclose(model.item_logq.numpy(), np.log(q / q.sum()), rtol=1e-5)
    assert not model.prior_w.weight.any()  # the time prior starts switched off
