"""The meta-learner's torch modules: item tower, support-set encoder, time prior and loss.

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
score          s(u, i) = u . v_i + b_i + w(n) . p_i(now)
loss           softmax over the full catalogue (support items masked) when it has at most
               `full_softmax_max_items` items, else sampled softmax with logQ correction;
               query items weighted by their event value.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from tasks.learn.features import EncodedFeatures, FeatureEncoder
from tasks.models.metalearner.config import N_BUCKETS, MetaConfig


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
        """(n, d): mean embedding of the non-padding tokens (+ linear numeric part)."""
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


def network_dims(n_items: int, items: FeatureEncoder, users: FeatureEncoder) -> dict:
    """The sizes MetaRecModel is built with (saved in config.json as "dims")."""
    return {
        "n_items": n_items,
        "n_item_tokens": items.n_tokens,
        "n_item_numeric": items.n_numeric,
        "item_slots": items.n_slots,
        "n_user_tokens": users.n_tokens,
        "n_user_numeric": users.n_numeric,
    }


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

    @classmethod
    def untrained(
        cls, cfg: MetaConfig, dims: dict, counts: np.ndarray, item_x: EncodedFeatures
    ) -> MetaRecModel:
        """A fresh network over a catalogue with `counts` training events per item and
        encoded item features `item_x`: ID biases at centred log popularity."""
        pop = np.log1p(counts)
        model = cls(cfg, dims, torch.tensor(pop - pop.mean(), dtype=torch.float))
        q = (counts + 1.0) ** 0.75  # negative sampling distribution (sampled softmax only)
        model.item_logq.copy_(torch.tensor(np.log(q / q.sum()), dtype=torch.float))
        model.item_tokens.copy_(torch.from_numpy(item_x.tokens))
        model.item_numeric.copy_(torch.from_numpy(item_x.numeric))
        model.has_id.copy_(torch.from_numpy((counts > 0).astype(np.float32)))
        return model

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
