"""The rating model's closed-form prior r0 = mu + b_i + b_u (also the melu benchmark's
"support mean + item bias" baseline) and the fixed residual item-item similarity.

b_i is fitted in closed form (alternating, shrunk) on the training users' ratings;
b_u = sum_j (r_j - mu - b_j) / (n + lam_u) from the support; lam_i, lam_u are picked on
the validation users' MAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from tasks.models.rating.data import Episodes, RatingData, rows_of

ITEM_SHRINK = (0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0)
USER_SHRINK = (0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0)


@dataclass(frozen=True)
class BiasFit:
    """Alternating least-squares biases of the training users' ratings.

    b_i = sum_u (r_ui - mu - b_u) / (n_i + lam_i); `item_sum` / `item_n` are that sum and
    count, kept so a training user's own rating can be taken out again (leave-one-out).
    """

    mu: float
    item_bias: np.ndarray  # (n_items,)
    item_sum: np.ndarray  # (n_items,)
    item_n: np.ndarray  # (n_items,)
    user_bias: np.ndarray  # (n_users,) the training users' biases inside item_sum, 0 elsewhere
    lam_i: float
    lam_u: float

    def loo_item_bias(
        self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray
    ) -> np.ndarray:
        """b_i of (users, items) pairs refitted without that user's own rating, which
        every training pair has in it (else the network learns on too-small residuals)."""
        own = ratings - self.mu - self.user_bias[users]
        den = self.item_n[items] - 1 + self.lam_i
        num = self.item_sum[items] - own
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def fit_biases(
    data: RatingData, users: np.ndarray, lam_i: float, lam_u: float, iters: int = 3
) -> BiasFit:
    """Item biases from `users`' ratings, alternating with their user biases (lam_u = inf:
    no user bias, the item-mean model)."""
    rows = rows_of(data, users)
    owner = np.repeat(np.arange(len(users)), data.counts[users])
    item, r = data.item[rows], data.rating[rows].astype(np.float64)
    mu = float(data.rating[rows].mean())
    n_i = np.bincount(item, minlength=data.n_items).astype(np.float64)
    b_u = np.zeros(len(users))
    for _ in range(iters):
        b_u_used = b_u  # the user biases inside s_i (what a leave-one-out takes out again)
        s_i = np.bincount(item, weights=r - mu - b_u[owner], minlength=data.n_items)
        b_i = s_i / np.maximum(n_i + lam_i, 1e-9)  # unrated items (0 / 0 at lam 0) get 0
        if lam_u == np.inf:
            break
        b_u = np.bincount(owner, weights=r - mu - b_i[item]) / (data.counts[users] + lam_u)
    full_u = np.zeros(data.n_users)
    full_u[users] = b_u_used
    return BiasFit(mu, b_i, s_i, n_i, full_u, lam_i, lam_u)


def support_user_bias(ep: Episodes, mu: float, b_i: np.ndarray, lam_u: float) -> np.ndarray:
    """Each user's bias from their support pairs: shrunk mean residual."""
    mask = ep.support_mask
    resid = np.where(mask, ep.support_ratings - mu - b_i[ep.support_items.clip(0)], 0.0)
    return resid.sum(1) / (mask.sum(1) + lam_u)


def select_biases(data: RatingData, train: np.ndarray, val: Episodes) -> BiasFit:
    """The bias model mu + b_u(support) + b_i whose shrinkages give the lowest val MAE."""
    lo, hi = data.rating_range

    def val_mae(fit: BiasFit) -> float:
        b_u = support_user_bias(val, fit.mu, fit.item_bias, fit.lam_u)
        pred = fit.mu + b_u[:, None] + fit.item_bias[val.query_items]
        return float(np.abs(np.clip(pred, lo, hi) - val.query_ratings).mean())

    fits = [fit_biases(data, train, a, b) for a in ITEM_SHRINK for b in USER_SHRINK]
    return min(fits, key=val_mae)


def residual_matrix(data: RatingData, users: np.ndarray, fit: BiasFit) -> sp.csr_matrix:
    """(users, items) residuals r - mu - b_u - b_i of the training users."""
    rows = rows_of(data, users)
    owner = np.repeat(np.arange(len(users)), data.counts[users])
    item, r = data.item[rows], data.rating[rows].astype(np.float64)
    b_i = fit.item_bias
    b_u = np.bincount(owner, weights=r - fit.mu - b_i[item]) / (data.counts[users] + fit.lam_u)
    z = r - fit.mu - b_u[owner] - b_i[item]
    return sp.csr_matrix((z, (owner, item)), shape=(len(users), data.n_items))


def item_similarity(z: sp.csr_matrix, shrink: float) -> np.ndarray:
    """Item-item cosine of residual columns over co-rating users, shrunk by n/(n + shrink)."""
    zc = z.tocsc()
    nz = (zc != 0).astype(np.float64)
    dot = (zc.T @ zc).toarray()
    sq = ((zc.multiply(zc)).T @ nz).toarray()  # sum_u z_ui^2 over co-raters of i and j
    co = (nz.T @ nz).toarray()
    sim = dot / np.sqrt(np.maximum(sq * sq.T, 1e-12))
    sim *= co / (co + shrink)
    np.fill_diagonal(sim, 0.0)
    return sim
