"""The sparse item-item matrices of the meta-learner's parts (item_item.py): shrunk cosine
and time-local sequence co-occurrence, each row's top_k entries kept. Built a block of rows
(cosine) or a band of event offsets (sequence) at a time, so memory is one block plus
O(n_items * top_k), never n_items^2."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from tasks.learn.interactions import Interactions
from tasks.models.metalearner.config import ItemItemConfig

BLOCK_ENTRIES = 2**25  # cosine: scores per block of rows (128 MiB of float32)


def top_per_row(m: sp.csr_matrix, k: int, chunk: int = 1 << 23) -> sp.csr_matrix:
    """`m` with only each row's k largest entries (ties: lower column first); 0 = all.
    Rows are ranked in bands of about `chunk` entries, so the sort's index arrays stay
    a bounded size (118M entries at 100k items needed 6 GB at once)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()
    m.eliminate_zeros()
    counts = np.diff(m.indptr)
    if k <= 0 or counts.max(initial=0) <= k:
        return m
    bands, lo = [], 0
    while lo < m.shape[0]:
        hi = max(lo + 1, int(np.searchsorted(m.indptr, m.indptr[lo] + chunk, side="right")) - 1)
        hi = min(hi, m.shape[0])
        band = m[lo:hi]
        row = np.repeat(np.arange(hi - lo), np.diff(band.indptr))
        order = np.lexsort((band.indices, -band.data, row))  # row by row, largest first
        keep = order[np.arange(len(order)) - band.indptr[row[order]] < k]
        keep.sort()  # back to CSR order
        bands.append(sp.csr_matrix((band.data[keep], (row[keep], band.indices[keep])),
                                   shape=band.shape))  # fmt: skip
        lo = hi
    return sp.vstack(bands, format="csr", dtype=np.float32)


def sequence_weights(train: Interactions, cfg: ItemItemConfig, chunk: int = 10) -> sp.csr_matrix:
    """C[a, b] * count(a)^-beta: b within `window` events after a (1) or before it
    (`backward`) in the same user's time-ordered history; each row's top_k entries."""
    n, it, user = train.n_items, train.item.astype(np.int64), train.user
    c = sp.csr_matrix((n, n), dtype=np.float32)
    for lo in range(1, cfg.window + 1, chunk):  # chunks bound the pair arrays' memory
        rows, cols = [], []
        for d in range(lo, min(lo + chunk, cfg.window + 1)):
            same = user[:-d] == user[d:]
            rows.append(it[:-d][same])
            cols.append(it[d:][same])
        a, b = np.concatenate(rows), np.concatenate(cols)
        ones = np.ones(len(a), np.float32)
        c = c + sp.csr_matrix((ones, (a, b)), shape=(n, n))
        c = c + sp.csr_matrix((ones * cfg.backward, (b, a)), shape=(n, n))
    count = np.bincount(it, minlength=n).astype(np.float64)
    scale = (1.0 / np.maximum(count, 1.0) ** cfg.beta).astype(np.float32)
    # The long tail of one-off pairs is noise, and costs memory and disk.
    return top_per_row(sp.diags(scale) @ c, cfg.top_k)


def cosine_weights(train: Interactions, cfg: ItemItemConfig) -> sp.csr_matrix:
    """Shrunk cosine c_ab / (sqrt(n_a n_b) + shrink) between items' user sets (a != b),
    each row's top_k, computed a block of rows at a time (peak memory: one block of
    BLOCK_ENTRIES scores, never n_items^2)."""
    n = train.n_items
    x = train.csr(binary=True).astype(np.float32)
    xt = x.T.tocsr()
    norms = np.sqrt(np.asarray(x.sum(0)).ravel()).astype(np.float32)
    k = min(cfg.top_k, n) if cfg.top_k > 0 else n
    block = max(1, BLOCK_ENTRIES // max(n, 1))
    rows, cols, vals = [], [], []
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        co = torch.from_numpy((xt[lo:hi] @ x).toarray())
        co /= torch.from_numpy(norms[lo:hi, None] * norms[None, :] + cfg.cosine_shrink)
        co[torch.arange(hi - lo), torch.arange(lo, hi)] = 0.0  # not its own neighbour
        top = torch.topk(co, k, dim=1)  # ties: torch's order, deterministic on CPU
        rows.append(np.repeat(np.arange(lo, hi), k))
        cols.append(top.indices.numpy().ravel())
        vals.append(top.values.numpy().ravel())
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n), dtype=np.float32)  # fmt: skip
    m.eliminate_zeros()  # rows with fewer than k neighbours
    return m
