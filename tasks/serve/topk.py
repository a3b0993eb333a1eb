"""Top-k of factor products, seen items excluded: the kernel behind scoring and evaluation.

Scores are `user_factors @ item_factors.T` (the contract of tasks/models/base.py; split
factors add their sparse tails' product, block by block, in the plain path). On CPU
the catalogue is scanned in tiles small enough to stay in a core's L2 cache, and each tile
is reduced at once to two levels of maxima: sub-groups of SUB items (kept) and groups of
GROUP sub-groups (searched). The top k items of a user lie in the k sub-groups with the
highest maxima, which lie in the k groups with the highest maxima (an item of the top k
makes its sub-group's and group's maximum at least the k-th best score, and at most k
groups or sub-groups hold one), so only k * SUB candidates are rescored exactly. Blocks of
users run on one worker thread per core; peak memory is one block's tiles and maxima per
worker, whatever the number of users. On CUDA, and for small catalogues, a plain blocked
matmul + `torch.topk` is used.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import local

import numpy as np
import scipy.sparse as sp
import torch

from tasks.models.base import Factors, Recommender, SplitFactors

# One block's score matrix is at most this many bytes (fp32) in the plain path.
MAX_BLOCK_BYTES = 256 * 2**20
# CPU path: users per block and items per tile; a 256 x 2048 fp32 tile (2 MiB) fits in the
# L2 cache of one core, measured fastest on the 2-core dev machine (benchmarks/).
TILE_USERS = 256
TILE_ITEMS = 2048
# Items per sub-group and sub-groups per group (two levels of maxima): the tile is reduced
# to SUB x smaller sub-group maxima (kept) and SUB * GROUP x smaller group maxima (searched).
SUB = 4
GROUP = 4
NEG_INF = float("-inf")


def top_k(
    user_factors: Factors,
    item_factors: Factors,
    k: int,
    exclude: sp.csr_matrix | None = None,
    block_users: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` items per user by dot product, skipping items marked in `exclude`.

    Args:
        user_factors: (n_users, d) float32, dense, scipy sparse (history-row models) or
            SplitFactors (with item_factors also split).
        item_factors: (n_items, d) float32, dense or SplitFactors.
        k: list length; capped at n_items.
        exclude: optional (n_users, n_items) sparse matrix; nonzero entries are never
            recommended (items the user already interacted with).
        block_users: users per block; default fits MAX_BLOCK_BYTES (the CPU path caps it
            at TILE_USERS so its tiles stay in cache).
        device: torch device; default CUDA when available, else CPU.

    Returns:
        (items, scores): (n_users, k) int32 item indices, best first, and float32 scores.
        Where fewer than k items remain unexcluded, the tail has score -inf.
    """
    n_users, n_items = user_factors.shape[0], len(item_factors)
    k = min(k, n_items)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_items = np.empty((n_users, k), np.int32)
    out_scores = np.empty((n_users, k), np.float32)
    if n_users == 0 or k == 0:
        return out_items, out_scores
    if exclude is not None:
        exclude = exclude.tocsr()
        if exclude.shape != (n_users, n_items):
            raise ValueError(f"exclude has shape {exclude.shape}, expected {(n_users, n_items)}")
    if isinstance(item_factors, SplitFactors):  # sparse tails: the plain path, per block
        _top_k_dense(user_factors, item_factors, k, exclude, block_users, dev, out_items,
                     out_scores)  # fmt: skip
        return out_items, out_scores
    if sp.issparse(user_factors):  # history-row models (EASE, ItemKNN): sparse x dense
        # Layout kept: their item factors are Fortran-ordered, so the transpose the sparse
        # product reads is C-ordered with no copy of the n_items^2 matrix per call.
        items = np.asarray(item_factors, np.float32)
        _top_k_dense(user_factors.tocsr(), items, k, exclude, block_users, dev, out_items,
                     out_scores)  # fmt: skip
        return out_items, out_scores
    items = np.ascontiguousarray(item_factors, np.float32)
    users = np.ascontiguousarray(user_factors, np.float32)
    if dev.type == "cpu" and n_items >= 2 * TILE_ITEMS and k * SUB * GROUP * 4 <= n_items:
        _top_k_tiled(users, items, k, exclude, block_users, out_items, out_scores)
    else:
        _top_k_dense(users, items, k, exclude, block_users, dev, out_items, out_scores)
    return out_items, out_scores


def _top_k_dense(users, items, k, exclude, block_users, dev, out_items, out_scores) -> None:
    """Plain path: one (block, n_items) score matrix per block, then torch.topk."""
    n_users, n_items = users.shape[0], len(items)
    if block_users is None:
        block_users = MAX_BLOCK_BYTES // (4 * max(n_items, 1))
    block_users = max(1, min(n_users, block_users))
    fill = _block_scores(users, items, dev)
    buffer = torch.empty((block_users, n_items), dtype=torch.float32, device=dev)
    with torch.inference_mode():
        for start in range(0, n_users, block_users):
            stop = min(start + block_users, n_users)
            scores = buffer[: stop - start]
            fill(start, stop, scores)
            if exclude is not None:
                rows, cols = _seen_in_block(exclude, start, stop)
                if len(rows):
                    flat = torch.as_tensor(rows * n_items + cols, device=dev)
                    scores.view(-1).index_fill_(0, flat, NEG_INF)
            best, idx = torch.topk(scores, k, dim=1, sorted=True)
            out_items[start:stop] = idx.to(torch.int32).cpu().numpy()
            out_scores[start:stop] = best.cpu().numpy()


def _block_scores(users, items, dev):
    """fill(start, stop, out): users[start:stop]'s scores against every item into `out`."""
    if isinstance(items, SplitFactors):
        dense = np.ascontiguousarray(users.dense, np.float32)
        items_t = torch.as_tensor(np.ascontiguousarray(items.dense, np.float32), device=dev)
        tail_t = sp.csr_matrix(items.sparse.T, dtype=np.float32)

        def fill(start: int, stop: int, out: torch.Tensor) -> None:
            torch.mm(torch.as_tensor(dense[start:stop], device=dev), items_t.T, out=out)
            tail = (users.sparse[start:stop] @ tail_t).toarray()
            out.add_(torch.as_tensor(tail, device=dev))

        return fill
    if sp.issparse(users):
        items_t = np.ascontiguousarray(items.T)  # scipy would copy a transpose per block

        def fill(start: int, stop: int, out: torch.Tensor) -> None:
            out.copy_(torch.as_tensor(users[start:stop] @ items_t))

        return fill
    items_t = torch.as_tensor(items, device=dev)

    def fill(start: int, stop: int, out: torch.Tensor) -> None:
        torch.mm(torch.as_tensor(users[start:stop], device=dev), items_t.T, out=out)

    return fill


def _top_k_tiled(users, items, k, exclude, block_users, out_items, out_scores) -> None:
    """CPU path: cache-sized score tiles reduced to sub-group maxima, then exact rescoring."""
    n_users = len(users)
    plan = _TilePlan(torch.from_numpy(items), k)
    block = max(1, min(TILE_USERS, block_users or TILE_USERS, n_users))
    users_t = torch.from_numpy(users)
    scratch = local()

    def run(start: int) -> None:
        if not hasattr(scratch, "tile"):
            scratch.tile = torch.empty((block, plan.tile), dtype=torch.float32)
            scratch.subs = torch.empty((plan.n_tiles, block, plan.span1), dtype=torch.float32)
            scratch.groups = torch.empty((block, plan.n_tiles * plan.span2), dtype=torch.float32)
        stop = min(start + block, n_users)
        seen = _seen_in_block(exclude, start, stop) if exclude is not None else None
        with torch.inference_mode():  # grad mode is per thread: set it in the worker
            out_items[start:stop], out_scores[start:stop] = _score_block(
                users_t[start:stop], seen, plan, scratch
            )

    # One worker per core, each running torch single-threaded on its own tiles: a tile
    # stays in its core's L2 between the matmul and the max, and small ops pay no thread
    # pool synchronisation. Torch releases the GIL inside kernels, so threads suffice.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads_before) as pool:
            list(pool.map(run, range(0, n_users, block)))
    finally:
        torch.set_num_threads(threads_before)


class _TilePlan:
    """Geometry of the tiled scan, shared read-only by all workers.

    A tile of `tile` columns has `span1 = tile / SUB` sub-groups (sub-group j: columns
    j, j + span1, ..., SUB of them) and `span2 = span1 / GROUP` groups (group g: sub-groups
    g, g + span2, ..., GROUP of them). Strided members make each max an elementwise max of
    contiguous slices, which vectorises.
    """

    def __init__(self, items: torch.Tensor, k: int) -> None:
        self.k, self.n_items = k, len(items)
        self.n_tiles = -(-self.n_items // TILE_ITEMS)
        quantum = 16 * SUB * GROUP  # keeps every slice 64-byte aligned
        self.tile = -(-self.n_items // (self.n_tiles * quantum)) * quantum
        self.padded = self.n_tiles * self.tile
        self.span1 = self.tile // SUB
        self.span2 = self.span1 // GROUP
        self.sub_offsets = torch.arange(GROUP, dtype=torch.int64) * self.span2
        self.item_offsets = torch.arange(SUB, dtype=torch.int64) * self.span1
        # Zero rows pad the last tile; their scores are set to -inf before any reduction.
        self.items = torch.zeros((self.padded, items.shape[1]), dtype=torch.float32)
        self.items[: self.n_items] = items
        self.items_np = self.items.numpy()


def _score_block(
    users: torch.Tensor,
    seen: tuple[np.ndarray, np.ndarray] | None,
    plan: _TilePlan,
    scratch: local,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one block of users: tiled two-level maxima, then exact rescoring."""
    n, tile, span1, span2 = len(users), plan.tile, plan.span1, plan.span2
    block = scratch.subs.shape[1]
    scores, groups = scratch.tile[:n], scratch.groups[:n]
    seen_flat, seen_bounds = _seen_by_tile(seen, plan)
    for t in range(plan.n_tiles):
        lo = t * tile
        torch.mm(users, plan.items[lo : lo + tile].T, out=scores)
        if lo + tile > plan.n_items:
            scores[:, plan.n_items - lo :] = NEG_INF
        a, b = seen_bounds[t], seen_bounds[t + 1]
        if b > a:
            scores.view(-1).index_fill_(0, torch.from_numpy(seen_flat[a:b]), NEG_INF)
        subs = scratch.subs[t, :n]
        torch.amax(scores.view(n, SUB, span1), dim=1, out=subs)
        torch.amax(subs.view(n, GROUP, span2), dim=1, out=groups[:, t * span2 : (t + 1) * span2])
    # Best k groups -> their GROUP sub-groups -> best k sub-groups -> their SUB items.
    top_groups = torch.topk(groups, plan.k, dim=1, sorted=False).indices
    tg, g = top_groups // span2, top_groups % span2
    rows = torch.arange(n, dtype=torch.int64).view(n, 1, 1) * span1
    sub_at = ((tg * (block * span1) + g).unsqueeze(2) + rows + plan.sub_offsets).view(n, -1)
    top_subs = torch.topk(torch.take(scratch.subs, sub_at), plan.k, dim=1, sorted=False).indices
    sub = sub_at.gather(1, top_subs) - rows.view(n, 1)  # tile * block * span1 + sub-group
    ts, j = sub // (block * span1), sub % (block * span1)
    cand = ((ts * tile + j).unsqueeze(2) + plan.item_offsets).view(n, -1)  # (n, k * SUB)
    invalid = _is_seen(cand, seen, plan) | (cand >= plan.n_items)
    cand.clamp_(max=plan.n_items - 1)  # a padding column never leaves this function
    # Exact rescoring; numpy's row gather is several times faster than index_select.
    factors = torch.from_numpy(np.take(plan.items_np, cand.numpy().ravel(), axis=0))
    cand_scores = (factors.view(n, cand.shape[1], -1) * users.unsqueeze(1)).sum(dim=2)
    cand_scores.masked_fill_(invalid, NEG_INF)
    best, pick = torch.topk(cand_scores, plan.k, dim=1, sorted=True)
    return cand.gather(1, pick).to(torch.int32).numpy(), best.numpy()


def _is_seen(cand: torch.Tensor, seen, plan: _TilePlan) -> torch.Tensor:
    """(n, c) bool: whether each candidate item is an excluded item of its user."""
    if seen is None or not len(seen[0]):
        return torch.zeros(cand.shape, dtype=torch.bool)
    rows, cols = seen
    keys = np.sort(rows * plan.padded + cols)
    probe = (np.arange(len(cand), dtype=np.int64)[:, None] * plan.padded + cand.numpy()).ravel()
    pos = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
    return torch.from_numpy((keys[pos] == probe).reshape(cand.shape))


def _seen_in_block(exclude: sp.csr_matrix, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(row within block, item) int64 pairs of the excluded entries of users start..stop."""
    lo, hi = exclude.indptr[start], exclude.indptr[stop]
    counts = np.diff(exclude.indptr[start : stop + 1])
    rows = np.repeat(np.arange(stop - start, dtype=np.int64), counts)
    return rows, exclude.indices[lo:hi].astype(np.int64)


def _seen_by_tile(seen, plan: _TilePlan) -> tuple[np.ndarray | None, np.ndarray]:
    """Flat offsets of seen entries inside their tile, grouped by tile, and tile bounds."""
    if seen is None or not len(seen[0]):
        return None, np.zeros(plan.n_tiles + 1, np.int64)
    rows, cols = seen
    which = cols // plan.tile
    order = np.argsort(which, kind="stable")
    flat = (rows * plan.tile + cols - which * plan.tile)[order]
    return flat, np.searchsorted(which[order], np.arange(plan.n_tiles + 1))


def ranked_lists(
    model: Recommender,
    user_f: np.ndarray,
    item_f: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    block_users: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A model's top-k lists (`top_k`), with its exploration slot: a user whose list holds
    none of `model.exploration_items()` gets the best of them at rank k (its own score, so
    the list stays sorted). Rank k leaves NDCG@10 of a top-20 list untouched; without the
    slot a model never shows an item it has no interactions for (docs/model.md)."""
    items, scores = top_k(user_f, item_f, k, exclude=exclude, block_users=block_users)
    explore = np.asarray(model.exploration_items(), np.int64)
    if len(explore) == 0 or items.shape[1] == 0:
        return items, scores
    sub = None if exclude is None else sp.csr_matrix(exclude)[:, explore]
    best, best_score = top_k(user_f, item_f[explore], 1, exclude=sub, block_users=block_users)
    put = ~np.isin(items, explore).any(1) & np.isfinite(best_score[:, 0])
    put &= np.isfinite(scores[:, -1])  # a user with fewer than k candidates keeps them all
    items[put, -1] = explore[best[put, 0]]
    scores[put, -1] = best_score[put, 0]
    return items, scores
