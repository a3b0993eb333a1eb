"""Sources: where raw data comes from. Each source lands files in the lake's raw zone.

Reads a MovieLens folder (`movielens`: ML-100K or ml-latest-small, e.g. the bundled copy
at data/ml-latest-small) or nothing at all (`synth`: a seeded synthetic world).
Writes, atomically and deterministically (a rerun gives the same bytes):
  raw/interactions/dt=D/   landing files of date D as delivered to ingest: MovieLens
                           `<flavour>.csv.gz`; synth part-a.csv, part-b.jsonl.gz,
                           part-c.parquet (and a truncated part-d.jsonl.gz on dirty days)
  raw/users/users.parquet  user features (ML-100K and synth; ml-latest-small has none)
  raw/items/items.parquet  item features
  raw/_synth_manifest.json the synthetic generator's expected accounting per day
  raw/_synth_truth.npz     its hidden truth: taste vectors, arrival days, zero-shot users
"""

from tasks.sources.movielens import (
    ImportResult,
    bundled_sample_path,
    detect_flavour,
    import_movielens,
    read_ml100k,
    read_ml_latest,
)
from tasks.sources.synth import DayManifest, SynthManifest, SynthParams, generate

__all__ = [
    "DayManifest",
    "ImportResult",
    "SynthManifest",
    "SynthParams",
    "bundled_sample_path",
    "detect_flavour",
    "generate",
    "import_movielens",
    "read_ml100k",
    "read_ml_latest",
]
