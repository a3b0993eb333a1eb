"""The MeLU protocol's metrics: MAE over query ratings; nDCG@5 and Precision@5 *inside*
the query set, with RecBole-MetaRec's relevance rule (the 5 query items with the highest
true ratings are relevant; see `query_metrics` for ties)."""

from __future__ import annotations

import numpy as np

TOP_K = 5


def _tie_mean(pred: np.ndarray, value: np.ndarray) -> np.ndarray:
    """`value` reordered by descending `pred` per row, each run of equal predictions
    replaced by its mean: the expected value at each rank under random tie-breaking."""
    order = np.argsort(-pred, axis=1, kind="stable")
    p = np.take_along_axis(pred, order, 1)
    v = np.take_along_axis(value, order, 1).astype(np.float64)
    n_rows, n_cols = p.shape
    new_group = np.ones_like(p, bool)
    new_group[:, 1:] = p[:, 1:] != p[:, :-1]
    group = np.cumsum(new_group.ravel()) - 1  # runs never cross rows: column 0 starts one
    sums = np.bincount(group, weights=v.ravel())
    sizes = np.bincount(group)
    return (sums / sizes)[group].reshape(n_rows, n_cols)


def query_metrics(
    pred: np.ndarray, truth: np.ndarray, k: int = TOP_K, like: float = 4.0
) -> dict[str, float]:
    """Rating and in-query ranking metrics over users' query sets (rows).

    Args:
        pred, truth: (U, Q) predicted and true ratings of each user's query items.
        k: cut-off of the ranking metrics.
        like: rating from which an item counts as a positive in the click reading.

    Returns:
        mae, rmse over all query ratings, and the per-user means of
        ndcg@k, p@k      RecBole-MetaRec's rating setting: the k query items with the
                         highest true ratings are relevant (always k of them), binary gain,
                         IDCG of k hits. Ties are broken at random in their code (order of
                         torch.topk over a randomly drawn query); here every metric is its
                         exact expectation over random tie-breaking, in the true ratings
                         (at the k-th place) and in the predictions alike, so a constant
                         prediction scores exactly the random-order value 0.5.
        ndcg@k_click, p@k_click  the click reading: relevant = rating >= like, IDCG of
                         min(#relevant, k) hits, a user with no relevant item scores 0
                         (RecBole's convention).
        ndcg@k_graded    gain 2^r - 1 (the graded nDCG of the MeLU paper's family).
    """
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    n_q = truth.shape[1]
    k = min(k, n_q)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    # Relevance probability under random tie-breaking of the true ratings at the k-th place.
    kth = -np.sort(-truth, axis=1)[:, k - 1 : k]
    above = (truth > kth).sum(1, keepdims=True)
    at = (truth == kth).sum(1, keepdims=True)
    rel = np.where(truth > kth, 1.0, np.where(truth == kth, (k - above) / at, 0.0))
    hits = _tie_mean(pred, rel)[:, :k]
    ndcg = (hits * disc).sum(1) / disc.sum()
    click = (truth >= like).astype(np.float64)
    c_hits = _tie_mean(pred, click)[:, :k]
    n_pos = np.minimum(click.sum(1), k).astype(np.int64)
    idcg = np.concatenate([[0.0], np.cumsum(disc)])[n_pos]
    c_ndcg = np.where(n_pos > 0, (c_hits * disc).sum(1) / np.where(n_pos > 0, idcg, 1.0), 0.0)
    gain = 2.0**truth - 1.0
    g_dcg = (_tie_mean(pred, gain)[:, :k] * disc).sum(1)
    g_idcg = (-np.sort(-gain, axis=1)[:, :k] * disc).sum(1)
    g_ndcg = np.where(g_idcg > 0, g_dcg / np.where(g_idcg > 0, g_idcg, 1.0), 0.0)
    err = pred - truth
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        f"ndcg@{k}": float(ndcg.mean()),
        f"p@{k}": float(hits.sum(1).mean() / k),
        f"ndcg@{k}_click": float(c_ndcg.mean()),
        f"p@{k}_click": float(c_hits.sum(1).mean() / k),
        f"ndcg@{k}_graded": float(g_ndcg.mean()),
    }
