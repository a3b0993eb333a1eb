"""The meta-learner's entry points (tasks.models.metalearner.stage): train_metalearner's
result, determinism, checkpoints in the lake, warm start, and the nightly train_stage."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
import torch

from tasks.config import Settings
from tasks.lake.storage import lake_from
from tasks.learn.history import History
from tasks.learn.holdout import holdout_for_night
from tasks.learn.interactions import Interactions
from tasks.models.metalearner import MetaConfig, MetaLearner, stage
from tasks.models.metalearner.stage import (
    TrainResult,
    TrainStageResult,
    latest_checkpoint,
    save_checkpoint,
    train_metalearner,
    train_stage,
)
from tasks.models.metalearner.training import select_device
from tests.models.contract import checkerboard, dense
from tests.models.worlds import catalogue, two_groups

SMALL = MetaConfig(dim=8, hidden=16, batch_users=32, eval_every=5, patience=100,
                   item_item_max_items=20_000)  # fmt: skip


def test_result_reports_the_training(small_world):
    train, side = small_world
    seen = []
    res = train_metalearner(train, side, SMALL, budget_seconds=600, max_steps=20, seed=0,
                            on_progress=seen.append)  # fmt: skip
    assert isinstance(res, TrainResult) and isinstance(res.model, MetaLearner)
    assert res.steps == 20 and res.device == "cpu" and res.warm_start is None
    assert res.log == seen == res.model.train_log and [r["step"] for r in res.log] == [
        5,
        10,
        15,
        20,
    ]
    assert res.best_metric == max(r["val_metric"] for r in res.log)
    info = res.model.train_info
    assert (info["steps"], info["best_step"], info["max_steps"]) == (20, res.best_step, 20)
    assert res.model.item_item and "mix" in info["item_item"]  # parts fitted after training
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.steps = 0


def test_deterministic_on_cpu_for_a_seed(small_world):
    train, side = small_world
    runs = [
        train_metalearner(train, side, SMALL, budget_seconds=60, max_steps=12, init_from=None,
                          seed=s).model.item_factors()
        for s in (3, 3, 4)
    ]  # fmt: skip
    runs = [dense(r) for r in runs]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_checkpoint_in_lake_and_warm_start(tmp_path, small_world):
    train, side = small_world
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
    np.testing.assert_array_equal(dense(loaded.item_factors()), dense(first.model.item_factors()))
    np.testing.assert_array_equal(dense(loaded.user_factors(train, side)),
                                  dense(first.model.user_factors(train, side)))  # fmt: skip

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


def test_train_stage_saves_and_warm_starts_the_next_night(tmp_path, monkeypatch):
    """Two nights on the checkerboard: each saves models/run_date=D/, the second starts
    from the first's checkpoint. load_history is replaced: the lake holds no silver here."""
    train, side = checkerboard()
    monkeypatch.setattr(stage, "load_history", lambda lake, day: History(day, train, side))
    lake = lake_from(tmp_path / "lake")
    settings = Settings(storage=str(tmp_path / "lake"), train_max_steps=3)
    d1, d2 = dt.date(2024, 2, 25), dt.date(2024, 2, 26)
    first = train_stage(lake, d1, settings)
    second = train_stage(lake, d2.isoformat(), settings)  # an ISO string is still accepted
    assert isinstance(first, TrainStageResult) and first.run_date == d1 and second.run_date == d2
    assert first.checkpoint == lake.url("models", run_date=d1)
    assert first.warm_start_from is None and second.warm_start_from == first.checkpoint
    # Trained on what was known at the night's holdout cut (tasks.learn.holdout).
    holdout = holdout_for_night(train, d1, settings.holdout_min_users,
                                settings.returning_gap_days, settings.seed)  # fmt: skip
    assert first.train_rows == len(holdout.train) < len(train)
    assert first.steps == second.steps == 3
    assert first.train_users == len(np.unique(holdout.train.user))
    # The model was fitted only on what was known at the cut, validated only on cases
    # whose targets lie after it (the future the lake has seen).
    given = []
    real = stage.train_metalearner
    monkeypatch.setattr(
        stage,
        "train_metalearner",
        lambda train, *a, **kw: given.append((train, kw)) or real(train, *a, **kw),
    )
    train_stage(lake, d1, settings)
    ((seen, kw),) = given
    cut = kw["holdout"].cut
    assert kw["now"] == cut and seen.ts.max() < cut.timestamp() <= kw["holdout"].targets.ts.min()
    folder = lake.path("models", run_date=d2)
    assert json.loads(lake.fs.cat(f"{folder}/train_log.json")) == second.log
    metrics = json.loads(lake.fs.cat(f"{folder}/metrics.json"))
    assert metrics["steps"] == 3 and metrics["warm_start"]["copied"] > 0
    assert latest_checkpoint(lake, d2 + dt.timedelta(days=1)) == second.checkpoint
    with pytest.raises(dataclasses.FrozenInstanceError):
        second.steps = 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_training(small_world):
    train, side = small_world
    dev, amp = select_device(None)
    assert dev.type == "cuda" and amp in (torch.bfloat16, torch.float16)
    res = train_metalearner(train, side, SMALL, budget_seconds=60, max_steps=10,
                            init_from=None, seed=0)  # fmt: skip
    assert res.device.startswith("cuda") and np.isfinite(dense(res.model.item_factors())).all()
