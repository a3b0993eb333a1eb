"""The learn layer: what every model consumes, and how it is measured.

Reads silver/interactions up to a run date and the side tables raw/users, raw/items;
writes gold/episodes/run_date=D (per-user support/query tasks). `interactions` holds the
model input containers, `history` loads a night's, `split` is the temporal holdout every
evaluation and tuning shares, `metrics` the ranking metrics.
"""
