"""The one typed configuration object for metarec.

Every field has a default that runs the bundled demo; each can be overridden by a
`METAREC_<FIELD>` environment variable (e.g. `METAREC_STORAGE=s3://bucket/lake`) or by the
command line. Build it once at the entry point (CLI or flow) and pass it down.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_EVENT_TYPES = ("interaction", "view", "click", "cart", "purchase", "rating", "play")


class Settings(BaseSettings):
    """Pipeline configuration (not model hyperparameters: those live with each model)."""

    model_config = SettingsConfigDict(env_prefix="METAREC_", frozen=True, extra="ignore")

    # Root of the lake: a local path or any fsspec URL (file://, memory://, s3://...).
    # Credentials for object stores come from the environment, never from here.
    storage: str = "./lake"
    # Event types accepted by validation; anything else is quarantined.
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    # Inclusive bounds for `value` (ratings, counts, prices); null values are allowed.
    value_min: float = 0.0
    value_max: float = 1e7
    # Events later than the end of their landing day plus this many hours are "future".
    future_tolerance_hours: float = 1.0
    # A partition whose quarantined share exceeds this fails the validate stage.
    max_bad_share: float = Field(0.05, ge=0.0, le=1.0)
    # Rows validated by Great Expectations itself per partition (the full partition when
    # smaller); the row-level rules always run on every row (see docs/validation.md).
    gx_sample_rows: int = 200_000
    # Recommendations per user in the published table.
    top_k: int = Field(20, ge=1, le=1000)
    # Users scored per block in top-K scoring (memory bound: block x n_items floats).
    score_block_users: int = 4096
    # Seed for everything random (episodes, training, evaluation splits).
    seed: int = 0
    # Meta-learner training length: `train_max_steps` steps (deterministic for a seed, so a
    # rerun of a night reproduces its model), cut short by `train_budget_seconds` of wall
    # time on a slow machine, or earlier by early stopping on the validation users.
    train_max_steps: int = Field(300, ge=1)
    train_budget_seconds: float = Field(45.0, gt=0)


def settings_from(**values: object) -> Settings:
    """Settings from optional overrides (CLI options, flow parameters): a None or empty value
    means "the default, or the METAREC_* environment variable"."""
    return Settings(**{k: v for k, v in values.items() if v not in (None, "")})
