"""The meta-learner's item-item parts: item-to-item evidence that a few events carry directly,
mixed into the set encoder's scores with one weight per support-size bucket (the weights
are tuned in item_item_tuning.py).

Three kinds; each is a sparse matrix M applied to a user row r_u as r_u @ M. Nothing here
is dense in n_items^2: the matrices are built a block of rows at a time and keep `top_k`
entries per row, so memory is O(n_items * top_k) at any catalogue size.

  cosine    (n_items, n_items) shrunk cosine between items' user sets (c_ab / (sqrt(n_a
            n_b) + shrink)), each row's top_k neighbours; r_u = the binary history. It
            replaced EASE's dense inverse (format 5): same role, no n_items^2 matrix.
  sequence  (n_items, n_items) time-local co-occurrence: C[a, b] counts how often b came
            within `window` events after a (backward pairs weighted `backward`) in
            someone's history, scaled by count(a)^-beta, top_k entries kept per row. r_u
            weights the user's events by recency (half-life in events, most recent = 1)
            and is scaled so that r_u @ M has mean 1 over the catalogue: the mixing weight
            then means the same for every user. On MovieLens this is the strongest single
            signal for users with 3-10 events: what people rate next is what the site
            showed them next (docs/results.md).
  recent    (1, n_items), one candidate per window D in `recent_days` (kind "recent:D"):
            the log relative popularity of each item in the last D days of training
            (r_u = 1). The window that helps most on its own on the tuning users is kept.
            Items with no event at all get the "newcomer prior": how popular items were
            in their first D days, predicted from the item's side features (ridge
            regression over the items that arrived during training; their mean without
            features), so a new item is not scored as a flop and one like past hits ranks
            high. The network has a time prior of its own; tuned here, stale users can
            lean on popularity as much as the tuning users say.

Mixing buckets: support size n = 0 | 1-2 | 3-5 | 6-10 | 11-20 | 21+, and "stale", users
whose latest event is more than `stale_days` before the scoring time.

As factors: the sparse tail of SplitFactors (tasks/models/base.py), user columns mix(n) *
r_u, item columns M[:, i]; the scores are exact. Saved as (rows, cols, float16 values)
tensors (part_to_tensors), rounded to that precision at fit, so exact on load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from tasks.learn.interactions import Interactions
from tasks.models.metalearner.config import ItemItemConfig
from tasks.models.metalearner.cooccurrence import cosine_weights, sequence_weights

KINDS = ("cosine", "sequence", "recent")
MIX_EDGES = (1, 3, 6, 11, 21)  # support-size buckets 0 | 1-2 | 3-5 | 6-10 | 11-20 | 21+
STALE = len(MIX_EDGES) + 1  # index of the stale bucket; N_MIX buckets in all
N_MIX = STALE + 1
MIN_RIDGE_ROWS = 20  # arrived items needed to predict the newcomer prior from features


@dataclass
class ItemItemPart:
    """One fitted part: its sparse matrix (float16-exact float32) and mixing weight per
    bucket."""

    kind: str
    weights: sp.csr_matrix  # (n_items, n_items); (1, n_items) for "recent:D"
    mix: np.ndarray  # (N_MIX,) float32: per support-size bucket, then the stale bucket
    half_life: float = 0.0  # 0: binary history rows (cosine); else recency-weighted rows
    col_mean: np.ndarray | None = None  # (n_items,) mean of each row of weights (sequence)

    def rows(self, x: sp.csr_matrix, recency: sp.csr_matrix, bucket: np.ndarray):
        """The user columns (sparse): mix(bucket) * r_u. x = binary history, recency =
        1 + events back (history_rows), both (n_users, n_items); bucket = mix_bucket()."""
        if self.kind.startswith("recent"):
            return sp.csr_matrix(self.mix[bucket][:, None].astype(np.float32))
        if self.half_life <= 0:
            r = x
        else:
            r = recency.copy()
            r.data = 0.5 ** ((r.data - 1.0) / self.half_life)  # recency.data = 1 + back
            scale = r @ self.col_mean  # mean of r_u @ weights over the catalogue
            r = sp.diags(1.0 / np.maximum(scale, 1e-12)) @ r
        return sp.csr_matrix(sp.diags(self.mix[bucket]) @ r, dtype=np.float32)


def mix_bucket(n: np.ndarray, stale: np.ndarray | None = None) -> np.ndarray:
    """Support size -> mixing bucket 0 | 1-2 | 3-5 | 6-10 | 11-20 | 21+; STALE where stale."""
    b = np.searchsorted(np.asarray(MIX_EDGES), n, side="right")
    return b if stale is None else np.where(stale, STALE, b)


def stale_users(history: Interactions, now: int | None, days: float) -> np.ndarray:
    """(n_users,) bool: the user's latest event is more than `days` before `now` (epoch s)."""
    indptr = history.user_slices()
    has = np.diff(indptr) > 0
    if now is None or not has.any():
        return np.zeros(history.n_users, bool)
    last = np.full(history.n_users, np.iinfo(np.int64).max)
    last[has] = history.ts[indptr[1:][has] - 1]
    return last < now - int(days * 86_400)


def history_rows(history: Interactions, items: np.ndarray, n_items: int):
    """(binary rows, recency rows) over a catalogue of n_items; `items` maps history rows
    to it (-1 = unknown, dropped). Recency rows hold 1 + (events back) of the user's latest
    event on each item: 1 for the most recent event, 2 for the one before, and so on."""
    indptr = history.user_slices()
    back = indptr[1:][history.user] - 1 - np.arange(len(history))
    ok = np.flatnonzero(items >= 0)
    key = history.user[ok].astype(np.int64) * n_items + items[ok]
    order = np.lexsort((back[ok], key))  # per (user, item), the latest event first
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    rows = ok[order[first]]
    shape = (history.n_users, n_items)
    rec = sp.csr_matrix(
        ((1.0 + back[rows]).astype(np.float32), (history.user[rows], items[rows])), shape=shape
    )
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (history.user[rows], items[rows])),
                      shape=shape)  # fmt: skip
    return x, rec


def recent_popularity(
    train: Interactions, days: float, item_features: sp.csr_matrix | None = None
) -> np.ndarray:
    """(n_items,) log((count + 1) / (mean count + 1)) over the last `days` of `train`;
    items with no event ever get the newcomer prior: that quantity over an item's own first
    `days`, for the items that arrived after the first `days` of the data, predicted from
    `item_features` (n_items, f) by ridge regression, or their mean without features."""
    n = train.n_items
    if len(train) == 0:
        return np.zeros(n, np.float32)
    window = int(days * 86_400)
    end = int(train.ts.max()) + 1
    recent = train.ts >= end - window
    counts = np.bincount(train.item[recent], minlength=n).astype(np.float64)
    out = np.log((counts + 1.0) / (counts.sum() / n + 1.0))
    never = np.bincount(train.item, minlength=n) == 0
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, train.item, train.ts)
    arrived = np.flatnonzero((first > int(train.ts.min()) + window) & (first < end - window))
    if len(arrived) and never.any():
        # Events of each arrived item in its first `days`, relative to the traffic then.
        early = np.isin(train.item, arrived) & (train.ts < first[train.item] + window)
        c = np.bincount(train.item[early], minlength=n)[arrived].astype(np.float64)
        ts = np.sort(train.ts)
        traffic = np.searchsorted(ts, first[arrived] + window) - np.searchsorted(ts, first[arrived])
        y = np.log((c + 1.0) / (traffic / n + 1.0))
        out[never] = y.mean() + _ridge(item_features, arrived, y - y.mean(), never)
    return out.astype(np.float32)


def _ridge(x: sp.csr_matrix | None, rows: np.ndarray, y: np.ndarray, predict: np.ndarray,
           l2: float = 10.0) -> np.ndarray | float:  # fmt: skip
    """Centred ridge regression of y on x[rows], evaluated at x[predict] (0 without x or
    with fewer than MIN_RIDGE_ROWS rows)."""
    if x is None or x.shape[1] == 0 or len(rows) < MIN_RIDGE_ROWS:
        return 0.0
    a = np.asarray(x[rows].todense(), np.float64)
    mean = a.mean(0)
    a -= mean
    w = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ y)
    return (np.asarray(x[predict].todense(), np.float64) - mean) @ w


def item_feature_matrix(tokens: np.ndarray, numeric: np.ndarray, n_tokens: int) -> sp.csr_matrix:
    """(n_items, n_tokens + n_numeric) bag of tokens (padding 0 dropped) + numeric columns,
    from FeatureEncoder.encode's arrays."""
    rows = np.repeat(np.arange(len(tokens)), tokens.shape[1])
    flat = tokens.ravel()
    keep = flat > 0
    shape = (len(tokens), max(n_tokens, 1))
    bag = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], flat[keep])), shape)
    bag.data[:] = 1.0  # a token twice in a bag still counts once
    return sp.hstack([bag, sp.csr_matrix(numeric.astype(np.float32))], format="csr")


def fit_matrix(kind: str, train: Interactions, cfg: ItemItemConfig,
               item_features: sp.csr_matrix | None = None) -> sp.csr_matrix:  # fmt: skip
    """The part's sparse matrix on `train`, rounded to float16 precision (how it is saved)."""
    if kind == "cosine":
        m = cosine_weights(train, cfg)
    elif kind == "sequence":
        m = sequence_weights(train, cfg)
    elif kind.startswith("recent:"):
        m = sp.csr_matrix(recent_popularity(train, float(kind.split(":")[1]), item_features))
    else:
        raise ValueError(f"unknown item-item part {kind!r} (expected one of {KINDS})")
    m = sp.csr_matrix(m, dtype=np.float32)
    m.data = m.data.astype(np.float16).astype(np.float32)
    m.eliminate_zeros()
    return m


def part_to_tensors(part: ItemItemPart) -> dict:
    """A part as tensors for torch.save: its shape, and (rows, cols, float16 values)."""
    m = part.weights.tocoo()
    return {"mix": torch.from_numpy(part.mix), "shape": torch.tensor(m.shape),
            "rows": torch.from_numpy(m.row.astype(np.int32)),
            "cols": torch.from_numpy(m.col.astype(np.int32)),
            "values": torch.from_numpy(m.data.astype(np.float16))}  # fmt: skip


def part_from_tensors(kind: str, doc: dict, cfg: ItemItemConfig) -> ItemItemPart:
    """Inverse of part_to_tensors (the float16 rounding was applied at fit: exact); format-4
    checkpoints' dense "weights" are read too (warm starts across the upgrade)."""
    if "weights" in doc:
        weights = sp.csr_matrix(doc["weights"].float().numpy())
    else:
        shape = tuple(doc["shape"].tolist())
        weights = sp.csr_matrix((doc["values"].float().numpy(), (doc["rows"].numpy(),
                                 doc["cols"].numpy())), shape=shape)  # fmt: skip
    return make_part(kind, weights, doc["mix"].float().numpy(), cfg)


def make_part(kind: str, weights: np.ndarray, mix: np.ndarray, cfg: ItemItemConfig):
    """An ItemItemPart with the row scaling its kind needs."""
    weights = sp.csr_matrix(weights, dtype=np.float32)
    if kind == "sequence":
        return ItemItemPart(kind, weights, mix, cfg.half_life, np.asarray(weights.mean(1)).ravel())
    return ItemItemPart(kind, weights, mix)


def part_kinds(cfg: ItemItemConfig) -> list[str]:
    """The parts to fit: cfg.kinds with "recent" expanded to one "recent:D" per window."""
    out = []
    for kind in cfg.kinds:
        out += [f"recent:{d:g}" for d in cfg.recent_days] if kind == "recent" else [kind]
    return out


def user_rows(parts: list[ItemItemPart], history: Interactions, items: np.ndarray,
              n_items: int, now: int | None, stale_days: float) -> sp.csr_matrix:  # fmt: skip
    """Every part's user columns side by side (sparse) for `history`; `items` maps its rows
    onto a catalogue of n_items (-1 = unknown); users stale at `now` (epoch s) get the
    stale bucket's weights."""
    x, rec = history_rows(history, items, n_items)
    b = mix_bucket(np.diff(x.indptr), stale_users(history, now, stale_days))
    return sp.hstack([p.rows(x, rec, b) for p in parts], format="csr")
