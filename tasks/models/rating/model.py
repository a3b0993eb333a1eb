"""The rating network: the frozen bias prior plus a correction learned from the support set.

support        residuals z_j = r_j - r0_j of the support pairs
correction     fixed kNN term: sum_j s+(q, j) z_j / sum_j s+(q, j), s = item-item cosine
               of the training users' residuals (the item-kNN baseline's signal);
               learned attention of the query item over the support (logits q(v_q).k(v_j)
               + a s(q, j), plus a null slot with z = 0) -> sum_j att_j z_j;
               user vector u = W sum_j z_j v_j / n + MLP(..., user side features);
               r = r0 + g1 knn + g2 att_z + g3 u . v_q + MLP([u * v_q, u, v_q, knn, att_z,
               b_u, log n]); g and the MLP's output layer start at zero, so training starts
               AT the prior. Item vectors v = ID embedding (zeroed for items no training
               user rated) + MLP(genre tokens + year).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tasks.models.metalearner.network import FeatureTower
from tasks.models.rating.data import Episodes, RatingData
from tasks.models.rating.prior import BiasFit


@dataclass
class RatingConfig:
    """Model and training hyperparameters."""

    dim: int = 16
    hidden: int = 32
    dropout: float = 0.1
    id_dropout: float = 0.1  # share of items whose ID part is hidden per step
    support_keep_min: float = 0.5  # each training episode keeps U(min, 1) of its support
    draws: int = 2  # support/query draws per training user per epoch (4: no better)
    lr: float = 1e-3  # 3e-3 stopped earlier and scored worse on val MAE
    weight_decay: float = 1e-4
    batch_users: int = 32
    max_epochs: int = 60
    patience: int = 8  # epochs without a better validation MSE before stopping
    loss: str = "l1"  # "mse" or "l1"; l1 (the MAE the table reports) won on val MAE
    stop_on: str = "mae"  # validation criterion of early stopping: "mse" or "mae"
    sim_shrink: float = 50.0  # shrinkage of the fixed residual item-item similarity
    sim_folds: int = 5  # training episodes read similarities fitted without their user
    use_sim: bool = True  # False: no fixed similarity (ablation)
    ensemble: int = 3  # independently initialised models whose predictions are averaged
    # One thread: the batches are tiny, and on the team's shared 2 cores two torch threads
    # spin against other jobs (20x slower runs were seen).
    threads: int = 1


class RatingModel(nn.Module):
    """Bias prior (frozen) + a learned correction from the support set; module docstring."""

    def __init__(self, cfg: RatingConfig, data: RatingData, fit: BiasFit, sim: np.ndarray,
                 has_id: np.ndarray):  # fmt: skip
        super().__init__()
        d = cfg.dim
        self.cfg, self.mu, self.lam_u = cfg, fit.mu, fit.lam_u
        self.id_emb = nn.Embedding(data.n_items, d)
        nn.init.normal_(self.id_emb.weight, std=0.05)
        self.item_feat = FeatureTower(data.n_item_tokens, data.item_numeric.shape[1], d)
        self.item_mlp = nn.Sequential(nn.GELU(), nn.Linear(d, d))
        self.user_feat = FeatureTower(data.n_user_tokens, data.user_numeric.shape[1], d)
        self.taste = nn.Linear(d, d)
        self.encoder = nn.Sequential(
            nn.Linear(3 * d + 1, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, d),
        )  # fmt: skip
        self.q, self.k = nn.Linear(d, d), nn.Linear(d, d)
        self.sim_scale = nn.Parameter(torch.tensor(1.0))
        self.null_logit = nn.Parameter(torch.tensor(0.0))
        self.head = nn.Sequential(
            nn.Linear(3 * d + 4, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, 1),
        )  # fmt: skip
        # The correction starts at zero: the model starts AT the bias prior.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.gain = nn.Parameter(torch.zeros(3))  # fixed kNN, learned attention, u . v
        self.register_buffer("item_bias", torch.from_numpy(fit.item_bias.astype(np.float32)))
        self.register_buffer("sim", torch.from_numpy(sim.astype(np.float32)))
        self.register_buffer("item_tokens", torch.from_numpy(data.item_tokens))
        self.register_buffer("item_numeric", torch.from_numpy(data.item_numeric))
        self.register_buffer("user_tokens", torch.from_numpy(data.user_tokens))
        self.register_buffer("user_numeric", torch.from_numpy(data.user_numeric))
        self.register_buffer("has_id", torch.from_numpy(has_id.astype(np.float32)))

    def items(self, idx: torch.Tensor) -> torch.Tensor:
        """Vectors (..., d) of items idx (padding -1 reads item 0)."""
        idx = idx.clamp(min=0)
        keep = self.has_id[idx]
        if self.training and self.cfg.id_dropout > 0:
            keep = keep * (torch.rand_like(keep) >= self.cfg.id_dropout)
        flat = idx.reshape(-1)
        f = self.item_mlp(self.item_feat(self.item_tokens[flat], self.item_numeric[flat]))
        return keep.unsqueeze(-1) * self.id_emb(idx) + f.reshape(*idx.shape, -1)

    def forward(
        self,
        users: torch.Tensor,
        sup_items: torch.Tensor,
        sup_ratings: torch.Tensor,
        sup_mask: torch.Tensor,
        query_items: torch.Tensor,
        sup_bias: torch.Tensor | None = None,
        query_bias: torch.Tensor | None = None,
        sims: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted ratings (U, Q) of the query items, given each user's support pairs.

        sup_bias / query_bias override the frozen item biases per pair (training passes
        leave-one-out biases); by default they are read from the fitted prior.
        """
        mask = sup_mask.float()
        n = mask.sum(1)
        sidx, qidx = sup_items.clamp(min=0), query_items.clamp(min=0)
        sb = self.item_bias[sidx] if sup_bias is None else sup_bias
        qb = self.item_bias[qidx] if query_bias is None else query_bias
        resid = (sup_ratings - self.mu - sb) * mask
        b_u = resid.sum(1) / (n + self.lam_u)
        z = (resid - b_u.unsqueeze(1)) * mask  # what the bias prior leaves unexplained
        base = self.mu + b_u.unsqueeze(1) + qb
        # kNN with the fixed residual similarity (the baseline's signal, all positive sims).
        if sims is None:
            sims = self.sim[qidx.unsqueeze(2), sidx.unsqueeze(1)]
        s = sims * mask.unsqueeze(1)  # (U, Q, S)
        sp_ = s.clamp(min=0)
        knn = (sp_ * z.unsqueeze(1)).sum(-1) / (sp_.sum(-1) + 1e-6)
        # Learned attention of each query item over the support, with a null slot (z = 0)
        # that lets a query item with no related support item stay at the prior.
        sv, qv = self.items(sup_items), self.items(query_items)
        d = sv.shape[-1]
        logit = torch.einsum("uqd,usd->uqs", self.q(qv), self.k(sv)) / math.sqrt(d)
        logit = (logit + self.sim_scale * 10 * s).masked_fill(~sup_mask.unsqueeze(1), -1e4)
        null = self.null_logit.expand(*logit.shape[:2], 1)
        att = torch.cat([null, logit], -1).softmax(-1)[..., 1:]
        att_z = (att * z.unsqueeze(1)).sum(-1)
        # User vector: the residual-weighted item mean (taste) refined by an MLP.
        nn_ = n.clamp(min=1).unsqueeze(1)
        taste = self.taste((z.unsqueeze(-1) * sv).sum(1) / nn_)
        mean = (mask.unsqueeze(-1) * sv).sum(1) / nn_
        ctx = self.user_feat(self.user_tokens[users], self.user_numeric[users])
        u = taste + self.encoder(torch.cat([taste, mean, ctx, torch.log1p(n).unsqueeze(1)], -1))
        uq = u.unsqueeze(1).expand_as(qv)
        dot = (uq * qv).sum(-1)
        extra = torch.stack(
            [
                knn,
                att_z,
                b_u.unsqueeze(1).expand_as(knn),
                torch.log1p(n).unsqueeze(1).expand_as(knn),
            ],
            -1,
        )
        mlp = self.head(torch.cat([uq * qv, uq, qv, extra], -1)).squeeze(-1)
        g = self.gain
        return base + g[0] * knn + g[1] * att_z + g[2] * dot + mlp


def episode_tensors(ep: Episodes) -> tuple[torch.Tensor, ...]:
    """The model's positional inputs (users, support items, ratings, mask, query items)."""
    return (
        torch.from_numpy(ep.users),
        torch.from_numpy(ep.support_items),
        torch.from_numpy(ep.support_ratings),
        torch.from_numpy(ep.support_mask),
        torch.from_numpy(ep.query_items),
    )


class RatingEnsemble(nn.Module):
    """The mean prediction of independently initialised rating models."""

    def __init__(self, models: list[RatingModel]):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        """The members' mean prediction (same inputs as RatingModel.forward)."""
        return torch.stack([m(*args) for m in self.models]).mean(0)


def predict(model: nn.Module, ep: Episodes, data: RatingData) -> np.ndarray:
    """Query-rating predictions (U, Q), clipped to the data's rating scale."""
    model.eval()
    with torch.no_grad():
        out = model(*episode_tensors(ep)).numpy()
    return np.clip(out, *data.rating_range)
