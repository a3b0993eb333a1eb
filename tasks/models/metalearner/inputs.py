"""How a user's history becomes the network's inputs: items mapped onto the model's
catalogue, the support set (most recent events first) and the event weights."""

from __future__ import annotations

import numpy as np
import torch

from tasks.learn.features import EncodedFeatures
from tasks.learn.interactions import Interactions
from tasks.models.metalearner.config import MetaConfig
from tasks.models.metalearner.network import MetaRecModel


def catalogue_index(catalogue: np.ndarray, history: Interactions) -> np.ndarray:
    """Each history row's item as an index into `catalogue` (-1: unknown to the model)."""
    ids = np.asarray(history.item_ids).astype(str)
    if len(ids) == len(catalogue) and np.array_equal(ids, catalogue.astype(str)):
        return history.item.astype(np.int64)
    # Another catalogue: map by id; items unknown to the model become -1 (ignored).
    cat = catalogue.astype(str)
    order = np.argsort(cat)
    at = np.searchsorted(cat[order], ids).clip(max=max(len(cat) - 1, 0))
    found = len(cat) > 0 and cat[order][at] == ids
    mapped = np.where(found, order[at], -1)
    return mapped[history.item].astype(np.int64)


def event_weights(values: np.ndarray, w_scale: float) -> np.ndarray:
    """Event values compressed (log1p: counts can be huge) and divided by `w_scale`."""
    return (np.log1p(np.clip(values, 0, None)) / w_scale).astype(np.float32)


def support_arrays(
    history: Interactions, items: np.ndarray, max_support: int, w_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """(n_users, max_support) catalogue indices (-1 = none), most recent first, and their
    event weights; `items` = catalogue_index(catalogue, history)."""
    if (items < 0).any():  # events on items outside the catalogue take no support slot
        history, items = history.filter(items >= 0), items[items >= 0]
    indptr = history.user_slices()
    pos = indptr[1:, None] - 1 - np.arange(max_support)[None, :]
    ok = pos >= indptr[:-1, None]
    pos = np.where(ok, pos, 0)
    if len(items) == 0:
        ok[:] = False
        pos[:] = 0
        items, weights = np.zeros(1, np.int64), np.zeros(1, np.float32)
    else:
        weights = event_weights(history.weight, w_scale)
    sup = np.where(ok, items[pos], -1).astype(np.int64)
    w = np.where(sup >= 0, weights[pos], 0.0).astype(np.float32)
    return sup, w


@torch.no_grad()
def network_user_factors(
    model: MetaRecModel,
    cfg: MetaConfig,
    sup_items: np.ndarray,
    sup_w: np.ndarray,
    user_x: EncodedFeatures,
    block: int,
) -> np.ndarray:
    """The network's user factors [u, 1, w(n)], encoded `block` users at a time (bounded
    memory); the 1 picks up the item bias column of the item factors."""
    vecs, _ = model.catalogue()
    dev = vecs.device
    d = cfg.dim
    out = np.empty((len(sup_items), d + 1 + len(cfg.prior_windows_days)), np.float32)
    for lo in range(0, len(sup_items), block):
        sl = slice(lo, lo + block)
        u = model.users(
            torch.from_numpy(sup_items[sl]).to(dev), torch.from_numpy(sup_w[sl]).to(dev),
            torch.from_numpy(user_x.tokens[sl]).to(dev),
            torch.from_numpy(user_x.numeric[sl]).to(dev), vecs,
        )  # fmt: skip
        out[sl, :d] = u.float().cpu().numpy()
        pw = model.prior_weights(torch.from_numpy(sup_items[sl]).to(dev))
        out[sl, d + 1 :] = pw.float().cpu().numpy()
    out[:, d] = 1.0
    return out
