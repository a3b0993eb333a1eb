"""An amortised meta-learned rating model and the MeLU-style user-cold-start protocol it is
measured on (explicit ratings, one user = one task).

Protocol (MeLU, Lee et al. KDD 2019, as re-implemented by RecBole-MetaRec):
  users     those with 13..100 ratings (both ends included); a seeded permutation of them
            is cut 8:1:1 into train / validation / test users (disjoint)
  task      per user, 10 rated items drawn at random are the query set, the rest the
            support set; the model sees the support (item, rating) pairs and predicts the
            query ratings
  metrics   MAE over query ratings; nDCG@5 and Precision@5 *inside* the query set, with
            RecBole-MetaRec's relevance rule: the 5 query items with the highest true
            ratings are relevant (see `query_metrics` for ties)

Model (one forward pass per user, no inner-loop fine-tuning, like tasks/models/metalearner):
  item tower     v_i = ID embedding (zeroed for items no training user rated) + MLP(genre
                 tokens + year); b_i = ID bias + feature bias
  support        h_j = v_j + W (r_j - mu) for each support pair (j, r_j); pooled by a plain
                 mean, a rating-centred mean sum_j (r_j - r_u) v_j / n (the taste
                 direction) and attention whose query is the user's side features (age,
                 gender, occupation, zip region) + support size -> MLP -> u
  user bias      b_u = sum_j (r_j - mu - b_j) / (n + lambda) (lambda learned) + w . u
  rating         r(u, i) = mu + b_u + b_i + u . v_i + MLP([u * v_i, u, v_i])
  training       MSE over the query items of episodes drawn from the training users only,
                 support/query re-drawn every epoch; early stopping on the validation
                 users' MSE (their one fixed draw); predictions clipped to the rating scale
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from tasks.features import FeatureEncoder
from tasks.models.metalearner import FeatureTower

MIN_RATINGS, MAX_RATINGS = 13, 100  # the MeLU user filter
N_QUERY = 10  # query items per task
TOP_K = 5


# ---- data and protocol -------------------------------------------------------------------
@dataclass(frozen=True)
class RatingData:
    """The kept users' ratings as CSR-like arrays plus encoded side features.

    `item[indptr[u]:indptr[u + 1]]` are user u's rated items (indices into `item_ids`),
    `rating[...]` the ratings. Side-feature rows align with `user_ids` / `item_ids`.
    """

    user_ids: np.ndarray  # (n_users,) str
    item_ids: np.ndarray  # (n_items,) str
    indptr: np.ndarray  # (n_users + 1,) int64
    item: np.ndarray  # (nnz,) int64
    rating: np.ndarray  # (nnz,) float32
    user_tokens: np.ndarray  # (n_users, slots) int64
    user_numeric: np.ndarray  # (n_users, m) float32
    item_tokens: np.ndarray  # (n_items, slots) int64
    item_numeric: np.ndarray  # (n_items, m) float32
    n_user_tokens: int
    n_item_tokens: int
    rating_range: tuple[float, float]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)


def build_rating_data(
    ratings: pl.DataFrame,
    users: pl.DataFrame | None,
    items: pl.DataFrame | None,
    min_ratings: int = MIN_RATINGS,
    max_ratings: int = MAX_RATINGS,
) -> RatingData:
    """Keep users with min_ratings..max_ratings ratings (inclusive) and encode side features.

    Args:
        ratings: user_id, item_id (strings), value (the rating); other columns ignored.
        users: side table keyed by user_id (or None); items: keyed by item_id (or None).
        min_ratings, max_ratings: the user filter (MeLU: 13..100).

    Returns:
        RatingData whose catalogue is every item in `items` plus every rated item.
    """
    counts = ratings.group_by("user_id").len()
    keep = counts.filter(pl.col("len").is_between(min_ratings, max_ratings))["user_id"]
    kept = ratings.filter(pl.col("user_id").is_in(keep.implode()))
    item_ids = kept["item_id"].unique()
    if items is not None:
        item_ids = pl.concat([item_ids, items["item_id"].cast(pl.String)]).unique()
    item_ids = np.sort(item_ids.to_numpy().astype(str))
    user_ids = np.sort(keep.to_numpy().astype(str))
    frame = kept.select(
        pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), "value"
    ).sort("user_id", "item_id")
    user = np.searchsorted(user_ids, frame["user_id"].to_numpy().astype(str))
    item = np.searchsorted(item_ids, frame["item_id"].to_numpy().astype(str)).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=len(user_ids)))])
    u_enc = FeatureEncoder.fit(users, "user_id")
    i_enc = FeatureEncoder.fit(items, "item_id")
    u_feat, i_feat = u_enc.encode(users, user_ids), i_enc.encode(items, item_ids)
    value = frame["value"].to_numpy().astype(np.float32)
    return RatingData(
        user_ids=user_ids,
        item_ids=item_ids,
        indptr=indptr.astype(np.int64),
        item=item,
        rating=value,
        user_tokens=u_feat.tokens,
        user_numeric=u_feat.numeric,
        item_tokens=i_feat.tokens,
        item_numeric=i_feat.numeric,
        n_user_tokens=u_enc.n_tokens,
        n_item_tokens=i_enc.n_tokens,
        rating_range=(float(value.min()), float(value.max())),
    )


def split_users(
    n_users: int, seed: int, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint (train, val, test) user indices: a seeded permutation cut by `ratios`.

    The sizes follow RecBole's `_calcu_split_ids`: val and test get floor(ratio * n), the
    training part the rest.
    """
    order = np.random.default_rng(seed).permutation(n_users)
    total = sum(ratios)
    n_val, n_test = (int(r / total * n_users) for r in ratios[1:])
    n_train = n_users - n_val - n_test
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


@dataclass(frozen=True)
class Episodes:
    """One support/query draw for a block of users (padding: item -1, rating 0)."""

    users: np.ndarray  # (U,) indices into RatingData.user_ids
    support_items: np.ndarray  # (U, S) int64
    support_ratings: np.ndarray  # (U, S) float32
    query_items: np.ndarray  # (U, Q) int64
    query_ratings: np.ndarray  # (U, Q) float32

    @property
    def support_mask(self) -> np.ndarray:
        return self.support_items >= 0


def draw_episodes(
    data: RatingData, users: np.ndarray, rng: np.random.Generator, n_query: int = N_QUERY
) -> Episodes:
    """Per user: `n_query` rated items drawn uniformly as the query, the rest the support.

    Every user must have more than `n_query` ratings. Vectorised: each rating gets a random
    key, ratings are ordered by (user, key) and the first n_query of each user are its query.
    """
    users = np.asarray(users, np.int64)
    starts, counts = data.indptr[users], data.counts[users]
    if (counts <= n_query).any():
        raise ValueError(f"every user needs more than {n_query} ratings")
    owner = np.repeat(np.arange(len(users)), counts)
    pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    src = np.repeat(starts, counts) + pos  # row of each rating in data.item / data.rating
    order = np.lexsort((rng.random(len(src)), owner))
    src = src[order]  # users stay in blocks; within a block, a random order
    rank = pos  # the block layout is unchanged by the in-block shuffle
    is_q = rank < n_query
    s_max = int((counts - n_query).max())
    sup_items = np.full((len(users), s_max), -1, np.int64)
    sup_ratings = np.zeros((len(users), s_max), np.float32)
    sup_items[owner[~is_q], rank[~is_q] - n_query] = data.item[src[~is_q]]
    sup_ratings[owner[~is_q], rank[~is_q] - n_query] = data.rating[src[~is_q]]
    q_items = data.item[src[is_q]].reshape(len(users), n_query)
    q_ratings = data.rating[src[is_q]].reshape(len(users), n_query)
    return Episodes(users, sup_items, sup_ratings, q_items, q_ratings)


# ---- metrics -----------------------------------------------------------------------------
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


# ---- model -------------------------------------------------------------------------------
@dataclass
class RatingConfig:
    """Model and training hyperparameters."""

    dim: int = 16  # 16 beat 32 on the validation users' MAE (0.757 vs 0.767, seeds 0-1)
    hidden: int = 32
    dropout: float = 0.1
    id_dropout: float = 0.1  # share of items whose ID part is hidden per step
    support_dropout: float = 0.1  # share of support pairs hidden per training episode
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_users: int = 32
    max_epochs: int = 80
    patience: int = 10  # epochs without a better validation MSE before stopping
    bias_shrink_init: float = 5.0  # initial lambda of the support-based user bias
    # One thread: the batches are tiny, and on the team's shared 2 cores two torch threads
    # spin against other jobs (20x slower runs were seen).
    threads: int = 1


class RatingModel(nn.Module):
    """Item tower + support encoder + rating head; see the module docstring."""

    def __init__(self, cfg: RatingConfig, data: RatingData, mu: float, has_id: np.ndarray):
        super().__init__()
        d = cfg.dim
        self.cfg, self.mu = cfg, mu
        self.id_emb = nn.Embedding(data.n_items, d)
        self.id_bias = nn.Embedding(data.n_items, 1)
        nn.init.normal_(self.id_emb.weight, std=0.05)
        nn.init.zeros_(self.id_bias.weight)
        self.item_feat = FeatureTower(data.n_item_tokens, data.item_numeric.shape[1], d)
        self.item_mlp = nn.Sequential(nn.GELU(), nn.Linear(d, d))
        self.feat_bias = nn.Linear(d, 1)
        self.user_feat = FeatureTower(data.n_user_tokens, data.user_numeric.shape[1], d)
        self.size_proj = nn.Linear(1, d)
        self.rate_proj = nn.Linear(1, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.encoder = nn.Sequential(
            nn.Linear(4 * d, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, d),
        )  # fmt: skip
        self.bias_shrink = nn.Parameter(torch.tensor(math.log(math.expm1(cfg.bias_shrink_init))))
        self.bias_out = nn.Linear(d, 1)
        nn.init.zeros_(self.bias_out.weight)
        nn.init.zeros_(self.bias_out.bias)
        self.head = nn.Sequential(
            nn.Linear(3 * d, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, 1),
        )  # fmt: skip
        self.register_buffer("item_tokens", torch.from_numpy(data.item_tokens))
        self.register_buffer("item_numeric", torch.from_numpy(data.item_numeric))
        self.register_buffer("user_tokens", torch.from_numpy(data.user_tokens))
        self.register_buffer("user_numeric", torch.from_numpy(data.user_numeric))
        self.register_buffer("has_id", torch.from_numpy(has_id.astype(np.float32)))

    def items(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors (..., d) and biases (...) of items idx (padding -1 reads item 0)."""
        idx = idx.clamp(min=0)
        keep = self.has_id[idx]
        if self.training and self.cfg.id_dropout > 0:
            keep = keep * (torch.rand_like(keep) >= self.cfg.id_dropout)
        flat = idx.reshape(-1)
        f = self.item_mlp(self.item_feat(self.item_tokens[flat], self.item_numeric[flat]))
        f = f.reshape(*idx.shape, -1)
        v = keep.unsqueeze(-1) * self.id_emb(idx) + f
        b = keep * self.id_bias(idx).squeeze(-1) + self.feat_bias(f).squeeze(-1)
        return v, b

    def forward(
        self,
        users: torch.Tensor,
        sup_items: torch.Tensor,
        sup_ratings: torch.Tensor,
        sup_mask: torch.Tensor,
        query_items: torch.Tensor,
    ) -> torch.Tensor:
        """Predicted ratings (U, Q) of the query items, given each user's support pairs."""
        mask = sup_mask.float()
        n = mask.sum(1, keepdim=True)
        sv, sb = self.items(sup_items)
        dev = (sup_ratings - self.mu) * mask
        h = sv + self.rate_proj(dev.unsqueeze(-1))
        mean = (mask.unsqueeze(-1) * h).sum(1) / n.clamp(min=1)
        r_user = (dev.sum(1, keepdim=True) / n.clamp(min=1)) * mask
        taste = ((dev - r_user).unsqueeze(-1) * sv * mask.unsqueeze(-1)).sum(1) / n.clamp(min=1)
        ctx = self.user_feat(self.user_tokens[users], self.user_numeric[users])
        ctx = ctx + self.size_proj(torch.log1p(n))
        att = (self.q(ctx).unsqueeze(1) * self.k(h)).sum(-1) / math.sqrt(h.shape[-1])
        att = att.masked_fill(~sup_mask, -1e4).softmax(-1) * mask
        pooled = (att.unsqueeze(-1) * self.v(h)).sum(1)
        u = taste + self.encoder(torch.cat([mean, taste, pooled, ctx], -1))
        resid = ((sup_ratings - self.mu - sb) * mask).sum(1)
        lam = nn.functional.softplus(self.bias_shrink)
        b_u = resid / (n.squeeze(1) + lam) + self.bias_out(u).squeeze(-1)
        qv, qb = self.items(query_items)
        uq = u.unsqueeze(1).expand_as(qv)
        mlp = self.head(torch.cat([uq * qv, uq, qv], -1)).squeeze(-1)
        return self.mu + b_u.unsqueeze(1) + qb + (uq * qv).sum(-1) + mlp


def _tensors(ep: Episodes) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(ep.users),
        torch.from_numpy(ep.support_items),
        torch.from_numpy(ep.support_ratings),
        torch.from_numpy(ep.support_mask),
        torch.from_numpy(ep.query_items),
    )


def predict(model: RatingModel, ep: Episodes, data: RatingData) -> np.ndarray:
    """Query-rating predictions (U, Q), clipped to the data's rating scale."""
    model.eval()
    with torch.no_grad():
        out = model(*_tensors(ep)).numpy()
    return np.clip(out, *data.rating_range)


@dataclass
class TrainInfo:
    """What one training run did."""

    epochs: int
    best_epoch: int
    best_val_mse: float
    seconds: float


def train_rating_model(
    data: RatingData,
    train_users: np.ndarray,
    val: Episodes,
    cfg: RatingConfig | None = None,
    seed: int = 0,
) -> tuple[RatingModel, TrainInfo]:
    """Fit on episodes of `train_users` (re-drawn every epoch), early-stopped on `val`.

    Deterministic on CPU for a given seed (torch deterministic algorithms, seeded numpy
    and torch generators). Returns the model at its best validation MSE.
    """
    cfg = cfg or RatingConfig()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(seed)
    rows = np.concatenate([np.arange(data.indptr[u], data.indptr[u + 1]) for u in train_users])
    mu = float(data.rating[rows].mean())
    has_id = np.zeros(data.n_items, bool)
    has_id[data.item[rows]] = True
    model = RatingModel(cfg, data, mu, has_id)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val_t, val_y = _tensors(val), torch.from_numpy(val.query_ratings)
    best, best_epoch, best_state, epoch = math.inf, 0, copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, cfg.max_epochs + 1):
        ep = draw_episodes(data, rng.permutation(train_users), rng)
        mask = ep.support_mask & (rng.random(ep.support_items.shape) >= cfg.support_dropout)
        ep = Episodes(ep.users, np.where(mask, ep.support_items, -1), ep.support_ratings * mask,
                      ep.query_items, ep.query_ratings)  # fmt: skip
        tensors, y = _tensors(ep), torch.from_numpy(ep.query_ratings)
        model.train()
        for lo in range(0, len(train_users), cfg.batch_users):
            sl = slice(lo, lo + cfg.batch_users)
            loss = nn.functional.mse_loss(model(*(t[sl] for t in tensors)), y[sl])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(*val_t).clamp(*data.rating_range)
            val_mse = float(((pred - val_y) ** 2).mean())
        if val_mse < best - 1e-5:
            best, best_epoch, best_state = val_mse, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    info = TrainInfo(epoch, best_epoch, best, time.perf_counter() - t0)
    return model, info


def config_dict(cfg: RatingConfig) -> dict:
    """The config as a plain dict (for reports)."""
    return asdict(cfg)
