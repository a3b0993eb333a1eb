"""Which baselines the nightly fits."""

from __future__ import annotations

import numpy as np

from tasks.learn.interactions import SideFeatures
from tasks.serve.candidates import fit_baselines


def test_fit_baselines_without_features_skips_the_feature_models(split):
    few_users = split.train.subset_users(np.arange(50))  # only the choice is tested here
    models = fit_baselines(few_users, None, split.cutoff, names=None)
    assert set(models) == {"most_popular", "recent_popular", "ease", "item_knn", "als"}
    # Asked for by name, a feature model is fitted even without its features.
    named = fit_baselines(few_users, SideFeatures(), split.cutoff, names=("item_features",))
    assert set(named) == {"item_features"}
    assert np.array_equal(named["item_features"].item_ids, few_users.item_ids)
