"""The meta-learner: an amortised, set-encoder recommender that adapts to a user from a few
interactions in one forward pass (no per-user inner loop), in the spirit of neural
processes / prototypical networks for cold-start recommendation.

Reads and writes no table: training lives in tasks/train.py, which saves checkpoints under
`models/run_date=D/`; this file holds the torch modules and the `Recommender` adapter.

  item tower     v_i = [ID embedding, hidden for items unseen at fit and for a random
                 share of items per training step] + MLP(feature bag + numeric features)
                 b_i = ID bias (initialised at log popularity) + feature bias
  time prior     p_i(t) = the item's log relative popularity in windows before time t
                 (7 days, 30 days, all time); its weight w(n) depends on the support size
                 n, so the adaptation moves away from the (recent) popularity prior as
                 evidence grows. Episodes see p(t) at their own cut time; scoring, at `now`.
  support encoder  the user's most recent events (item vectors + recency bucket + event
                 value) -> value-weighted mean + attention pooling whose query comes from
                 the user's side features and support size -> MLP -> u (residual on the mean)
  score          s(u, i) = u . v_i + b_i + w(n) . p_i(now) + sum over parts of
                 mix_part(bucket) (r_u M_part)_i; as factors:
                 [u, 1, w(n), mix(bucket) r_u ...] . [v_i, b_i, p_i(now), M_:i ...]
  item-item      after training (tasks/models/item_item.py): EASE weights, a sequence
                 co-occurrence matrix and recent popularity (one window) on the training
                 histories, each mixed in with a weight per support-size bucket and for
                 stale users, tuned on held-out users (0 is in the grid, so a part never
                 hurts there). The set encoder alone pulls a 3-film user back to the
                 popularity list; these parts carry the evidence of so few events directly.
  new items      rank k of each list goes to the best item without interactions at fit
                 (exploration_items; tasks.score.ranked_lists).
  loss           softmax over the full catalogue (support items masked) when it has at most
                 `full_softmax_max_items` items, else sampled softmax with logQ correction;
                 query items weighted by their event value.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Self

import fsspec
import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from tasks.learn.features import FeatureEncoder
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender
from tasks.models.item_item import (
    ItemItemConfig,
    ItemItemPart,
    fit_parts,
    history_rows,
    item_feature_matrix,
    mix_bucket,
    part_from_tensors,
    part_to_tensors,
    stale_users,
)

# 2: time prior (item_prior, prior_w); 3: item-item part (item_item.pt); 4: several parts
FORMAT_VERSION = 4
N_BUCKETS = 8  # log2 buckets for support sizes and recency ranks: 0, 1, 2-3, ..., 64+


@dataclass
class MetaConfig:
    """Model and training hyperparameters (saved with every checkpoint)."""

    # -- model
    dim: int = 64  # factor size d of user and item vectors (factors have d + 1 columns)
    hidden: int = 128  # width of the encoder MLP
    dropout: float = 0.1  # in the encoder MLP
    id_dropout: float = 0.25  # share of items whose ID part is hidden per step (cold items)
    max_support: int = 50  # a user is encoded from at most this many most recent events
    # Time prior windows in days (0 = all time before t); () turns the prior off.
    prior_windows_days: tuple[float, ...] = (7.0, 30.0, 0.0)
    prior_snapshots: int = 64  # training cut times are rounded down to this many snapshots
    prior_init: tuple[float, ...] = ()  # initial weight per window (default 0: ID bias rules)
    # -- episodes (tasks/train.py)
    support_sizes: tuple[int, ...] = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50)  # 0 = zero-shot
    first_cut_share: float = 0.8  # episodes whose support is the user's first events
    query_size: int = 32  # query events sampled from everything after the cut
    # -- optimisation
    batch_users: int = 256
    lr: float = 5e-3
    weight_decay: float = 1e-5
    full_softmax_max_items: int = 50_000  # beyond: sampled softmax with logQ correction
    n_negatives: int = 2048  # sampled negatives per step (sampled softmax only)
    # -- validation / early stopping
    val_share: float = 0.15  # latest-arriving users held out for early stopping
    eval_every: int = 25  # steps between validations
    patience: int = 8  # validations without improvement before stopping
    min_count: int = 2  # vocabulary min count of side-feature values
    # -- item-item parts (tasks/models/item_item.py), fitted after training when n_items <=
    # item_item_max_items: dense n_items^2 matrices and factor columns per part kept.
    item_item_kinds: tuple[str, ...] = ("ease", "sequence", "recent")
    item_item_l2: float = 500.0  # EASE
    seq_window: int = 100  # sequence: pairs at most this many events apart
    seq_backward: float = 0.5  # sequence: weight of pairs in reverse order
    seq_beta: float = 0.5  # sequence: row a scaled by count(a)^-beta
    seq_half_life: float = 5.0  # sequence: user row weights halve every this many events
    seq_top_k: int = 256  # sequence: entries kept per row (sparse on disk)
    recent_days: tuple[float, ...] = (7.0, 30.0, 90.0, 365.0)  # recent parts' windows
    stale_days: float = 1.0  # users whose latest event is older have their own mixing
    item_item_max_items: int = 10_000
    # The last slot of each list goes to the best item without interactions at fit (new
    # items) when the list has none: exploration, so new items get their first events.
    new_item_slot: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. the data it ran on)

    @classmethod
    def from_dict(cls, doc: dict) -> MetaConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in doc.items() if k in known}
        for name in (
            "support_sizes",
            "prior_windows_days",
            "prior_init",
            "item_item_kinds",
            "recent_days",
        ):
            if name in kw:
                kw[name] = tuple(kw[name])
        return cls(**kw)

    def item_item(self) -> ItemItemConfig:
        """The item-item parts' settings."""
        return ItemItemConfig(
            kinds=self.item_item_kinds, ease_l2=self.item_item_l2, window=self.seq_window,
            backward=self.seq_backward, beta=self.seq_beta, half_life=self.seq_half_life,
            top_k=self.seq_top_k, recent_days=self.recent_days, stale_days=self.stale_days,
        )  # fmt: skip


def bucket(n: torch.Tensor) -> torch.Tensor:
    """0 -> 0, 1 -> 1, 2-3 -> 2, 4-7 -> 3, ... capped at N_BUCKETS - 1."""
    b = torch.floor(torch.log2(n.float().clamp(min=1))).long() + 1
    return torch.where(n > 0, b, 0).clamp(max=N_BUCKETS - 1)


def seen_mask(sup_items: torch.Tensor, n_items: int) -> torch.Tensor:
    """(B, n_items) bool: True at each user's support items (sup_items -1 padded)."""
    seen = torch.zeros(sup_items.shape[0], n_items, dtype=torch.bool, device=sup_items.device)
    seen.scatter_(1, sup_items.clamp(min=0), sup_items >= 0)
    seen[:, 0] = (sup_items == 0).any(1)  # clamp() pointed the padding at item 0
    return seen


def prior_features(
    ts: np.ndarray, items: np.ndarray, n_items: int, times: np.ndarray, windows_days
) -> np.ndarray:
    """(len(times), n_items, len(windows)) float32: log relative popularity of each item
    among the events with ts in [t - window, t) (window 0 = all of them before t).

    log((count + 1) / (events in the window / n_items + 1)): 0 for an average item, so the
    scale does not drift with the traffic of the period.
    """
    order = np.argsort(ts, kind="stable")
    ts_sorted, it = ts[order], items[order].astype(np.int64)
    times = np.asarray(times, np.int64)
    lows = [np.full_like(times, np.iinfo(np.int64).min) if w <= 0 else times - int(w * 86_400)
            for w in windows_days]  # fmt: skip
    bounds = np.searchsorted(ts_sorted, np.concatenate([times, *lows]), side="left")
    uniq, inv = np.unique(bounds, return_inverse=True)
    # cum[j] = per-item counts of the events before position uniq[j] (cumulative segments).
    seg = np.searchsorted(uniq, np.arange(len(it)), side="right")  # 0..len(uniq)
    counts = np.bincount(seg * n_items + it, minlength=(len(uniq) + 1) * n_items)
    cum = np.cumsum(counts.reshape(len(uniq) + 1, n_items), axis=0)[:-1].astype(np.float32)
    hi = cum[inv[: len(times)]]
    out = np.empty((len(times), n_items, len(windows_days)), np.float32)
    for w in range(len(windows_days)):
        c = hi - cum[inv[(w + 1) * len(times) : (w + 2) * len(times)]]
        total = c.sum(axis=1, keepdims=True)
        out[:, :, w] = np.log((c + 1.0) / (total / max(n_items, 1) + 1.0))
    return out


class FeatureTower(nn.Module):
    """Token bag (n, slots) + numeric (n, m) -> (n, d): mean token embedding + linear."""

    def __init__(self, n_tokens: int, n_numeric: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(max(n_tokens, 1), dim, padding_idx=0)
        self.num = nn.Linear(n_numeric, dim) if n_numeric else None
        nn.init.normal_(self.emb.weight, std=0.1)
        with torch.no_grad():
            self.emb.weight[0].zero_()

    def forward(self, tokens: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        mask = (tokens > 0).unsqueeze(-1)
        out = (self.emb(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return out + self.num(numeric) if self.num is not None else out


class ItemTower(nn.Module):
    """Catalogue vectors and biases from ID embeddings (items seen at fit) + features."""

    def __init__(self, cfg: MetaConfig, n_items: int, n_tokens: int, n_numeric: int):
        super().__init__()
        self.id_emb = nn.Embedding(n_items, cfg.dim)
        self.id_bias = nn.Embedding(n_items, 1)
        self.feat = FeatureTower(n_tokens, n_numeric, cfg.dim)
        self.feat_mlp = nn.Sequential(nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.feat_bias = nn.Linear(cfg.dim, 1)
        nn.init.normal_(self.id_emb.weight, std=0.1)
        nn.init.zeros_(self.id_bias.weight)

    def forward(self, idx, tokens, numeric, id_keep) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(idx), d) vectors and (len(idx),) biases; id_keep (len(idx),) float in {0,1}."""
        f = self.feat_mlp(self.feat(tokens, numeric))
        keep = id_keep.unsqueeze(-1)
        v = keep * self.id_emb(idx) + f
        b = (keep * self.id_bias(idx) + self.feat_bias(f)).squeeze(-1)
        return v, b


class SupportEncoder(nn.Module):
    """A user's support set (+ side features) -> user vector u (d)."""

    def __init__(self, cfg: MetaConfig, n_tokens: int, n_numeric: int):
        super().__init__()
        d = cfg.dim
        self.user_feat = FeatureTower(n_tokens, n_numeric, d)
        self.size_emb = nn.Embedding(N_BUCKETS, d)
        self.pos_emb = nn.Embedding(N_BUCKETS, d)
        self.w_proj = nn.Linear(1, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.mlp = nn.Sequential(
            nn.Linear(3 * d, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, d),
        )  # fmt: skip
        # How far the user moves away from the popularity prior, per support-size bucket:
        # with one event (or none) the evidence is thin and the prior should dominate.
        self.size_gate = nn.Embedding(N_BUCKETS, 1)
        nn.init.ones_(self.size_gate.weight)
        nn.init.normal_(self.size_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def forward(self, sup_vec, sup_w, sup_mask, user_tokens, user_numeric) -> torch.Tensor:
        """sup_vec (B, S, d) most recent first; sup_w, sup_mask (B, S); -> (B, d)."""
        mask = sup_mask.to(sup_vec.dtype)
        count = sup_mask.sum(1)
        ranks = torch.arange(1, sup_vec.shape[1] + 1, device=sup_vec.device)
        h = sup_vec + self.pos_emb(bucket(ranks)) + self.w_proj(sup_w.unsqueeze(-1))
        ctx = self.user_feat(user_tokens, user_numeric) + self.size_emb(bucket(count))
        # Value-weighted mean of the support item vectors: what the user consumed.
        wm = mask * sup_w.clamp(min=0.05)
        mean = (wm.unsqueeze(-1) * sup_vec).sum(1) / wm.sum(1, keepdim=True).clamp(min=1e-6)
        # Attention pooling: which support events matter, given who the user is.
        att = (self.q(ctx).unsqueeze(1) * self.k(h)).sum(-1) / math.sqrt(h.shape[-1])
        att = att.masked_fill(~sup_mask, -1e4).softmax(-1) * mask  # empty set -> all zero
        pooled = (att.unsqueeze(-1) * self.v(h)).sum(1)
        u = mean + self.mlp(torch.cat([pooled, ctx, mean], -1))
        return self.size_gate(bucket(count)) * u


class MetaRecModel(nn.Module):
    """Item tower + support encoder; forward returns (scores, loss)."""

    def __init__(self, cfg: MetaConfig, dims: dict, pop_log: torch.Tensor | None = None):
        super().__init__()
        self.cfg, self.dims = cfg, dims
        n = dims["n_items"]
        self.items = ItemTower(cfg, n, dims["n_item_tokens"], dims["n_item_numeric"])
        self.encoder = SupportEncoder(cfg, dims["n_user_tokens"], dims["n_user_numeric"])
        # Catalogue inputs travel with the state dict, so a checkpoint scores on its own.
        self.register_buffer("item_tokens", torch.zeros(n, dims["item_slots"], dtype=torch.long))
        self.register_buffer("item_numeric", torch.zeros(n, dims["n_item_numeric"]))
        self.register_buffer("has_id", torch.zeros(n))
        self.register_buffer("item_logq", torch.full((n,), -math.log(max(n, 1))))
        n_prior = len(cfg.prior_windows_days)
        self.register_buffer("item_prior", torch.zeros(n, n_prior))  # p_i(now)
        # Weight of the time prior per support-size bucket (0 at first: the ID bias rules).
        self.prior_w = nn.Embedding(N_BUCKETS, n_prior)
        nn.init.zeros_(self.prior_w.weight)
        if cfg.prior_init:
            with torch.no_grad():
                self.prior_w.weight[:] = torch.tensor(cfg.prior_init, dtype=torch.float)
        if pop_log is not None:
            with torch.no_grad():
                self.items.id_bias.weight[:, 0] = pop_log

    def catalogue(self, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors and biases of items idx (all when None); ID dropout while training."""
        if idx is None:
            idx = torch.arange(self.dims["n_items"], device=self.has_id.device)
        keep = self.has_id[idx]
        if self.training and self.cfg.id_dropout > 0:
            keep = keep * (torch.rand_like(keep) >= self.cfg.id_dropout)
        return self.items(idx, self.item_tokens[idx], self.item_numeric[idx], keep)

    def users(self, sup_items, sup_w, user_tokens, user_numeric, item_vecs) -> torch.Tensor:
        """(B, d) user vectors from support item indices (B, S), -1 = padding."""
        mask = sup_items >= 0
        sup_vec = item_vecs[sup_items.clamp(min=0)] * mask.unsqueeze(-1)
        return self.encoder(sup_vec, sup_w * mask, mask, user_tokens, user_numeric)

    def forward(self, batch: dict, targets: torch.Tensor | None = None, target_w=None):
        """batch: sup_items, sup_w (B, S), user_tokens, user_numeric; targets (B, Q), -1 pad.

        Returns (scores (B, n_items) or None in sampled mode, loss or None)."""
        sampled = targets is not None and self.dims["n_items"] > self.cfg.full_softmax_max_items
        if sampled:
            return None, self._sampled_loss(batch, targets, target_w)
        vecs, bias = self.catalogue()
        u = self.users(batch["sup_items"], batch["sup_w"], batch["user_tokens"],
                       batch["user_numeric"], vecs)  # fmt: skip
        scores = u @ vecs.T + bias + self.prior_scores(batch)
        if targets is None:
            return scores, None
        logits = scores.float()
        seen = seen_mask(batch["sup_items"], logits.shape[1])
        logp = logits.masked_fill(seen, -1e9).log_softmax(-1)
        valid = (targets >= 0) & ~seen.gather(1, targets.clamp(min=0))
        w = target_w * valid
        nll = -(logp.gather(1, targets.clamp(min=0)) * w).sum() / w.sum().clamp(min=1e-6)
        return scores, nll

    def prior_weights(self, sup_items: torch.Tensor) -> torch.Tensor:
        """(B, n_windows) weight of each user's time prior, from their support size."""
        return self.prior_w(bucket((sup_items >= 0).sum(1)))

    def prior_scores(self, batch: dict, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n or len(idx)) time-prior logits: per-episode snapshots when the batch has
        them (training: popularity as of each cut), else the prior at `now`."""
        w = self.prior_weights(batch["sup_items"])
        if "snap" in batch:
            table = batch["prior_snap"] if idx is None else batch["prior_snap"][:, idx]
            return (table[batch["snap"]] * w.unsqueeze(1)).sum(-1)
        prior = self.item_prior if idx is None else self.item_prior[idx]
        return w @ prior.T

    def _sampled_loss(self, batch, targets, target_w) -> torch.Tensor:
        """Sampled softmax over the batch's positives + shared negatives, logQ-corrected."""
        n_neg = self.cfg.n_negatives
        neg = torch.multinomial(self.item_logq.exp(), n_neg, replacement=True)
        pos = targets.clamp(min=0)
        idx = torch.cat([batch["sup_items"].clamp(min=0).flatten(), pos.flatten(), neg])
        uniq, inv = idx.unique(return_inverse=True)
        vecs, bias = self.catalogue(uniq)
        n_sup = batch["sup_items"].numel()
        sup_local = inv[:n_sup].view_as(batch["sup_items"]).masked_fill(batch["sup_items"] < 0, -1)
        u = self.users(sup_local, batch["sup_w"], batch["user_tokens"], batch["user_numeric"],
                       vecs)  # fmt: skip
        pos_l, neg_l = inv[n_sup : n_sup + pos.numel()].view_as(pos), inv[n_sup + pos.numel() :]
        logq = self.item_logq[uniq] + math.log(n_neg)
        prior = self.prior_scores(batch, uniq)  # (B, len(uniq))
        pos_s = (u.unsqueeze(1) * vecs[pos_l]).sum(-1) + bias[pos_l] - logq[pos_l]
        pos_s = pos_s + prior.gather(1, pos_l)
        neg_s = u @ vecs[neg_l].T + bias[neg_l] - logq[neg_l] + prior[:, neg_l]  # (B, N)
        hit = neg.unsqueeze(0).unsqueeze(0) == targets.unsqueeze(-1)  # accidental hits
        neg_s = neg_s.unsqueeze(1).expand(-1, pos.shape[1], -1).masked_fill(hit, -1e9)
        logits = torch.cat([pos_s.unsqueeze(-1), neg_s], -1).float()
        w = target_w * (targets >= 0)
        nll = -(logits.log_softmax(-1)[..., 0] * w).sum() / w.sum().clamp(min=1e-6)
        return nll


class MetaLearner(Recommender):
    """The `Recommender` adapter: fit (via tasks/train.py), factors, save/load (no pickle)."""

    name: ClassVar[str] = "metalearner"

    def __init__(
        self,
        config: MetaConfig | None = None,
        *,
        budget_seconds: float = 20.0,
        max_steps: int | None = None,
        init_from: str | Path | None = None,
        seed: int = 0,
        device: str | None = None,
    ):
        self.config = config or MetaConfig()
        self.train_args = dict(budget_seconds=budget_seconds, max_steps=max_steps,
                               init_from=init_from, seed=seed, device=device)  # fmt: skip
        self.model: MetaRecModel | None = None
        self.user_encoder = FeatureEncoder("user_id")
        self.item_encoder = FeatureEncoder("item_id")
        self._item_ids = np.array([], dtype=object)
        self.prior_now: int | None = None  # epoch seconds of the time prior in use
        self.w_scale = 1.0  # event values are log1p(value) / w_scale (mean 1 at fit)
        self.train_info: dict = {}  # how it was trained (budget, steps, device): in config.json
        self.train_log: list[dict] = []
        # Item-item parts (fit_item_item); empty = off (large catalogue, or not fitted yet).
        self.item_item: list[ItemItemPart] = []

    # ---- building -------------------------------------------------------------------
    @classmethod
    def from_data(
        cls,
        config: MetaConfig,
        train: Interactions,
        side: SideFeatures,
        now: dt.datetime | None = None,
    ) -> Self:
        """An untrained model whose catalogue, vocabularies and priors come from the data;
        the time prior is taken at `now` (default: just after the last event)."""
        self = cls(config)
        self._item_ids = np.asarray(train.item_ids).astype(object)
        self.user_encoder = FeatureEncoder.fit(side.users, "user_id", config.min_count)
        self.item_encoder = FeatureEncoder.fit(side.items, "item_id", config.min_count)
        item_x = self.item_encoder.encode(side.items, self._item_ids)
        counts = np.bincount(train.item, minlength=train.n_items).astype(np.float64)
        logw = np.log1p(np.clip(train.weight, 0, None))
        self.w_scale = float(logw.mean()) if len(logw) and logw.mean() > 0 else 1.0
        pop = np.log1p(counts)
        model = MetaRecModel(
            config, self._dims(), torch.tensor(pop - pop.mean(), dtype=torch.float)
        )
        q = (counts + 1.0) ** 0.75  # negative sampling distribution (sampled softmax only)
        model.item_logq.copy_(torch.tensor(np.log(q / q.sum()), dtype=torch.float))
        model.item_tokens.copy_(torch.from_numpy(item_x.tokens))
        model.item_numeric.copy_(torch.from_numpy(item_x.numeric))
        model.has_id.copy_(torch.from_numpy((counts > 0).astype(np.float32)))
        self.model = model
        self.set_time_prior(train, now)
        return self

    def set_time_prior(self, history: Interactions, now: dt.datetime | None = None) -> None:
        """Recompute p_i(now) from `history` (over this model's catalogue): the prior that
        scoring uses; call it to move a fitted model's "now" forward without retraining."""
        if self.model is None or not self.config.prior_windows_days:
            return
        items = self._to_catalogue(history)
        ok = items >= 0
        t = int(now.timestamp()) if now is not None else int(history.ts.max(initial=0)) + 1
        prior = prior_features(history.ts[ok], items[ok], len(self._item_ids), np.array([t]),
                               self.config.prior_windows_days)[0]  # fmt: skip
        self.model.item_prior.copy_(torch.from_numpy(prior))
        self.prior_now = t

    def _dims(self) -> dict:
        return {
            "n_items": len(self._item_ids),
            "n_item_tokens": self.item_encoder.n_tokens,
            "n_item_numeric": self.item_encoder.n_numeric,
            "item_slots": self.item_encoder.n_slots,
            "n_user_tokens": self.user_encoder.n_tokens,
            "n_user_numeric": self.user_encoder.n_numeric,
        }

    def fit(self, train: Interactions, side: SideFeatures, now: dt.datetime) -> Self:
        """Meta-train on `train` within the budget given at construction (tasks/train.py)."""
        from tasks.models.train import train_metalearner  # train.py imports this module

        result = train_metalearner(train, side, self.config, now=now, **self.train_args)
        self.__dict__.update({k: v for k, v in result.model.__dict__.items() if k != "train_args"})
        self.train_log = result.log
        return self

    # ---- item-item parts ---------------------------------------------------------------
    def fit_item_item(self, train: Interactions, side: SideFeatures, val_users: np.ndarray) -> dict:
        """Add the item-item parts (tasks/models/item_item.py) on `train` (this model's
        catalogue), their mixing weights tuned on `val_users` (indices into train's users).
        Returns a summary (weights, gains, seconds)."""
        self.item_item = []
        n_items, cap = len(self._item_ids), self.config.item_item_max_items
        if not 0 < n_items <= cap or len(train) == 0 or not self.config.item_item_kinds:
            return {"skipped": f"{n_items} items (max {cap})"}
        item_f = self.item_factors()
        enc = self.item_encoder.encode(side.items, self._item_ids)
        self.item_item, summary = fit_parts(
            train, val_users, self.config.item_item(),
            lambda hist: self.user_factors(hist, side) @ item_f.T,
            item_feature_matrix(enc.tokens, enc.numeric, self.item_encoder.n_tokens),
        )  # fmt: skip
        return summary

    # ---- factors --------------------------------------------------------------------
    @property
    def item_ids(self) -> np.ndarray:
        return self._item_ids

    def exploration_items(self) -> np.ndarray:
        """Items without interactions at fit (placed by features alone), when the config's
        new_item_slot is on."""
        if not self.config.new_item_slot or self.model is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.model.has_id.cpu().numpy() == 0)

    @torch.no_grad()
    def item_factors(self) -> np.ndarray:
        model = self._ready()
        vecs, bias = model.catalogue()
        parts = [vecs, bias.unsqueeze(-1), model.item_prior]
        base = torch.cat(parts, -1).float().cpu().numpy()
        # Column i of each part's matrix scores item i.
        return np.hstack([base, *(p.weights.T for p in self.item_item)])

    @torch.no_grad()
    def user_factors(self, history: Interactions, side: SideFeatures, block: int = 4096):
        model = self._ready()
        sup_items, sup_w = self.support_arrays(history)
        user_x = self.user_encoder.encode(side.users, history.user_ids)
        vecs, _ = model.catalogue()
        dev = vecs.device
        d = self.config.dim
        width = d + 1 + len(self.config.prior_windows_days)
        n_ii = sum(len(p.weights) for p in self.item_item)
        out = np.empty((history.n_users, width + n_ii), np.float32)
        for lo in range(0, history.n_users, block):  # blocks of users, bounded memory
            sl = slice(lo, lo + block)
            u = model.users(
                torch.from_numpy(sup_items[sl]).to(dev), torch.from_numpy(sup_w[sl]).to(dev),
                torch.from_numpy(user_x.tokens[sl]).to(dev),
                torch.from_numpy(user_x.numeric[sl]).to(dev), vecs,
            )  # fmt: skip
            out[sl, :d] = u.float().cpu().numpy()
            pw = model.prior_weights(torch.from_numpy(sup_items[sl]).to(dev))
            out[sl, d + 1 : width] = pw.float().cpu().numpy()
        out[:, d] = 1.0  # picks up the item bias column of item_factors()
        if n_ii:
            x, rec = history_rows(history, self._to_catalogue(history), len(self._item_ids))
            stale = stale_users(history, self.prior_now, self.config.stale_days)
            b = mix_bucket(np.diff(x.indptr), stale)
            rows = sp.hstack([p.rows(x, rec, b) for p in self.item_item], format="csr")
            out[:, width:] = rows.toarray()
        return out

    def support_arrays(self, history: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """(n_users, max_support) catalogue indices (-1 = none), most recent first, and
        their normalised event weights."""
        items = self._to_catalogue(history)
        if (items < 0).any():  # events on items outside the catalogue take no support slot
            history, items = history.filter(items >= 0), items[items >= 0]
        indptr = history.user_slices()
        pos = indptr[1:, None] - 1 - np.arange(self.config.max_support)[None, :]
        ok = pos >= indptr[:-1, None]
        pos = np.where(ok, pos, 0)
        if len(items) == 0:
            ok[:] = False
            pos[:] = 0
            items, weights = np.zeros(1, np.int64), np.zeros(1, np.float32)
        else:
            weights = self.event_weights(history.weight)
        sup = np.where(ok, items[pos], -1).astype(np.int64)
        w = np.where(sup >= 0, weights[pos], 0.0).astype(np.float32)
        return sup, w

    def event_weights(self, values: np.ndarray) -> np.ndarray:
        """Event values compressed (log1p: counts can be huge) and scaled to mean 1 at fit."""
        return (np.log1p(np.clip(values, 0, None)) / self.w_scale).astype(np.float32)

    def _to_catalogue(self, history: Interactions) -> np.ndarray:
        ids = np.asarray(history.item_ids).astype(str)
        if len(ids) == len(self._item_ids) and np.array_equal(ids, self._item_ids.astype(str)):
            return history.item.astype(np.int64)
        # Another catalogue: map by id; items unknown to the model become -1 (ignored).
        cat = self._item_ids.astype(str)
        order = np.argsort(cat)
        at = np.searchsorted(cat[order], ids).clip(max=max(len(cat) - 1, 0))
        found = len(cat) > 0 and cat[order][at] == ids
        mapped = np.where(found, order[at], -1)
        return mapped[history.item].astype(np.int64)

    def _ready(self) -> MetaRecModel:
        if self.model is None:
            raise RuntimeError("the meta-learner is not fitted")
        self.model.eval()
        return self.model

    # ---- persistence (no pickle) ----------------------------------------------------
    def to_files(self) -> dict[str, bytes]:
        """The checkpoint as named files: state dict, config, catalogue, vocabularies."""
        model = self._ready()
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
        config = {"model": self.name, "format_version": FORMAT_VERSION,
                  "config": asdict(self.config), "dims": self._dims(), "w_scale": self.w_scale,
                  "prior_now": self.prior_now, "training": self.train_info,
                  "item_item": [p.kind for p in self.item_item]}  # fmt: skip
        encoders = {"users": self.user_encoder.to_json(), "items": self.item_encoder.to_json()}
        files = {
            "model.pt": buf.getvalue(),
            "config.json": json.dumps(config, indent=2).encode(),
            "item_ids.json": json.dumps([str(i) for i in self._item_ids]).encode(),
            "encoders.json": json.dumps(encoders).encode(),
        }
        if self.item_item:
            # float16 halves the n_items^2 file; the matrices were rounded to it at fit, so
            # loading gives back the very same factors.
            ii = io.BytesIO()
            torch.save({p.kind: part_to_tensors(p) for p in self.item_item}, ii)
            files["item_item.pt"] = ii.getvalue()
        return files

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, payload in self.to_files().items():
            (folder / name).write_bytes(payload)

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """Rebuild from a folder (local path or fsspec URL) written by save/save_checkpoint."""
        fs, base = fsspec.core.url_to_fs(str(folder))

        def read(name: str) -> bytes:
            with fs.open(f"{base.rstrip('/')}/{name}", "rb") as f:
                return f.read()

        config = json.loads(read("config.json"))
        if config.get("model") != cls.name:
            raise ValueError(f"{folder} is not a {cls.name} checkpoint")
        self = cls(MetaConfig.from_dict(config["config"]))
        self._item_ids = np.array(json.loads(read("item_ids.json")), dtype=object)
        encoders = json.loads(read("encoders.json"))
        self.user_encoder = FeatureEncoder.from_json(encoders["users"])
        self.item_encoder = FeatureEncoder.from_json(encoders["items"])
        self.w_scale = float(config["w_scale"])
        self.prior_now = config.get("prior_now")
        self.train_info = config.get("training", {})
        self.model = MetaRecModel(self.config, config["dims"])
        state = torch.load(io.BytesIO(read("model.pt")), map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        if config.get("item_item"):
            ii = torch.load(io.BytesIO(read("item_item.pt")), map_location="cpu",
                            weights_only=True)  # fmt: skip
            cfg = self.config.item_item()
            self.item_item = [part_from_tensors(k, ii[k], cfg) for k in config["item_item"]]
        return self
