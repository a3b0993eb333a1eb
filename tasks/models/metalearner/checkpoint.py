"""The meta-learner's checkpoint as named files (no pickle), written to a local folder
(MetaLearner.save) or to the lake as the folder models/run_date=D/, replaced whole
(stage.save_checkpoint, through Lake.replace_folder):

  model.pt       the network's state dict (torch.save; read back with weights_only)
  config.json    model name, format version, MetaConfig, network dims, event scale,
                 time of the time prior, training record, kinds of the item-item parts
  item_ids.json  the catalogue, aligned with the item factors
  encoders.json  the user and item feature vocabularies (FeatureEncoder JSON)
  item_item.pt   the item-item parts as float16 tensors (only when there are parts)
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import torch

from tasks.models.metalearner.item_item import ItemItemPart, part_to_tensors


@dataclass(frozen=True)
class CheckpointFiles:
    """A checkpoint read back: the config.json document and the decoded files."""

    doc: dict
    item_ids: np.ndarray  # object array of str
    encoders: dict[str, str]  # "users" / "items": FeatureEncoder JSON
    state: dict[str, torch.Tensor]
    item_item: dict[str, dict]  # part kind -> part_to_tensors() document


def write_files(
    doc: dict,
    state: dict[str, torch.Tensor],
    item_ids: np.ndarray,
    encoders: dict[str, str],
    parts: list[ItemItemPart],
) -> dict[str, bytes]:
    """The files of a checkpoint, by name; `doc` becomes config.json."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    files = {
        "model.pt": buf.getvalue(),
        "config.json": json.dumps(doc, indent=2).encode(),
        "item_ids.json": json.dumps([str(i) for i in item_ids]).encode(),
        "encoders.json": json.dumps(encoders).encode(),
    }
    if parts:
        # float16 halves the n_items^2 file; the matrices were rounded to it at fit, so
        # loading gives back the very same factors.
        ii = io.BytesIO()
        torch.save({p.kind: part_to_tensors(p) for p in parts}, ii)
        files["item_item.pt"] = ii.getvalue()
    return files


def read_files(folder: str | Path, model_name: str, parts: bool = True) -> CheckpointFiles:
    """Read a checkpoint folder (local path or fsspec URL), item_item.pt only with `parts`;
    a ValueError when its config.json names another model than `model_name`."""
    fs, base = fsspec.core.url_to_fs(str(folder))

    def read(name: str) -> bytes:
        with fs.open(f"{base.rstrip('/')}/{name}", "rb") as f:
            return f.read()

    doc = json.loads(read("config.json"))
    if doc.get("model") != model_name:
        raise ValueError(f"{folder} is not a {model_name} checkpoint")
    item_ids = np.array(json.loads(read("item_ids.json")), dtype=object)
    encoders = json.loads(read("encoders.json"))
    state = torch.load(io.BytesIO(read("model.pt")), map_location="cpu", weights_only=True)
    item_item = {}
    if doc.get("item_item") and parts:
        item_item = torch.load(io.BytesIO(read("item_item.pt")), map_location="cpu",
                               weights_only=True)  # fmt: skip
    return CheckpointFiles(doc, item_ids, encoders, state, item_item)
