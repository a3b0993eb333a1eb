"""Side features encoded into model inputs (the vocabularies are saved with the model).

Reads nothing itself (tasks.learn.side_tables reads the side tables); the fitted encoders
are saved with each model checkpoint.

A `FeatureEncoder` infers each feature column's kind once, at fit:
  numeric      numbers, booleans, dates (as epoch days): standardised, null -> 0 + a
               missing flag (two numeric inputs per column)
  categorical  strings: a vocabulary of values seen at least `min_count` times
  multi        strings holding `|`-separated values (e.g. genres `Action|Comedy`) or list
               columns: a vocabulary of the single values
Display columns (`title`, `name`) and identifier-like strings (almost every value
distinct, e.g. URLs) are not features. All categorical values share one token space: index
0 is padding, each column owns a block whose first index is that column's unknown (OOV)
token, so the model needs one embedding table. `encode` returns a fixed-width token
matrix (one slot per categorical column, `max_len` slots per multi column, padded with 0)
and a numeric matrix, aligned with the ids asked for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

DISPLAY_COLUMNS = frozenset({"title", "name"})
SEPARATOR = "|"


# ---- encoding --------------------------------------------------------------------------
@dataclass
class ColumnSpec:
    """One feature column: its kind and what was learned at fit."""

    name: str
    kind: str  # numeric | categorical | multi
    vocab: list[str] = field(default_factory=list)  # local index k+1 -> vocab[k]; 0 = unknown
    offset: int = 0  # global token index of this column's unknown token
    max_len: int = 1  # token slots (1 for categorical)
    mean: float = 0.0
    std: float = 1.0


@dataclass
class EncodedFeatures:
    """Model inputs for n rows: tokens (n, n_slots) int64 (0 = padding), numeric (n, m)."""

    tokens: np.ndarray
    numeric: np.ndarray


@dataclass
class FeatureEncoder:
    """Column kinds, vocabularies and numeric statistics fitted on one side table."""

    key: str
    columns: list[ColumnSpec] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        """Size of the shared token space (padding + every column's block)."""
        cats = [c for c in self.columns if c.kind != "numeric"]
        return 1 + sum(len(c.vocab) + 1 for c in cats)

    @property
    def n_slots(self) -> int:
        return sum(c.max_len for c in self.columns if c.kind != "numeric")

    @property
    def n_numeric(self) -> int:
        return 2 * sum(c.kind == "numeric" for c in self.columns)

    @classmethod
    def fit(
        cls, frame: pl.DataFrame | None, key: str, min_count: int = 2, max_bag: int = 16
    ) -> FeatureEncoder:
        """Infer column kinds and fit vocabularies / statistics on a side table (or none)."""
        enc = cls(key=key)
        if frame is None or frame.height == 0:
            return enc
        offset = 1
        for name in frame.columns:
            if name == key or name.lower() in DISPLAY_COLUMNS:
                continue
            spec = _fit_column(frame.get_column(name), min_count, max_bag)
            if spec is None:
                continue
            if spec.kind != "numeric":
                spec.offset = offset
                offset += len(spec.vocab) + 1
            enc.columns.append(spec)
        return enc

    def token_names(self) -> list[str]:
        """Name of every global token index (`col=value`, `col=<unk>`, `<pad>`)."""
        names = ["<pad>"]
        for c in self.columns:
            if c.kind != "numeric":
                names += [f"{c.name}=<unk>"] + [f"{c.name}={v}" for v in c.vocab]
        return names

    def encode(self, frame: pl.DataFrame | None, ids: np.ndarray) -> EncodedFeatures:
        """Encode the rows of `frame` for `ids` (in that order); ids without a row get
        unknown tokens and missing flags."""
        n = len(ids)
        tokens = np.zeros((n, self.n_slots), np.int64)
        numeric = np.zeros((n, self.n_numeric), np.float32)
        base = pl.DataFrame({self.key: np.asarray(ids).astype(str)}).with_row_index("_row")
        if frame is not None and frame.height:
            side = frame.with_columns(pl.col(self.key).cast(pl.String)).unique(self.key)
            keep = [self.key] + [c.name for c in self.columns if c.name in side.columns]
            base = base.join(side.select(keep), on=self.key, how="left").sort("_row")
        slot, j = 0, 0
        for c in self.columns:
            col = base.get_column(c.name) if c.name in base.columns else pl.Series([None] * n)
            if c.kind == "numeric":
                x = _as_float(col)
                numeric[:, j] = ((x - c.mean) / c.std).fill_null(0.0).to_numpy()
                numeric[:, j + 1] = x.is_null().to_numpy()
                j += 2
            elif c.kind == "categorical":
                tokens[:, slot] = c.offset + _lookup(col.cast(pl.String), c.vocab)
                slot += 1
            else:
                rows, pos, local = _explode_bag(col, c.vocab, c.max_len)
                tokens[rows, slot + pos] = c.offset + local
                slot += c.max_len
        return EncodedFeatures(tokens=tokens, numeric=numeric)

    def to_json(self) -> str:
        return json.dumps({"key": self.key, "columns": [asdict(c) for c in self.columns]})

    @classmethod
    def from_json(cls, text: str) -> FeatureEncoder:
        doc = json.loads(text)
        return cls(key=doc["key"], columns=[ColumnSpec(**c) for c in doc["columns"]])


def _fit_column(col: pl.Series, min_count: int, max_bag: int) -> ColumnSpec | None:
    name, n = col.name, len(col)
    dtype = col.dtype
    if dtype.is_numeric() or dtype == pl.Boolean or dtype.is_temporal():
        return _numeric_spec(name, _as_float(col))
    if isinstance(dtype, pl.List) or (
        dtype == pl.String and col.str.contains(SEPARATOR, literal=True).any()
    ):
        values = _bag_values(col).drop_nulls()
        counts = values.value_counts()
        sizes = _bag_values(col, keep_rows=True).list.len()
        max_len = int(min(max_bag, max(1, sizes.max() or 1)))
        return ColumnSpec(name, "multi", _vocab(counts, min_count), max_len=max_len)
    if dtype != pl.String:
        return None
    text = col.str.strip_chars()
    as_num = text.cast(pl.Float64, strict=False)
    if as_num.null_count() == text.null_count() and text.drop_nulls().len() > 0:
        return _numeric_spec(name, as_num)
    n_unique = text.n_unique()
    if n > 50 and n_unique > 0.5 * n:  # identifier-like (URLs, free text): not a feature
        return None
    return ColumnSpec(name, "categorical", _vocab(text.value_counts(), min_count))


def _numeric_spec(name: str, x: pl.Series) -> ColumnSpec | None:
    if x.drop_nulls().len() == 0:
        return None
    mean = float(x.mean())
    std = float(x.std() or 0.0)
    return ColumnSpec(name, "numeric", mean=mean, std=std if std > 1e-12 else 1.0)


def _as_float(col: pl.Series) -> pl.Series:
    if col.dtype.is_temporal():
        # Dates and timestamps as days since the epoch: a scale the standardiser can use.
        return col.cast(pl.Datetime("us")).dt.epoch("s").cast(pl.Float64) / 86_400.0
    if col.dtype == pl.String:
        return col.str.strip_chars().cast(pl.Float64, strict=False)
    return col.cast(pl.Float64, strict=False)


def _vocab(counts: pl.DataFrame, min_count: int) -> list[str]:
    value, count = counts.columns
    kept = counts.filter(pl.col(count) >= min_count, pl.col(value).is_not_null())
    # Most frequent first, ties by value: a stable order for a given table.
    return kept.sort([count, value], descending=[True, False])[value].cast(pl.String).to_list()


def _bag_values(col: pl.Series, keep_rows: bool = False) -> pl.Series:
    if isinstance(col.dtype, pl.List):
        bags = col.cast(pl.List(pl.String))
    else:
        bags = col.cast(pl.String).str.split(SEPARATOR)
    bags = bags.list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
    return bags if keep_rows else bags.explode()


def _lookup(values: pl.Series, vocab: list[str]) -> np.ndarray:
    """Local vocabulary index of each value (0 = unknown or null)."""
    # Typed: an empty vocabulary (no value repeats in a small table) must still join.
    table = pl.DataFrame({"v": pl.Series(vocab, dtype=pl.String),
                          "i": np.arange(1, len(vocab) + 1, dtype=np.int64)})  # fmt: skip
    frame = pl.DataFrame({"v": values.cast(pl.String).str.strip_chars()}).with_row_index("_r")
    return frame.join(table, on="v", how="left").sort("_r")["i"].fill_null(0).to_numpy()


def _explode_bag(
    col: pl.Series, vocab: list[str], max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, position, local index) of each bag value kept (the first max_len of a row)."""
    bags = pl.DataFrame({"b": _bag_values(col, keep_rows=True)}).with_row_index("_r")
    flat = bags.explode("b").drop_nulls("b").with_columns(pos=pl.int_range(pl.len()).over("_r"))
    flat = flat.filter(pl.col("pos") < max_len)
    table = pl.DataFrame({"b": pl.Series(vocab, dtype=pl.String),
                          "i": np.arange(1, len(vocab) + 1, dtype=np.int64)})  # fmt: skip
    flat = flat.join(table, on="b", how="left", maintain_order="left")
    return (
        flat["_r"].to_numpy().astype(np.int64),
        flat["pos"].to_numpy().astype(np.int64),
        flat["i"].fill_null(0).to_numpy(),
    )
