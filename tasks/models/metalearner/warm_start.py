"""Warm start: a previous night's network weights copied into a freshly built network.

ID rows are matched by item id and feature-token rows by token name (the catalogue and
the vocabularies may have grown), every other tensor is copied where its shape is
unchanged; the catalogue buffers stay those of the new data.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.models.metalearner.network import MetaRecModel

# Buffers describing the catalogue the network was built on: always the new data's.
_CATALOGUE = frozenset({"item_tokens", "item_numeric", "has_id", "item_logq"})


Ids = tuple[np.ndarray | list[str], np.ndarray | list[str]]  # (new, old)


def copy_weights(
    new: MetaRecModel, old: MetaRecModel, item_ids: Ids, item_tokens: Ids, user_tokens: Ids
) -> dict:
    """Copy `old`'s weights into `new` in place. `item_ids`, `item_tokens`, `user_tokens`:
    (new, old) ids of the ID rows, of the item and of the user feature-token rows, which
    are matched by id. Returns what was mapped, copied and skipped."""
    row_ids = {
        "items.id_emb.weight": item_ids,
        "items.id_bias.weight": item_ids,
        "items.feat.emb.weight": item_tokens,
        "encoder.user_feat.emb.weight": user_tokens,
    }
    new_sd, old_sd = new.state_dict(), old.state_dict()
    report = {"rows_mapped": {}, "copied": 0, "skipped": []}
    for name, tensor in new_sd.items():
        if name in _CATALOGUE or name not in old_sd:
            continue
        if name in row_ids:
            new_ids, old_ids = (np.asarray(x).astype(str) for x in row_ids[name])
            _, new_idx, old_idx = np.intersect1d(new_ids, old_ids, return_indices=True)
            tensor[torch.from_numpy(new_idx)] = old_sd[name][torch.from_numpy(old_idx)]
            report["rows_mapped"][name] = len(new_idx)
        elif old_sd[name].shape == tensor.shape:
            tensor.copy_(old_sd[name])
            report["copied"] += 1
        else:
            report["skipped"].append(name)
    new.load_state_dict(new_sd)
    return report
