"""Synthetic interaction logs with known structure and known faults (`metarec synth`).

Reads nothing: everything follows from `SynthParams` (the same parameters give the same
bytes). Users and items have latent tastes tied to their side features, Zipf popularity,
an evening peak and arrivals over time (`world`); with a dirty rate each faulty row gets
exactly one fault, counted per day under the names of `schemas.interactions.REASONS`
(`faults`); `files` renders the rows, `generator` runs the days.

Writes:
  raw/users/users.parquet      user_id, age, country, device, interests (`|`-joined)
  raw/items/items.parquet      item_id, title, category, tags (`|`-joined), price
  raw/interactions/dt=D/       part-a.csv, part-b.jsonl.gz, part-c.parquet and, on some
                               dirty days, part-d.jsonl.gz (a truncated gzip: unreadable)
  raw/_synth_manifest.json     expected row accounting per day (SynthManifest)
  raw/_synth_truth.npz         true taste vectors, arrival days, zero-shot mask
"""

from tasks.sources.synth.faults import DayManifest, SynthManifest
from tasks.sources.synth.generator import MANIFEST_PATH, TRUTH_PATH, generate
from tasks.sources.synth.params import EVENT_TYPES, FILES, SynthParams, rng_for
from tasks.sources.synth.world import World, build_world, sample_events

__all__ = [
    "EVENT_TYPES",
    "FILES",
    "MANIFEST_PATH",
    "TRUTH_PATH",
    "DayManifest",
    "SynthManifest",
    "SynthParams",
    "World",
    "build_world",
    "generate",
    "rng_for",
    "sample_events",
]
