"""Full-catalogue ranking metrics, per user (binary relevance)."""

from __future__ import annotations

import numpy as np

from tasks.learn.interactions import Interactions


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user recall@k = hits in the top k / min(k, |relevant|) (the "truncated" recall,
    so a perfect list scores 1 even for users with more than k targets)."""
    return hits[:, :k].sum(axis=1) / np.minimum(k, n_relevant)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with binary gains; the ideal list has min(k, |relevant|) hits."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discount[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(k, n_relevant)]
    return dcg / ideal


def coverage(items: np.ndarray, valid: np.ndarray, n_items: int) -> float:
    """Share of the catalogue appearing in at least one list (valid entries only)."""
    return len(np.unique(items[valid])) / max(n_items, 1)


def novelty(items: np.ndarray, valid: np.ndarray, self_information: np.ndarray) -> float:
    """Mean self-information -log2(share of train users with the item) of recommendations."""
    return float(self_information[items[valid]].mean()) if valid.any() else float("nan")


def item_self_information(train: Interactions) -> np.ndarray:
    """-log2 p(i), p(i) = (users with i + 1) / (train users + 1): finite for new items."""
    users_per_item = np.asarray(train.csr(binary=True).sum(axis=0)).ravel()
    return -np.log2((users_per_item + 1.0) / (train.n_users + 1.0))
