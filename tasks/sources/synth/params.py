"""What `metarec synth` generates, and the codes every stage of the generator shares.

Rows carry two small integer codes from sampling to rendering: the landing file they go
to (an index of FILES) and their injected fault (an index of `schemas.interactions.REASONS`,
or DUPLICATE, or -1 for a clean row).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from schemas.interactions import REASONS

FILES = ("part-a.csv", "part-b.jsonl.gz", "part-c.parquet", "part-d.jsonl.gz")
CSV, JSONL, PARQUET, CORRUPT = range(4)
EVENT_TYPES = ("view", "click", "cart", "purchase", "rating", "play")

# Fault codes index REASONS; DUPLICATE marks an exact copy (counted, not quarantined).
CODE = {name: code for code, name in enumerate(REASONS)}
DUPLICATE = len(REASONS)


@dataclass(frozen=True)
class SynthParams:
    """What `metarec synth` generates (users..seed and start are command-line options)."""

    users: int = 1_000
    items: int = 500
    days: int = 7
    events_per_day: int = 5_000
    dirty_rate: float = 0.0  # about this share of rows gets one fault, spread over kinds
    seed: int = 0
    start: dt.date = dt.date(2024, 1, 1)
    dim: int = 8  # latent taste dimension
    zero_shot_share: float = 0.05  # users in raw/users who never interact
    initial_share: float = 0.6  # users/items present on day 0; the rest arrive later

    def __post_init__(self) -> None:
        if min(self.users, self.items, self.days, self.events_per_day) < 1:
            raise ValueError("users, items, days and events_per_day must be >= 1")
        if not 0.0 <= self.dirty_rate <= 0.5:
            raise ValueError("dirty_rate must be within [0, 0.5]")


def rng_for(params: SynthParams, *stream: int) -> np.random.Generator:
    """The random stream of one purpose: (0,) for the world, (1, t) for day t's rows."""
    # One independent stream per purpose and day: a day's bytes depend on nothing else.
    return np.random.default_rng([params.seed, *stream])
