"""The published top-K table: the contract downstream SQL relies on.

Grain: one row per (run_date, user_id, rank). Changing a column is a new VERSION, and the
warehouse records the version it serves.
"""

from __future__ import annotations

import pyarrow as pa

VERSION = "1"
SEGMENTS = ("new", "warm", "cold_zero_shot")

RECOMMENDATIONS = pa.schema(
    [
        ("run_date", pa.date32()),
        ("user_id", pa.string()),
        ("rank", pa.int16()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("user_segment", pa.string()),
        ("generated_at", pa.timestamp("us", tz="UTC")),
    ]
)

# What the score stage stages for the publish stage's audit (staging/recommendations):
# the lists, each row naming the model that serves its user tonight (the per-segment
# gate), before the publish stage adds run_date and generated_at.
SCORED = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int16()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
        ("user_segment", pa.string()),
        ("model", pa.string()),
        ("model_version", pa.string()),
    ]
)
