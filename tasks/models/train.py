"""Episodic meta-training of the meta-learner, and its checkpoints.

Reads the previous checkpoint `models/run_date=<earlier>/` (warm start); writes
`models/run_date=D/`: model.pt (state dict), config.json (model + training config),
item_ids.json, encoders.json (vocabularies), train_log.json, metrics.json.

Each step samples a batch of users and, per user, one episode: a support size from
`MetaConfig.support_sizes` (0 = zero-shot, from side features only), a cut (the user's
first events with probability `first_cut_share`, else uniform over the history), support =
the events just before the cut, query = `query_size` events drawn from everything after
it. This is the same task as gold/episodes (tasks/episodes.py) drawn afresh on tensors each
step, so no two epochs see the same cuts. Early stopping watches NDCG@10 over the full
catalogue on held-out users given their first 1, 5 or 10 events.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tasks.config import Settings
from tasks.lake.dates import parse_date
from tasks.lake.storage import Lake
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.metalearner import (
    MetaConfig,
    MetaLearner,
    MetaRecModel,
    prior_features,
    seen_mask,
)

TABLE = "models"
_VAL_SHOTS = (1, 5, 10)
_MAX_VAL_USERS = 300  # x 3 shots: one (900, n_items) score block


@dataclass
class TrainResult:
    """A trained meta-learner and how it got there."""

    model: MetaLearner
    log: list[dict]  # {step, seconds, train_loss, val_metric}
    best_step: int
    best_metric: float | None  # validation NDCG@10 at best_step (None: no validation users)
    steps: int
    seconds: float
    device: str
    warm_start: dict | None  # rows mapped from the previous checkpoint


def select_device(device: str | None = None) -> tuple[torch.device, torch.dtype | None]:
    """The device to train on and its autocast dtype: CUDA (bf16 where supported, else fp16
    with a GradScaler) when available and not overridden, CPU in fp32 otherwise."""
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen.type != "cuda":
        return chosen, None
    return chosen, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_metalearner(
    train: Interactions,
    side: SideFeatures,
    config: MetaConfig,
    *,
    budget_seconds: float,
    max_steps: int | None = None,
    init_from: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
    on_progress: Callable[[dict], None] | None = None,
    now: dt.datetime | None = None,
) -> TrainResult:
    """Meta-train within budget_seconds of wall time (and at most max_steps steps).

    `now` is when the model will score (its time prior is taken then); default: just
    after the last training event.

    Deterministic on CPU for a seed when max_steps, not the budget, ends training.
    """
    start = time.perf_counter()
    dev, amp_dtype = select_device(device)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    if dev.type == "cpu":
        # Every core this process may use, not the machine's count (containers, taskset).
        torch.set_num_threads(max(1, min(8, len(os.sched_getaffinity(0)))))
        # Multithreaded embedding backward sums in a racy order: without this, a rerun of
        # the same night trains a (slightly) different model and publishes another table.
        torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        learner = MetaLearner.from_data(config, train, side, now)
        warm = _warm_start(learner, init_from) if init_from else None
        model = learner.model.to(dev)
        episodes = _Episodes(train, side, learner, rng, dev)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        autocast = (
            torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        )
        log: list[dict] = []
        best = (-1.0, 0, None)  # (metric, step, state)
        step, losses, stale = 0, [], 0
        while True:
            model.train()
            batch, targets, target_w = episodes.sample(config.batch_users)
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
                metric = episodes.validate(model, autocast)
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
        learner.model = model.cpu().eval()
        # The item-item parts and their mixing weights, tuned on the same validation users:
        # outside the budget's loop (5-20 s at 1.7k items, 1-2 min at 9.7k).
        item_item = learner.fit_item_item(train, side, episodes.val_users)
        seconds = time.perf_counter() - start
        learner.train_info = {"budget_seconds": budget_seconds, "max_steps": max_steps,
                              "seed": seed, "device": str(dev), "steps": step,
                              "best_step": best[1], "seconds": round(seconds, 3),
                              "init_from": str(init_from) if init_from else None,
                              "item_item": item_item}  # fmt: skip
        learner.train_log = log
        metric = None if best[0] < 0 else best[0]
        return TrainResult(learner, log, best[1], metric, step, seconds, str(dev), warm)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


class _Episodes:
    """Vectorised episode sampler over a user-sorted Interactions, plus validation users."""

    def __init__(self, train: Interactions, side: SideFeatures, learner: MetaLearner, rng, dev):
        cfg = learner.config
        self.cfg, self.rng, self.dev = cfg, rng, dev
        self.indptr = train.user_slices()
        self.count = np.diff(self.indptr)
        self.item = train.item.astype(np.int64)
        self.weight = learner.event_weights(train.weight)
        ux = learner.user_encoder.encode(side.users, train.user_ids)
        self.user_tokens = torch.from_numpy(ux.tokens).to(dev)
        self.user_numeric = torch.from_numpy(ux.numeric).to(dev)
        active = np.flatnonzero(self.count >= 1)
        # Validation users are the latest-arriving ones (by first event), as new users are
        # in the evaluation protocol and in the nightly run: random users flattered models
        # that had learned the older users' tastes.
        multi = np.flatnonzero(self.count >= 2)
        first_ts = train.ts[self.indptr[multi]]
        n_val = min(_MAX_VAL_USERS, round(cfg.val_share * len(multi)))
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


def _warm_start(learner: MetaLearner, folder: str | Path) -> dict:
    """Copy a previous checkpoint's weights into a freshly built model: ID rows by item id,
    feature-token rows by token name (the vocabularies may have grown), every other tensor
    where its shape is unchanged. Catalogue buffers stay those of the new data."""
    old = MetaLearner.load(folder)
    new_sd, old_sd = learner.model.state_dict(), old.model.state_dict()
    by_name = {
        "items.id_emb.weight": (learner.item_ids, old.item_ids),
        "items.id_bias.weight": (learner.item_ids, old.item_ids),
        "items.feat.emb.weight": (
            learner.item_encoder.token_names(), old.item_encoder.token_names()),
        "encoder.user_feat.emb.weight": (
            learner.user_encoder.token_names(), old.user_encoder.token_names()),
    }  # fmt: skip
    catalogue = {"item_tokens", "item_numeric", "has_id", "item_logq"}
    report = {"rows_mapped": {}, "copied": 0, "skipped": []}
    for name, tensor in new_sd.items():
        if name in catalogue or name not in old_sd:
            continue
        if name in by_name:
            new_ids, old_ids = (np.asarray(x).astype(str) for x in by_name[name])
            _, new_idx, old_idx = np.intersect1d(new_ids, old_ids, return_indices=True)
            tensor[torch.from_numpy(new_idx)] = old_sd[name][torch.from_numpy(old_idx)]
            report["rows_mapped"][name] = len(new_idx)
        elif old_sd[name].shape == tensor.shape:
            tensor.copy_(old_sd[name])
            report["copied"] += 1
        else:
            report["skipped"].append(name)
    learner.model.load_state_dict(new_sd)
    return report


def save_checkpoint(result: TrainResult, lake: Lake, run_date: str | dt.date) -> str:
    """Write the trained model, its config, vocabularies, training log and metrics to
    models/run_date=D/ (one file at a time, each atomically); returns the folder URL."""
    day = parse_date(run_date)
    rel = lake.relpath(lake.path(TABLE, run_date=day))
    for name, payload in result.model.to_files().items():
        lake.write_bytes(f"{rel}/{name}", payload)
    lake.write_json(f"{rel}/train_log.json", result.log)
    metrics = {k: v for k, v in asdict(result).items() if k not in ("model", "log")}
    lake.write_json(f"{rel}/metrics.json", metrics)
    return lake.url(TABLE, run_date=day)


def latest_checkpoint(lake: Lake, before: str | dt.date) -> str | None:
    """Folder URL of the newest complete checkpoint with run_date strictly before `before`."""
    day = parse_date(before)
    for value in sorted(lake.partitions(TABLE, key="run_date"), reverse=True):
        if parse_date(value) >= day:
            continue
        folder = lake.path(TABLE, run_date=value)
        # model.pt is written first, metrics.json last: both present = a complete save.
        if lake.fs.exists(f"{folder}/model.pt") and lake.fs.exists(f"{folder}/metrics.json"):
            return lake.url(TABLE, run_date=value)
    return None


# ---- the nightly train stage -----------------------------------------------------------


@dataclass(frozen=True)
class TrainStageResult:
    """What the nightly train stage did (small: passed between Prefect tasks)."""

    run_date: dt.date
    checkpoint: str
    warm_start_from: str | None
    train_users: int
    train_rows: int
    steps: int
    seconds: float
    best_step: int
    best_metric: float | None
    device: str
    log: list[dict]


def train_stage(
    lake: Lake,
    run_date: str | dt.date,
    settings: Settings,
    on_progress: Callable[[dict], None] | None = None,
) -> TrainStageResult:
    """Meta-train on the part of the history before the evaluation cutoff, warm-starting
    from the previous night's checkpoint, and save `models/run_date=D/`.

    The same model is evaluated on the holdout (tasks/evaluate.py) and, if it is the
    champion, scores every user from their full history with no retraining.
    """
    from tasks.learn.history import load_history
    from tasks.learn.split import temporal_split

    day = parse_date(run_date)
    history = load_history(lake, day)
    split = temporal_split(history.interactions)
    init = latest_checkpoint(lake, day)
    result = train_metalearner(
        split.train,
        history.side,
        MetaConfig(),
        budget_seconds=settings.train_budget_seconds,
        max_steps=settings.train_max_steps,
        init_from=init,
        seed=settings.seed,
        on_progress=on_progress,
        now=split.cutoff,
    )
    path = save_checkpoint(result, lake, day)
    return TrainStageResult(
        run_date=day,
        checkpoint=path,
        warm_start_from=init,
        train_users=int(np.unique(split.train.user).size),
        train_rows=len(split.train),
        steps=result.steps,
        seconds=round(result.seconds, 3),
        best_step=result.best_step,
        best_metric=result.best_metric,
        device=result.device,
        log=result.log,
    )
