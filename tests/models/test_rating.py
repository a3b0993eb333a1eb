"""The rating model and its MeLU-style protocol (tasks.models.rating): user filter, splits,
episodes, metrics on hand-made cases, and the model on real ML-100K users."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from tasks.models.rating import (
    MAX_RATINGS,
    MIN_RATINGS,
    N_QUERY,
    RatingConfig,
    RatingData,
    RatingModel,
    build_rating_data,
    draw_episodes,
    fit_biases,
    predict,
    query_metrics,
    rows_of,
    select_biases,
    split_users,
    support_user_bias,
    train_rating_model,
)


@pytest.fixture(scope="module")
def ml100k(ml100k_tables) -> tuple[pl.DataFrame, RatingData]:
    ratings, users, items = ml100k_tables
    return ratings, build_rating_data(ratings, users, items)


def test_user_filter_and_csr(ml100k) -> None:
    ratings, data = ml100k
    counts = ratings.group_by("user_id").len()
    expected = counts.filter(pl.col("len").is_between(MIN_RATINGS, MAX_RATINGS))
    assert data.n_users == expected.height == 582
    assert ((data.counts >= MIN_RATINGS) & (data.counts <= MAX_RATINGS)).all()
    # The arrays hold exactly the kept users' ratings.
    kept = ratings.filter(pl.col("user_id").is_in(expected["user_id"].implode()))
    assert len(data.item) == kept.height
    u = int(np.flatnonzero(data.user_ids == "2")[0])
    rows = slice(data.indptr[u], data.indptr[u + 1])
    mine = kept.filter(pl.col("user_id") == "2").sort("item_id")
    assert sorted(data.item_ids[data.item[rows]]) == sorted(mine["item_id"].to_list())
    assert data.user_tokens.shape[0] == data.n_users and data.item_tokens.shape[0] == data.n_items


def test_split_is_disjoint_8_1_1(ml100k) -> None:
    _, data = ml100k
    train, val, test = split_users(data.n_users, seed=3)
    assert (len(train), len(val), len(test)) == (466, 58, 58)
    together = np.concatenate([train, val, test])
    assert len(np.unique(together)) == data.n_users
    assert set(split_users(data.n_users, seed=4)[2]) != set(test)  # the seed matters


def test_episodes_follow_the_protocol(ml100k) -> None:
    _, data = ml100k
    users = split_users(data.n_users, seed=0)[2]
    ep = draw_episodes(data, users, np.random.default_rng(0))
    assert ep.query_items.shape == (len(users), N_QUERY)
    n_support = ep.support_mask.sum(1)
    assert (n_support == data.counts[users] - N_QUERY).all()
    for row, u in enumerate(users):
        rows = slice(data.indptr[u], data.indptr[u + 1])
        truth = dict(zip(data.item[rows].tolist(), data.rating[rows].tolist(), strict=True))
        sup = ep.support_items[row][ep.support_mask[row]]
        assert set(sup) | set(ep.query_items[row]) == set(truth)  # support + query = all
        assert not set(sup) & set(ep.query_items[row])  # disjoint
        assert [truth[i] for i in ep.query_items[row]] == ep.query_ratings[row].tolist()
    again = draw_episodes(data, users, np.random.default_rng(0))
    assert (again.query_items == ep.query_items).all()  # seeded
    other = draw_episodes(data, users, np.random.default_rng(1))
    assert (other.query_items != ep.query_items).any()


def test_metrics_hand_made() -> None:
    truth = np.array([[5, 4, 4, 3, 3, 2, 2, 1, 1, 1], [1, 2, 3, 4, 5, 5, 4, 3, 4, 1]], float)
    perfect = query_metrics(truth + 0.1, truth)
    assert perfect["ndcg@5"] == pytest.approx(1.0)
    assert perfect["p@5"] == pytest.approx(1.0)
    assert perfect["ndcg@5_click"] == pytest.approx(1.0)
    assert perfect["ndcg@5_graded"] == pytest.approx(1.0)
    assert perfect["mae"] == pytest.approx(0.1)
    assert query_metrics(truth, truth)["mae"] == 0.0
    # A constant prediction ranks at random: exactly half of the top 5 is expected.
    flat = query_metrics(np.full_like(truth, 3.0), truth)
    assert flat["ndcg@5"] == pytest.approx(0.5) and flat["p@5"] == pytest.approx(0.5)
    # Reversed order: user 0's 5 lowest are outside its top 5 -> 0 hits.
    rev = query_metrics(-truth[:1], truth[:1])
    assert rev["p@5"] == 0.0 and rev["ndcg@5"] == 0.0
    # Ties at the 5th place (two 3s for one relevant slot): even a perfect ranking finds
    # the relevant one only half the time, as in RecBole-MetaRec's topk over the labels.
    tied = np.array([[5, 5, 4, 4, 3, 3, 2, 2, 1, 1]], float)
    disc = 1.0 / np.log2(np.arange(2, 7))
    capped = (disc[:4].sum() + 0.5 * disc[4]) / disc.sum()
    assert query_metrics(tied, tied)["ndcg@5"] == pytest.approx(capped)
    one = np.array([[3, 3, 1, 1, 1, 1, 1, 1, 1, 1]], float)
    m = query_metrics(np.array([[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]], float), one, k=1)
    assert m["p@1"] == pytest.approx(0.5)  # two items tie for the single relevant place
    # Click reading: no rating >= 4 -> 0, as RecBole scores it.
    low = np.array([[3, 3, 2, 2, 1, 1, 1, 1, 1, 1]], float)
    assert query_metrics(np.arange(10.0)[None, ::-1], low)["ndcg@5_click"] == 0.0


def test_model_beats_global_mean_on_held_out_users(ml100k) -> None:
    _, data = ml100k
    train, val_users, test_users = split_users(data.n_users, seed=0)
    rng = np.random.default_rng([0, 1])
    val, test = draw_episodes(data, val_users, rng), draw_episodes(data, test_users, rng)
    cfg = replace(RatingConfig(), max_epochs=6, patience=2, ensemble=1, draws=1)
    model, info = train_rating_model(data, train, val, cfg, seed=0)
    pred = predict(model, test, data)
    mu = data.rating[np.concatenate([np.arange(*data.indptr[[u, u + 1]]) for u in train])]
    base = query_metrics(np.full_like(pred, mu.mean()), test.query_ratings)
    ours = query_metrics(pred, test.query_ratings)
    assert min(info.best_epoch) >= 1
    assert ours["mae"] < base["mae"] - 0.05
    assert ours["ndcg@5"] > 0.55
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    # Deterministic for a seed.
    again, _ = train_rating_model(data, train, val, cfg, seed=0)
    assert np.array_equal(predict(again, test, data), pred)


def test_leave_one_out_bias_matches_a_refit(ml100k) -> None:
    _, data = ml100k
    train = split_users(data.n_users, seed=0)[0][:200]
    fit = fit_biases(data, train, lam_i=2.0, lam_u=5.0)
    u = int(train[0])
    rows = np.arange(data.indptr[u], data.indptr[u + 1])
    loo = fit.loo_item_bias(np.full(len(rows), u), data.item[rows], data.rating[rows])
    # The same sum without user u's ratings (user biases held at the full fit's values).
    rest = rows_of(data, train[1:])
    owner = np.repeat(train[1:], data.counts[train[1:]])
    item = data.item[rest]
    resid = data.rating[rest] - fit.mu - fit.user_bias[owner]
    s_i = np.bincount(item, weights=resid, minlength=data.n_items)
    n_i = np.bincount(item, minlength=data.n_items)
    expected = s_i[data.item[rows]] / (n_i[data.item[rows]] + 2.0)
    assert np.allclose(loo, expected)


def test_untrained_model_is_the_bias_prior(ml100k) -> None:
    _, data = ml100k
    train, val_users, test_users = split_users(data.n_users, seed=0)
    rng = np.random.default_rng([0, 1])
    val, test = draw_episodes(data, val_users, rng), draw_episodes(data, test_users, rng)
    fit = select_biases(data, train, val)
    has_id = np.zeros(data.n_items, bool)
    model = RatingModel(RatingConfig(), data, fit, np.zeros((data.n_items,) * 2), has_id)
    prior = fit.mu + support_user_bias(test, fit.mu, fit.item_bias, fit.lam_u)[:, None]
    prior = np.clip(prior + fit.item_bias[test.query_items], *data.rating_range)
    assert np.allclose(predict(model, test, data), prior, atol=1e-5)
