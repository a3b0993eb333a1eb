"""Machinery shared by the baselines: config + named arrays with save/load (no pickle),
the catalogue check, and small popularity helpers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from tasks.learn.interactions import Interactions
from tasks.models.base import Recommender

# Weight of the popularity tie-breaker added to history-based scores: small enough never
# to reorder items with different model scores on these data.
TIE_BREAK = 1e-6


class Baseline(Recommender):
    """Config + named arrays; save/load and the catalogue check are shared."""

    config_cls: ClassVar[type]

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_cls()
        self._item_ids: np.ndarray | None = None
        self._state: dict[str, np.ndarray] = {}
        self._meta: dict[str, Any] = {}

    @property
    def item_ids(self) -> np.ndarray:
        if self._item_ids is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return self._item_ids

    def item_factors(self) -> np.ndarray:
        return self._state["item_factors"]

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"model": self.name, "config": dataclasses.asdict(self.config), "meta": self._meta}
        (folder / "config.json").write_text(json.dumps(doc, indent=2))
        np.savez(folder / "arrays.npz", item_ids=self.item_ids.astype(str), **self._state)

    @classmethod
    def load(cls, folder: Path) -> Self:
        doc = json.loads((Path(folder) / "config.json").read_text())
        if doc["model"] != cls.name:
            raise ValueError(f"{folder} holds a {doc['model']} model, not {cls.name}")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["config"].items()}
        model = cls(cls.config_cls(**fields))
        with np.load(Path(folder) / "arrays.npz", allow_pickle=False) as arrays:
            model._state = {k: arrays[k] for k in arrays.files if k != "item_ids"}
            model._item_ids = arrays["item_ids"].astype(object)
        model._meta = doc["meta"]
        return model

    def _start_fit(self, train: Interactions) -> sp.csr_matrix:
        self._item_ids = train.item_ids
        return train.csr(binary=True)

    def _history_matrix(self, history: Interactions) -> sp.csr_matrix:
        same = history.item_ids is self.item_ids or np.array_equal(history.item_ids, self.item_ids)
        if not same:
            raise ValueError(f"{self.name}: history is over a different item catalogue")
        return history.csr(binary=True)


def popularity(x: sp.csr_matrix) -> np.ndarray:
    """Users per item (binary relevance), float32."""
    return np.asarray(x.sum(axis=0), dtype=np.float32).ravel()


def with_popularity(dense_history: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Append the popularity column's user weight: 1 for empty histories, else tie-break."""
    extra = np.where(empty, 1.0, TIE_BREAK).astype(np.float32)[:, None]
    return np.hstack([dense_history.astype(np.float32), extra])
