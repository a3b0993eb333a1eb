"""The meta-learner as a `Recommender`: built from data, trained (training.py), item-item
parts fitted (item_item_tuning.py), factors for any user's history, and saved as the
checkpoint files of checkpoint.py (no pickle)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from tasks.learn.features import FeatureEncoder
from tasks.learn.holdout import NightHoldout
from tasks.learn.interactions import Interactions, SideFeatures
from tasks.models.base import Recommender, SplitFactors
from tasks.models.metalearner.checkpoint import read_files, write_files
from tasks.models.metalearner.config import FORMAT_VERSION, MetaConfig
from tasks.models.metalearner.inputs import (
    catalogue_index,
    event_weights,
    network_user_factors,
    support_arrays,
)
from tasks.models.metalearner.item_item import (
    ItemItemPart,
    item_feature_matrix,
    part_from_tensors,
    user_rows,
)
from tasks.models.metalearner.item_item_tuning import fit_parts, fit_parts_on_holdout
from tasks.models.metalearner.network import MetaRecModel, network_dims, prior_features
from tasks.models.metalearner.training import (
    EpisodeSampler,
    TrainingRun,
    select_device,
    train_network,
    training_threads,
)
from tasks.models.metalearner.validation import HoldoutValidator
from tasks.models.metalearner.warm_start import copy_weights


@dataclass(frozen=True)
class FitReport:
    """How the last `fit` went (stage.TrainResult is built from it)."""

    run: TrainingRun
    seconds: float  # wall time of the whole fit (item-item parts included)
    device: str
    warm_start: dict | None  # what was copied from `init_from` (None: trained from scratch)


class MetaLearner(Recommender):
    """The `Recommender` adapter: fit (training.py), factors, save/load (no pickle)."""

    name: ClassVar[str] = "metalearner"

    def __init__(
        self,
        config: MetaConfig | None = None,
        *,
        budget_seconds: float = 20.0,
        max_steps: int | None = None,
        init_from: str | Path | None = None,
        seed: int = 0,
        device: str | None = None,
        on_progress: Callable[[dict], None] | None = None,
    ):
        """`fit` trains within budget_seconds of wall time and at most max_steps steps,
        warm-started from the checkpoint folder `init_from` (if any); `on_progress` gets
        each validation record."""
        self.config = config or MetaConfig()
        self.train_args = dict(budget_seconds=budget_seconds, max_steps=max_steps,
                               init_from=init_from, seed=seed, device=device)  # fmt: skip
        self.on_progress = on_progress
        self.model: MetaRecModel | None = None
        self.user_encoder = FeatureEncoder("user_id")
        self.item_encoder = FeatureEncoder("item_id")
        self._item_ids = np.array([], dtype=object)
        self.prior_now: int | None = None  # epoch seconds of the time prior in use
        self.w_scale = 1.0  # event values are log1p(value) / w_scale (mean 1 at fit)
        self.train_info: dict = {}  # how it was trained (budget, steps, device): in config.json
        self.train_log: list[dict] = []
        self.last_fit: FitReport | None = None  # not saved
        # Item-item parts (fit_item_item); empty = off (large catalogue, or not fitted yet).
        self.item_item: list[ItemItemPart] = []

    # ---- building and training --------------------------------------------------------
    @classmethod
    def from_data(
        cls,
        config: MetaConfig,
        train: Interactions,
        side: SideFeatures,
        now: dt.datetime | None = None,
    ) -> Self:
        """An untrained model whose catalogue, vocabularies and priors come from the data;
        the time prior is taken at `now` (default: just after the last event)."""
        return cls(config)._build(train, side, now)

    def _build(self, train: Interactions, side: SideFeatures, now: dt.datetime | None) -> Self:
        """(Re)initialise catalogue, vocabularies, event scale and an untrained network."""
        config = self.config
        self.item_item, self.train_info, self.train_log, self.last_fit = [], {}, [], None
        self._item_ids = np.asarray(train.item_ids).astype(object)
        self.user_encoder = FeatureEncoder.fit(side.users, "user_id", config.min_count)
        self.item_encoder = FeatureEncoder.fit(side.items, "item_id", config.min_count)
        item_x = self.item_encoder.encode(side.items, self._item_ids)
        counts = np.bincount(train.item, minlength=train.n_items).astype(np.float64)
        logw = np.log1p(np.clip(train.weight, 0, None))
        self.w_scale = float(logw.mean()) if len(logw) and logw.mean() > 0 else 1.0
        self.model = MetaRecModel.untrained(config, self._dims(), counts, item_x)
        self.set_time_prior(train, now)
        return self

    def fit(
        self,
        train: Interactions,
        side: SideFeatures,
        now: dt.datetime | None = None,
        holdout: NightHoldout | None = None,
    ) -> Self:
        """Meta-train on `train` within the budget given at construction, then fit the
        item-item parts; `now` is when the model will score (its time prior is taken then;
        default: just after the last training event). With the night's `holdout` (whose
        `train` is `train`) early stopping and the mixing weights read it, otherwise the
        latest-arriving training users. Deterministic on CPU for a seed under max_steps.
        """
        args = self.train_args
        start = time.perf_counter()
        dev, amp_dtype = select_device(args["device"])
        with training_threads(dev):
            # The RNG order is part of the model: seed, network init, warm start, sampler.
            torch.manual_seed(args["seed"])
            rng = np.random.default_rng(args["seed"])
            self._build(train, side, now)
            init_from = args["init_from"]
            warm = self._warm_start(type(self).load(init_from, parts=False)) if init_from else None
            model = self.model.to(dev)
            user_x = self.user_encoder.encode(side.users, train.user_ids)
            sampler = EpisodeSampler(train, self.event_weights(train.weight), user_x, self.config,
                                     rng, dev, hold_out_users=holdout is None)  # fmt: skip
            validate = None if holdout is None else HoldoutValidator(
                self.support_arrays(holdout.history),
                self.user_encoder.encode(side.users, holdout.history.user_ids),
                holdout.history, holdout.targets, dev,
            )  # fmt: skip
            run = train_network(
                model, sampler, self.config, budget_seconds=args["budget_seconds"],
                max_steps=args["max_steps"], device=dev, amp_dtype=amp_dtype, start=start,
                on_progress=self.on_progress, validate=validate,
            )  # fmt: skip
            self.model = model.cpu().eval()
            # Item-item parts, tuned on the same validation: outside the time budget.
            item_item = self.fit_item_item(train, side, sampler.val_users, holdout)
            seconds = time.perf_counter() - start
        self.train_info = {**{k: args[k] for k in ("budget_seconds", "max_steps", "seed")},
                           "device": str(dev), "steps": run.steps, "best_step": run.best_step,
                           "seconds": round(seconds, 3), "item_item": item_item,
                           "init_from": str(init_from) if init_from else None}  # fmt: skip
        self.train_log = run.log
        self.last_fit = FitReport(run, seconds, str(dev), warm)
        return self

    def _warm_start(self, old: MetaLearner) -> dict:
        """Copy a previous checkpoint's weights into this freshly built network, ID rows by
        item id and feature-token rows by token name (warm_start.copy_weights)."""
        return copy_weights(
            self.model, old.model, (self.item_ids, old.item_ids),
            (self.item_encoder.token_names(), old.item_encoder.token_names()),
            (self.user_encoder.token_names(), old.user_encoder.token_names()),
        )  # fmt: skip

    def set_time_prior(self, history: Interactions, now: dt.datetime | None = None) -> None:
        """Recompute p_i(now) from `history` (over this model's catalogue): the prior that
        scoring uses; call it to move a fitted model's "now" forward without retraining."""
        if self.model is None or not self.config.prior_windows_days:
            return
        items = self._to_catalogue(history)
        ok = items >= 0
        t = int(now.timestamp()) if now is not None else int(history.ts.max(initial=0)) + 1
        prior = prior_features(history.ts[ok], items[ok], len(self._item_ids), np.array([t]),
                               self.config.prior_windows_days)[0]  # fmt: skip
        self.model.item_prior.copy_(torch.from_numpy(prior))
        self.prior_now = t

    def _dims(self) -> dict:
        return network_dims(len(self._item_ids), self.item_encoder, self.user_encoder)

    # ---- item-item parts ---------------------------------------------------------------
    def fit_item_item(
        self,
        train: Interactions,
        side: SideFeatures,
        val_users: np.ndarray,
        holdout: NightHoldout | None = None,
    ) -> dict:
        """Add the item-item parts (item_item.py) on `train` (this model's catalogue),
        their mixing weights tuned on the night's `holdout` when given, else on
        `val_users` (indices into train's users). Returns a summary (weights, seconds)."""
        self.item_item = []
        n_items, cap = len(self._item_ids), self.config.item_item_max_items
        if not 0 < n_items <= cap or len(train) == 0 or not self.config.item_item_kinds:
            return {"skipped": f"{n_items} items (max {cap})"}
        item_f = self.item_factors()
        enc = self.item_encoder.encode(side.items, self._item_ids)

        def base(hist: Interactions) -> np.ndarray:
            return self.user_factors(hist, side) @ item_f.T

        feats = item_feature_matrix(enc.tokens, enc.numeric, self.item_encoder.n_tokens)
        cfg = self.config.item_item()
        fit = fit_parts(train, val_users, cfg, base, feats) if holdout is None else (
            fit_parts_on_holdout(train, holdout, cfg, base, feats))  # fmt: skip
        self.item_item, summary = fit
        return summary

    # ---- factors --------------------------------------------------------------------
    @property
    def item_ids(self) -> np.ndarray:
        return self._item_ids

    def exploration_items(self) -> np.ndarray:
        """Items without interactions at fit (placed by features alone), when the config's
        new_item_slot is on."""
        if not self.config.new_item_slot or self.model is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.model.has_id.cpu().numpy() == 0)

    @torch.no_grad()
    def item_factors(self) -> np.ndarray | SplitFactors:
        """[v_i, b_i, p_i(now)] per catalogue item; with item-item parts, SplitFactors whose
        sparse tail is the parts' columns (column i of each part's matrix scores item i)."""
        model = self._ready()
        vecs, bias = model.catalogue()
        parts = [vecs, bias.unsqueeze(-1), model.item_prior]
        base = torch.cat(parts, -1).float().cpu().numpy()
        if not self.item_item:
            return base
        tail = sp.hstack([p.weights.T for p in self.item_item], format="csr", dtype=np.float32)
        return SplitFactors(base, tail)

    @torch.no_grad()
    def user_factors(
        self, history: Interactions, side: SideFeatures, block: int = 4096
    ) -> np.ndarray | SplitFactors:
        """[u, 1, w(n)] per user, encoded `block` users at a time; with item-item parts,
        SplitFactors whose sparse tail is the parts' user rows."""
        sup_items, sup_w = self.support_arrays(history)
        user_x = self.user_encoder.encode(side.users, history.user_ids)
        base = network_user_factors(self._ready(), self.config, sup_items, sup_w, user_x, block)
        if not self.item_item:
            return base
        items, n_items = self._to_catalogue(history), len(self._item_ids)
        rows = user_rows(self.item_item, history, items, n_items, self.prior_now,
                         self.config.stale_days)  # fmt: skip
        return SplitFactors(base, rows)

    def support_arrays(self, history: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """(n_users, max_support) catalogue indices (-1 = none), most recent first, and
        their normalised event weights."""
        items = self._to_catalogue(history)
        return support_arrays(history, items, self.config.max_support, self.w_scale)

    def event_weights(self, values: np.ndarray) -> np.ndarray:
        """Event values compressed (log1p: counts can be huge) and scaled to mean 1 at fit."""
        return event_weights(values, self.w_scale)

    def _to_catalogue(self, history: Interactions) -> np.ndarray:
        return catalogue_index(self._item_ids, history)

    def _ready(self) -> MetaRecModel:
        if self.model is None:
            raise RuntimeError("the meta-learner is not fitted")
        self.model.eval()
        return self.model

    # ---- persistence (no pickle) ----------------------------------------------------
    def to_files(self) -> dict[str, bytes]:
        """The checkpoint as named files (checkpoint.py)."""
        model = self._ready()
        doc = {"model": self.name, "format_version": FORMAT_VERSION,
               "config": asdict(self.config), "dims": self._dims(), "w_scale": self.w_scale,
               "prior_now": self.prior_now, "training": self.train_info,
               "item_item": [p.kind for p in self.item_item]}  # fmt: skip
        encoders = {"users": self.user_encoder.to_json(), "items": self.item_encoder.to_json()}
        return write_files(doc, model.state_dict(), self._item_ids, encoders, self.item_item)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, payload in self.to_files().items():
            (folder / name).write_bytes(payload)

    @classmethod
    def load(cls, folder: str | Path, parts: bool = True) -> Self:
        """Rebuild from a folder (local path or fsspec URL) written by save/save_checkpoint;
        parts=False leaves the item-item parts out (a warm start needs the network only)."""
        files = read_files(folder, cls.name, parts)
        doc = files.doc
        self = cls(MetaConfig.from_dict(doc["config"]))
        self._item_ids = files.item_ids
        self.user_encoder = FeatureEncoder.from_json(files.encoders["users"])
        self.item_encoder = FeatureEncoder.from_json(files.encoders["items"])
        self.w_scale = float(doc["w_scale"])
        self.prior_now = doc.get("prior_now")
        self.train_info = doc.get("training", {})
        self.model = MetaRecModel(self.config, doc["dims"])
        self.model.load_state_dict(files.state)
        self.model.eval()
        cfg = self.config.item_item()
        self.item_item = [part_from_tensors(k, files.item_item[k], cfg)
                          for k in doc.get("item_item") or [] if k in files.item_item]  # fmt: skip
        return self
