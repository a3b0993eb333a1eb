"""Training the rating model on episodes of the training users.

L1 loss over the query items of episodes drawn from the training users (several draws per
user per epoch, random support sub-sampling); a training pair's b_i is refitted without
that user's own rating (leave-one-out) and its similarities come from the other folds of
training users, so the residuals it learns from look like a new user's. Early stopping on
the validation users' MAE (their one fixed draw); an average of 3 inits; predictions
clipped to the rating scale.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from tasks.models.rating.data import Episodes, RatingData, draw_episodes, rows_of
from tasks.models.rating.model import RatingConfig, RatingEnsemble, RatingModel, episode_tensors
from tasks.models.rating.prior import BiasFit, item_similarity, residual_matrix, select_biases


@dataclass
class TrainInfo:
    """What one training run did (per ensemble member for epochs / best epoch / MSE)."""

    epochs: list[int]
    best_epoch: list[int]
    best_val_mse: list[float]
    seconds: float
    bias_shrink: tuple[float, float]


def _train_one(
    cfg: RatingConfig,
    data: RatingData,
    train: np.ndarray,
    fit: BiasFit,
    sim: np.ndarray,
    fold_sims: list[np.ndarray],
    fold_of: np.ndarray,
    has_id: np.ndarray,
    val: Episodes,
    seed: int,
) -> tuple[RatingModel, int, int, float]:
    """One ensemble member: (model at its best val criterion, epochs, best epoch, best)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = RatingModel(cfg, data, fit, sim, has_id)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val_t, val_y = episode_tensors(val), torch.from_numpy(val.query_ratings)
    best, best_epoch, best_state, epoch = math.inf, 0, copy.deepcopy(model.state_dict()), 0
    lossf = nn.functional.l1_loss if cfg.loss == "l1" else nn.functional.mse_loss
    for epoch in range(1, cfg.max_epochs + 1):
        users = np.concatenate([rng.permutation(train) for _ in range(cfg.draws)])
        ep = draw_episodes(data, users, rng)
        # Varying support sizes: each episode keeps a random share U(keep_min, 1) of it.
        keep_p = rng.uniform(cfg.support_keep_min, 1.0, (len(users), 1))
        mask = ep.support_mask & (rng.random(ep.support_items.shape) < keep_p)
        owner = users[:, None]
        sb = fit.loo_item_bias(owner, ep.support_items.clip(0), ep.support_ratings)
        qb = fit.loo_item_bias(owner, ep.query_items, ep.query_ratings)
        tensors = (
            torch.from_numpy(users),
            torch.from_numpy(np.where(mask, ep.support_items, -1)),
            torch.from_numpy(ep.support_ratings * mask),
            torch.from_numpy(mask),
            torch.from_numpy(ep.query_items),
            torch.from_numpy((sb * mask).astype(np.float32)),
            torch.from_numpy(qb.astype(np.float32)),
            torch.from_numpy(
                _fold_sims(fold_sims, fold_of[users], ep.query_items, ep.support_items.clip(0))
            ),
        )
        y = torch.from_numpy(ep.query_ratings)
        model.train()
        for lo in range(0, len(users), cfg.batch_users):
            sl = slice(lo, lo + cfg.batch_users)
            loss = lossf(model(*(t[sl] for t in tensors)), y[sl])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(*val_t).clamp(*data.rating_range)
            err = pred - val_y
            val_mse = float((err.abs() if cfg.stop_on == "mae" else err**2).mean())
        if val_mse < best - 1e-5:
            best, best_epoch, best_state = val_mse, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, epoch, best_epoch, best


def _fold_sims(
    sims: list[np.ndarray], fold: np.ndarray, q: np.ndarray, s: np.ndarray
) -> np.ndarray:
    """(U, Q, S) similarities of query and support items, from each user's fold matrix."""
    out = np.empty((len(fold), q.shape[1], s.shape[1]), np.float32)
    for f, m in enumerate(sims):
        rows = np.flatnonzero(fold == f)
        out[rows] = m[q[rows][:, :, None], s[rows][:, None, :]]
    return out


def train_rating_model(
    data: RatingData,
    train_users: np.ndarray,
    val: Episodes,
    cfg: RatingConfig | None = None,
    seed: int = 0,
) -> tuple[nn.Module, TrainInfo]:
    """Fit the bias prior (shrinkages picked on `val`'s MAE) and the correction network on
    episodes of `train_users` (re-drawn every epoch), early-stopped on `val`'s MSE.

    Deterministic on CPU for a given seed. Returns the model (an ensemble when
    cfg.ensemble > 1) at its best validation MSE.
    """
    cfg = cfg or RatingConfig()
    t0 = time.perf_counter()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.threads)
    train_users = np.asarray(train_users, np.int64)
    fit = select_biases(data, train_users, val)
    z = residual_matrix(data, train_users, fit)
    sim = item_similarity(z, cfg.sim_shrink) if cfg.use_sim else np.zeros((data.n_items,) * 2)
    # A training user's own residuals inflate the similarity between the items they rated
    # in the direction of their own residual product: a leak into the kNN term. Training
    # episodes therefore read similarities fitted on the other folds of training users.
    fold_of = np.zeros(data.n_users, np.int64)
    fold_of[train_users] = (
        np.random.default_rng([seed, 7]).permutation(len(train_users)) % cfg.sim_folds
    )
    fold_sims = [
        item_similarity(z[fold_of[train_users] != f], cfg.sim_shrink) if cfg.use_sim else sim
        for f in range(cfg.sim_folds)
    ]
    has_id = np.zeros(data.n_items, bool)
    has_id[data.item[rows_of(data, train_users)]] = True
    runs = [
        _train_one(
            cfg, data, train_users, fit, sim, fold_sims, fold_of, has_id, val, seed * 1000 + m
        )
        for m in range(cfg.ensemble)
    ]
    model = runs[0][0] if cfg.ensemble == 1 else RatingEnsemble([r[0] for r in runs])
    model.eval()
    info = TrainInfo([r[1] for r in runs], [r[2] for r in runs], [r[3] for r in runs],
                     time.perf_counter() - t0, (fit.lam_i, fit.lam_u))  # fmt: skip
    return model, info


def config_dict(cfg: RatingConfig) -> dict:
    """The config as a plain dict (for reports)."""
    return asdict(cfg)
