"""Early stopping on the night's holdout (tasks.learn.holdout): the network, given each
holdout user's history as support, ranks the full catalogue; NDCG@10 against what the user
did after the cut. The same cases, metric and exclusions as the gate's, so the step kept
is the step that serves tonight's users best."""

from __future__ import annotations

import numpy as np
import torch

from tasks.learn.features import EncodedFeatures
from tasks.learn.interactions import Interactions
from tasks.models.metalearner.network import MetaRecModel

MAX_USERS = 1000  # holdout cases validated per evaluation (evenly spaced, deterministic)


class HoldoutValidator:
    """`validator(model, autocast)` -> mean NDCG@10 of the holdout cases."""

    def __init__(
        self,
        support: tuple[np.ndarray, np.ndarray],
        users: EncodedFeatures,
        history: Interactions,
        targets: Interactions,
        dev: torch.device,
    ):
        """`support`: (items, weights) of each case as the learner encodes a history
        (most recent first, -1 padded); `users`: the cases' encoded side features;
        `history`/`targets`: the cases over the model's catalogue."""
        n = min(history.n_users, MAX_USERS)
        pick = np.unique(np.linspace(0, history.n_users - 1, n).astype(np.int64))
        self.n = len(pick)

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

        self.batch = {
            "sup_items": t(support[0][pick]),
            "sup_w": t(support[1][pick]),
            "user_tokens": t(users.tokens[pick]),
            "user_numeric": t(users.numeric[pick]),
        }
        self.seen = t(history.csr(binary=True)[pick].toarray() > 0)
        self.rel = t(targets.csr(binary=True)[pick].toarray() > 0) & ~self.seen

    @torch.no_grad()
    def __call__(self, model: MetaRecModel, autocast) -> float | None:
        if self.n == 0:
            return None
        model.eval()
        with autocast:
            scores, _ = model(self.batch)
        scores = scores.float().masked_fill(self.seen, -1e9)
        top = scores.topk(min(10, scores.shape[1]), dim=1).indices
        disc = 1.0 / torch.log2(torch.arange(top.shape[1], device=scores.device) + 2.0)
        dcg = (self.rel.gather(1, top).float() * disc).sum(1)
        k_rel = self.rel.sum(1).clamp(max=top.shape[1])
        idcg = torch.cumsum(disc, 0)[(k_rel - 1).clamp(min=0)]
        return float(torch.where(k_rel > 0, dcg / idcg, torch.zeros_like(dcg)).mean())
