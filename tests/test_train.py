"""Training loop: device choice, budget, determinism, checkpoints in the lake, warm start."""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import polars as pl
import pytest
import torch
from test_metalearner import catalogue, two_groups

from tasks.lake.storage import lake_from
from tasks.learn.interactions import Interactions
from tasks.models.metalearner import MetaConfig, MetaLearner
from tasks.models.train import latest_checkpoint, save_checkpoint, select_device, train_metalearner

SMALL = MetaConfig(dim=8, hidden=16, batch_users=32, eval_every=5, patience=100,
                   item_item_max_items=20_000)  # fmt: skip


@pytest.fixture(scope="module")
def data():
    frame, side = two_groups(n_per_group=15)
    return Interactions.from_frame(frame, item_ids=catalogue(side)), side


def test_select_device_cpu():
    dev, amp = select_device("cpu")
    assert dev.type == "cpu" and amp is None
    auto, auto_amp = select_device(None)
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert (auto_amp is None) == (auto.type == "cpu")


def test_cpu_training_respects_budget_and_reports(data):
    train, side = data
    seen = []
    t0 = time.perf_counter()
    res = train_metalearner(train, side, SMALL, budget_seconds=1.0, max_steps=None,
                            init_from=None, seed=0, on_progress=seen.append)  # fmt: skip
    wall = time.perf_counter() - t0
    # The budget, then one step + one validation (+ one-off torch imports, a loaded CPU);
    # ignoring it would run 500+ steps (patience 100 x eval_every 5).
    assert wall < 1.0 + 8.0 and res.steps < 500
    assert res.device == "cpu" and res.steps >= 1 and res.log == seen
    assert set(res.log[0]) == {"step", "seconds", "train_loss", "val_metric"}
    assert all(np.isfinite(r["train_loss"]) for r in res.log)
    assert res.best_step in [r["step"] for r in res.log]
    assert 0.0 <= res.best_metric <= 1.0
    assert res.model.train_info["steps"] == res.steps


def test_deterministic_on_cpu_for_a_seed(data):
    train, side = data
    runs = [
        train_metalearner(train, side, SMALL, budget_seconds=60, max_steps=12, init_from=None,
                          seed=s).model.item_factors()
        for s in (3, 3, 4)
    ]  # fmt: skip
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_sampled_softmax_path(data):
    train, side = data
    config = MetaConfig(dim=8, hidden=16, batch_users=32, full_softmax_max_items=10,
                        n_negatives=16, eval_every=5)  # fmt: skip
    res = train_metalearner(train, side, config, budget_seconds=60, max_steps=10,
                            init_from=None, seed=0)  # fmt: skip
    assert all(np.isfinite(r["train_loss"]) for r in res.log)
    assert res.log[-1]["train_loss"] < res.log[0]["train_loss"] + 1.0


def test_checkpoint_in_lake_and_warm_start(tmp_path, data):
    train, side = data
    lake = lake_from(tmp_path / "lake")
    d1, d2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
    assert latest_checkpoint(lake, d2) is None
    first = train_metalearner(train, side, SMALL, budget_seconds=60, max_steps=10,
                              init_from=None, seed=0)  # fmt: skip
    url = save_checkpoint(first, lake, d1)
    assert latest_checkpoint(lake, d2) == url and latest_checkpoint(lake, d1) is None
    names = {p.rsplit("/", 1)[-1] for p in lake.fs.ls(lake.path("models", run_date=d1))}
    assert {"model.pt", "config.json", "item_ids.json", "encoders.json",
            "train_log.json", "metrics.json"} <= names  # fmt: skip
    assert ("item_item.pt" in names) == bool(first.model.item_item)
    config = json.loads(lake.fs.cat(f"{lake.path('models', run_date=d1)}/config.json"))
    assert config["training"]["steps"] == 10 and config["config"]["dim"] == 8
    loaded = MetaLearner.load(url)
    # Factors include the item-item parts (saved in item_item.pt): exact.
    assert [p.kind for p in loaded.item_item] == [p.kind for p in first.model.item_item]
    np.testing.assert_array_equal(loaded.item_factors(), first.model.item_factors())
    np.testing.assert_array_equal(loaded.user_factors(train, side),
                                  first.model.user_factors(train, side))  # fmt: skip

    # The next night: two new items (one with a new feature value) and a new user.
    frame, side2 = two_groups(n_per_group=15)
    extra = pl.DataFrame({"user_id": ["nu", "nu"], "item_id": ["0c", "a0"], "ts": [1, 2],
                          "value": [1.0, 1.0]})  # fmt: skip
    items2 = pl.concat([side2.items, pl.DataFrame({"item_id": ["0c"], "kind": ["c"],
                        "tags": ["c|common"], "title": ["0c"]})])  # fmt: skip
    side2 = type(side2)(users=side2.users, items=items2)
    frame2 = pl.concat([frame, extra.with_columns(pl.col("ts").cast(frame.schema["ts"]))])
    train2 = Interactions.from_frame(frame2, item_ids=catalogue(side2))
    frozen = MetaConfig(**{**SMALL.__dict__, "lr": 0.0})  # no update: only the copy shows
    res = train_metalearner(train2, side2, frozen, budget_seconds=60, max_steps=1,
                            init_from=latest_checkpoint(lake, d2), seed=1)  # fmt: skip
    mapped = res.warm_start["rows_mapped"]
    assert mapped["items.id_emb.weight"] == len(first.model.item_ids)
    assert mapped["items.feat.emb.weight"] == len(first.model.item_encoder.token_names())
    old_state = first.model.model.state_dict()
    new_state = res.model.model.state_dict()
    old_pos = list(first.model.item_ids).index("b7")
    new_pos = list(res.model.item_ids).index("b7")
    assert new_pos != old_pos  # 0c shifted the catalogue: rows are mapped by id
    torch.testing.assert_close(new_state["items.id_emb.weight"][new_pos],
                               old_state["items.id_emb.weight"][old_pos])  # fmt: skip
    torch.testing.assert_close(new_state["encoder.q.weight"], old_state["encoder.q.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_training(data):
    train, side = data
    dev, amp = select_device(None)
    assert dev.type == "cuda" and amp in (torch.bfloat16, torch.float16)
    res = train_metalearner(train, side, SMALL, budget_seconds=60, max_steps=10,
                            init_from=None, seed=0)  # fmt: skip
    assert res.device.startswith("cuda") and np.isfinite(res.model.item_factors()).all()
