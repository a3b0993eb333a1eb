"""The training loop (tasks.models.metalearner.training): device choice, the loss goes
down, the trained network beats its untrained self, budget and patience end training."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.metalearner import MetaConfig, MetaLearner
from tasks.models.metalearner.training import (
    EpisodeSampler,
    TrainingRun,
    select_device,
    train_network,
)

CPU = torch.device("cpu")


def _setup(
    data: tuple[Interactions, SideFeatures], config: MetaConfig, seed: int = 0
) -> tuple[MetaLearner, EpisodeSampler]:
    """An untrained network on `data` and its episode sampler (seeded)."""
    train, side = data
    torch.manual_seed(seed)
    learner = MetaLearner.from_data(config, train, side)
    users = learner.user_encoder.encode(side.users, train.user_ids)
    weights = learner.event_weights(train.weight)
    return learner, EpisodeSampler(train, weights, users, config, np.random.default_rng(seed), CPU)


def _train(learner: MetaLearner, sampler: EpisodeSampler, **kw) -> TrainingRun:
    args = {"budget_seconds": 600.0, "max_steps": None, "amp_dtype": None, **kw}
    return train_network(learner.model, sampler, learner.config, device=CPU,
                         start=time.perf_counter(), **args)  # fmt: skip


def test_select_device():
    dev, amp = select_device("cpu")
    assert dev.type == "cpu" and amp is None
    auto, auto_amp = select_device(None)
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert (auto_amp is None) == (auto.type == "cpu")


def test_training_lowers_the_loss_and_beats_the_untrained_network(small_world):
    config = MetaConfig(dim=8, hidden=16, batch_users=32, eval_every=10, patience=100)
    learner, sampler = _setup(small_world, config)
    untrained = sampler.validate(learner.model, contextlib.nullcontext())
    run = _train(learner, sampler, max_steps=60)
    assert run.steps == 60 and [r["step"] for r in run.log] == [10, 20, 30, 40, 50, 60]
    # Measured ~3.45 -> ~2.45 (the two groups' items become predictable).
    assert run.log[-1]["train_loss"] < 0.85 * run.log[0]["train_loss"], run.log
    # Validation NDCG@10 of the same users: ~0.2 untrained (popularity) -> ~0.6 trained.
    assert run.best_metric > untrained + 0.2, (untrained, run.log)
    assert run.best_metric == max(r["val_metric"] for r in run.log)
    assert {r["step"]: r["val_metric"] for r in run.log}[run.best_step] == run.best_metric
    # The network is left at its best validated weights.
    assert sampler.validate(learner.model, contextlib.nullcontext()) == run.best_metric


def test_mixed_precision_loop_trains_on_the_cpu(small_world):
    # The CUDA path's autocast branch (bf16 there where supported), run here on the CPU:
    # CI has no GPU, so this is what keeps the AMP code path tested.
    config = MetaConfig(dim=8, hidden=16, batch_users=32, eval_every=10, patience=100)
    learner, sampler = _setup(small_world, config)
    run = _train(learner, sampler, max_steps=40, amp_dtype=torch.bfloat16)
    assert all(np.isfinite(r["train_loss"]) for r in run.log)
    assert run.log[-1]["train_loss"] < 0.9 * run.log[0]["train_loss"], run.log
    assert all(p.dtype == torch.float32 for p in learner.model.parameters())  # weights stay fp32


def test_sampled_softmax_lowers_the_loss(small_world):
    config = MetaConfig(dim=8, hidden=16, batch_users=32, full_softmax_max_items=10,
                        n_negatives=16, eval_every=10, patience=100)  # fmt: skip
    learner, sampler = _setup(small_world, config)
    run = _train(learner, sampler, max_steps=60)
    assert all(np.isfinite(r["train_loss"]) for r in run.log)
    assert run.log[-1]["train_loss"] < 0.85 * run.log[0]["train_loss"], run.log  # ~2.8 -> ~2.1


def test_budget_ends_training_and_progress_is_reported(small_world):
    config = MetaConfig(dim=8, hidden=16, batch_users=32, eval_every=5, patience=100)
    learner, sampler = _setup(small_world, config)
    seen = []
    t0 = time.perf_counter()
    run = _train(learner, sampler, budget_seconds=1.0, on_progress=seen.append)
    wall = time.perf_counter() - t0
    # The budget, then one step + one validation (a loaded CPU); ignoring it would run
    # 500+ steps (patience 100 x eval_every 5).
    assert wall < 1.0 + 8.0 and 1 <= run.steps < 500
    assert run.log == seen and run.log[-1]["step"] == run.steps
    assert set(run.log[0]) == {"step", "seconds", "train_loss", "val_metric"}
    assert run.best_metric == max(r["val_metric"] for r in run.log)


def test_patience_ends_training_without_improvement(small_world):
    config = MetaConfig(dim=8, hidden=16, batch_users=32, eval_every=5, patience=2, lr=0.0)
    learner, sampler = _setup(small_world, config)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    run = _train(learner, sampler, max_steps=1000)
    # lr 0: the metric never improves, so two validations after the first one end it.
    assert run.steps == 15 and run.best_step == 5
    for k, v in learner.model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_sampler_episodes_follow_the_histories(small_world):
    config = MetaConfig(dim=8, batch_users=64, query_size=8)
    _, sampler = _setup(small_world, config)
    train, _ = small_world
    assert len(np.intersect1d(sampler.val_users, sampler.train_users)) == 0
    batch, targets, target_w = sampler.sample(64)
    assert targets.shape == (64, 8) and target_w.shape == (64, 8)
    sup = batch["sup_items"].numpy()
    # Supports and queries stay inside one group's items (a user's own history).
    group = np.array([str(i)[0] for i in train.item_ids])
    for row in range(64):
        items = np.concatenate([sup[row][sup[row] >= 0], targets[row].numpy()])
        assert len(set(group[items])) == 1
