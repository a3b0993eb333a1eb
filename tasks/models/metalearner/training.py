"""Episodic meta-training of the meta-learner's network (network.py), on arrays.

Each step samples a batch of users and, per user, one episode: a support size from
`MetaConfig.support_sizes` (0 = zero-shot, from side features only), a cut (the user's
first events with probability `first_cut_share`, else uniform over the history), support =
the events just before the cut, query = `query_size` events drawn from everything after
it. This is the same task as gold/episodes (tasks/learn/episodes.py) drawn afresh on
tensors each step, so no two epochs see the same cuts. Early stopping watches NDCG@10 over
the full catalogue on held-out users given their first 1, 5 or 10 events.

This module knows the network, the config and arrays only: the Recommender adapter
(learner.py) builds the sampler from its data and encoders and calls `train_network`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tasks.learn.features import EncodedFeatures
from tasks.learn.interactions import Interactions
from tasks.models.metalearner.config import MetaConfig
from tasks.models.metalearner.network import MetaRecModel, prior_features, seen_mask

_VAL_SHOTS = (1, 5, 10)
_MAX_VAL_USERS = 300  # x 3 shots: one (900, n_items) score block


def select_device(device: str | None = None) -> tuple[torch.device, torch.dtype | None]:
    """The device to train on and its autocast dtype: CUDA (bf16 where supported, else fp16
    with a GradScaler) when available and not overridden, CPU in fp32 otherwise."""
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen.type != "cuda":
        return chosen, None
    return chosen, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def training_threads(dev: torch.device) -> Iterator[None]:
    """On CPU: every core this process may use, and deterministic kernels; the previous
    torch settings are restored on exit."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    if dev.type == "cpu":
        # Every core this process may use, not the machine's count (containers, taskset).
        torch.set_num_threads(max(1, min(8, len(os.sched_getaffinity(0)))))
        # Multithreaded embedding backward sums in a racy order: without this, a rerun of
        # the same night trains a (slightly) different model and publishes another table.
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@dataclass(frozen=True)
class TrainingRun:
    """What the training loop did."""

    log: list[dict]  # {step, seconds, train_loss, val_metric} per validation
    best_step: int
    best_metric: float | None  # validation NDCG@10 at best_step (None: no validation users)
    steps: int


def train_network(
    model: MetaRecModel,
    sampler: EpisodeSampler,
    config: MetaConfig,
    *,
    budget_seconds: float,
    max_steps: int | None,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    start: float,
    on_progress: Callable[[dict], None] | None = None,
    validate: Callable | None = None,
) -> TrainingRun:
    """Train `model` (already on `device`) on the sampler's episodes until `budget_seconds`
    of wall time since `start` (time.perf_counter) or `max_steps` steps, or until
    `config.patience` validations without improvement; the best validated weights are
    loaded back into `model`. `validate(model, autocast)` scores a validation (default:
    the sampler's own validation users)."""
    validate = validate or sampler.validate
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    )
    log: list[dict] = []
    best = (-1.0, 0, None)  # (metric, step, state)
    step, losses, stale = 0, [], 0
    while True:
        model.train()
        batch, targets, target_w = sampler.sample(config.batch_users)
        with autocast:
            _, loss = model(batch, targets, target_w)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        step += 1
        losses.append(float(loss.detach()))
        elapsed = time.perf_counter() - start
        done = elapsed >= budget_seconds or (max_steps is not None and step >= max_steps)
        if step % config.eval_every == 0 or done:
            metric = validate(model, autocast)
            record = {"step": step, "seconds": round(time.perf_counter() - start, 3),
                      "train_loss": float(np.mean(losses)), "val_metric": metric}  # fmt: skip
            log.append(record)
            losses = []
            if on_progress is not None:
                on_progress(record)
            score = -1.0 if metric is None else metric
            if best[2] is None or score > best[0]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best, stale = (score, step, state), 0
            else:
                stale += 1
            done = done or (metric is not None and stale >= config.patience)
        if done:
            break
    model.load_state_dict(best[2])
    return TrainingRun(log, best[1], None if best[0] < 0 else best[0], step)


class EpisodeSampler:
    """Vectorised episode sampler over a user-sorted Interactions, plus validation users."""

    def __init__(
        self,
        train: Interactions,
        weights: np.ndarray,
        users: EncodedFeatures,
        config: MetaConfig,
        rng: np.random.Generator,
        dev: torch.device,
        hold_out_users: bool = True,
    ):
        """`weights`: the model's value of each event of `train`; `users`: the encoded side
        features of train's users (rows aligned with train.user_ids). Without
        `hold_out_users` every user trains (validation happens elsewhere: the night's
        holdout)."""
        cfg = self.cfg = config
        self.rng, self.dev = rng, dev
        self.indptr = train.user_slices()
        self.count = np.diff(self.indptr)
        self.item = train.item.astype(np.int64)
        self.weight = weights
        self.user_tokens = torch.from_numpy(users.tokens).to(dev)
        self.user_numeric = torch.from_numpy(users.numeric).to(dev)
        active = np.flatnonzero(self.count >= 1)
        # Validation users are the latest-arriving ones (by first event), as new users are
        # in the evaluation protocol and in the nightly run: random users flattered models
        # that had learned the older users' tastes.
        multi = np.flatnonzero(self.count >= 2)
        first_ts = train.ts[self.indptr[multi]]
        n_val = min(_MAX_VAL_USERS, round(cfg.val_share * len(multi))) if hold_out_users else 0
        self.val_users = np.sort(multi[np.lexsort((multi, first_ts))[len(multi) - n_val :]])
        self.train_users = np.setdiff1d(active, self.val_users)
        if len(self.train_users) == 0:
            raise ValueError("no users with interactions to train on")
        self.sizes = np.asarray(cfg.support_sizes, np.int64).clip(max=cfg.max_support)
        # Time prior as of each episode's cut: snapshots at quantiles of the event times.
        self.ts = train.ts
        self.snap_times = np.array([], np.int64)
        if cfg.prior_windows_days and len(train):
            qs = np.linspace(0.0, 1.0, cfg.prior_snapshots)
            self.snap_times = np.unique(np.quantile(train.ts, qs, method="lower"))
            table = prior_features(train.ts, train.item, train.n_items, self.snap_times,
                                   cfg.prior_windows_days)  # fmt: skip
            self.prior_snap = torch.from_numpy(table).to(dev)

    def sample(self, n: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """One batch of episodes: support (most recent first, -1 padded) and query."""
        rng, cfg = self.rng, self.cfg
        users = rng.choice(self.train_users, size=n)
        cnt, base = self.count[users], self.indptr[users]
        s = np.minimum(rng.choice(self.sizes, size=n), cnt - 1)
        first = rng.random(n) < cfg.first_cut_share
        cut = np.where(first, s, s + (rng.random(n) * (cnt - s)).astype(np.int64))
        width = max(int(s.max()), 1)
        j = np.arange(width)[None, :]
        sup_pos = base[:, None] + cut[:, None] - 1 - j
        sup_ok = j < s[:, None]
        q_pos = (
            base[:, None]
            + cut[:, None]
            + (rng.random((n, cfg.query_size)) * (cnt - cut)[:, None]).astype(np.int64)
        )
        batch = self._batch(users, sup_pos, sup_ok)
        if len(self.snap_times):
            at = np.searchsorted(self.snap_times, self.ts[base + cut], side="right") - 1
            batch["snap"] = self._t(at.clip(min=0))
            batch["prior_snap"] = self.prior_snap
        return batch, self._t(self.item[q_pos]), self._t(self.weight[q_pos])

    def _batch(self, users: np.ndarray, sup_pos: np.ndarray, sup_ok: np.ndarray) -> dict:
        sup_pos = np.where(sup_ok, sup_pos, 0)
        return {
            "sup_items": self._t(np.where(sup_ok, self.item[sup_pos], -1)),
            "sup_w": self._t(np.where(sup_ok, self.weight[sup_pos], 0.0).astype(np.float32)),
            "user_tokens": self.user_tokens[torch.from_numpy(users).to(self.dev)],
            "user_numeric": self.user_numeric[torch.from_numpy(users).to(self.dev)],
        }

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.dev)

    @torch.no_grad()
    def validate(self, model: MetaRecModel, autocast) -> float | None:
        """Mean NDCG@10 (full catalogue, support excluded) of the validation users given
        their first 1, 5 and 10 events (each user at each shot), the rest as relevant."""
        if len(self.val_users) == 0:
            return None
        model.eval()
        users = np.repeat(self.val_users, len(_VAL_SHOTS))
        cnt, base = self.count[users], self.indptr[users]
        shots = np.minimum(np.resize(np.asarray(_VAL_SHOTS), len(users)), cnt - 1)
        j = np.arange(max(_VAL_SHOTS))[None, :]
        # Support most recent first, like user_factors: positions shots-1 .. 0.
        batch = self._batch(users, base[:, None] + shots[:, None] - 1 - j, j < shots[:, None])
        with autocast:
            scores, _ = model(batch)
        n_items = scores.shape[1]
        scores = scores.float().masked_fill(seen_mask(batch["sup_items"], n_items), -1e9)
        # Relevant = every event after the support (binary), as in the evaluation protocol.
        n_rel = cnt - shots
        rows = np.repeat(np.arange(len(users)), n_rel)
        pos = np.repeat(base + shots - np.cumsum(n_rel) + n_rel, n_rel) + np.arange(len(rows))
        rel = torch.zeros(len(users), n_items, dtype=torch.bool, device=scores.device)
        rel[self._t(rows), self._t(self.item[pos])] = True
        top = scores.topk(min(10, n_items), dim=1).indices
        disc = 1.0 / torch.log2(torch.arange(top.shape[1], device=scores.device) + 2.0)
        dcg = (rel.gather(1, top).float() * disc).sum(1)
        k_rel = rel.sum(1).clamp(max=top.shape[1])
        idcg = torch.cumsum(disc, 0)[(k_rel - 1).clamp(min=0)]
        return float(torch.where(k_rel > 0, dcg / idcg, torch.zeros_like(dcg)).mean())
