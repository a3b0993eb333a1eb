"""The one typed configuration object for metarec.

Every field has a default that runs the bundled demo; each can be overridden by a
`METAREC_<FIELD>` environment variable (e.g. `METAREC_STORAGE=s3://bucket/lake`) or by the
command line. Build it once at the entry point (CLI or flow) and pass it down.
"""

from __future__ import annotations

import datetime as dt

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
    # Events before this instant are quarantined as ts_before_floor (a wrong clock or unit;
    # a naive value means UTC). Epoch numbers are read by magnitude first (docs/validation.md).
    min_ts: dt.datetime = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
    # Ids (user_id, item_id) longer than this many characters, once trimmed, are quarantined.
    max_id_length: int = Field(256, ge=1)
    # Bounded ingest (hostile uploads): a landing file whose size, or decompressed size,
    # exceeds max_file_bytes is rejected as unreadable, and so is a compressed file whose
    # output passes ratio_check_min_bytes while exceeding max_compression_ratio times its
    # stored size (a "zip bomb"); the rest of its date goes on.
    max_file_bytes: int = Field(2 << 30, ge=1)
    max_compression_ratio: float = Field(200.0, gt=1)
    ratio_check_min_bytes: int = Field(8 << 20, ge=0)
    # Privacy at the edge: unknown landing columns are dropped (and reported per file)
    # unless this is set, when they are kept as JSON text in bronze `extra`.
    keep_unknown_columns: bool = False
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

    # ---- the night's holdout and gate (tasks/learn/holdout.py, tasks/serve/gate.py) ----
    # The history is cut at the end of D minus the shortest horizon (14, 30, 60, ... days)
    # after which at least this many users did something; they are the holdout.
    holdout_min_users: int = Field(200, ge=1)
    # A segment is decided on its own holdout users only when it has at least this many;
    # else it follows the pooled winner.
    gate_min_users: int = Field(30, ge=1)
    # A user whose latest event is more than this many days old is "returning after a gap".
    returning_gap_days: int = Field(30, ge=1)

    # ---- the schedule (flows/nightly.py; docs/operations.md, "Schedule and timezone") ----
    # A nightly run given no run_date (a deployment's cron run) processes the UTC date of
    # its scheduled start minus this many days: 1 = the last completed day, so the 02:00
    # run of day D publishes D-1 (0 would read a day still being landed).
    schedule_lag_days: int = Field(1, ge=0)

    # ---- one writer per lake (tasks/lake/lock.py; docs/operations.md, "Locking") ----
    # A run that finds the lake locked waits this long for it, then fails saying who holds it.
    lock_wait_seconds: float = Field(600.0, ge=0)
    # A lease not renewed for this long (its run crashed on another machine) is taken over;
    # the holder renews it every third of this.
    lock_ttl_seconds: float = Field(300.0, gt=0)

    # ---- publish guards (DESIGN.md step 7; tasks/serve/publish.py) ----
    # A staged table with fewer distinct users than this is refused (an empty one always).
    min_published_users: int = Field(1, ge=1)
    # Refused when its users are fewer than this share of the previous published night's.
    max_collapse: float = Field(0.5, ge=0.0, le=1.0)

    # ---- privacy (docs/privacy.md) ----
    # Name of a Prefect Secret block holding the pseudonym key (loaded only when set); the
    # environment variable METAREC_PSEUDONYM_KEY wins over it. The key itself is never a
    # setting, so it never reaches a fingerprint, a log or a repr.
    pseudonym_secret_block: str | None = None
    # Publish pseudonyms instead of real user ids in gold/recommendations (services look
    # users up by real id, hence off by default).
    publish_pseudonyms: bool = False

    # ---- retention, in days by partition date (`metarec gc`; None = keep forever) ----
    retain_days_raw: int | None = Field(None, ge=1)
    # A bronze partition goes only once its raw partition is gone too (else the next
    # ingest would rebuild it from raw).
    retain_days_bronze: int | None = Field(None, ge=1)
    retain_days_quarantine: int | None = Field(30, ge=1)
    # The newest complete checkpoint and the latest published night's are always kept.
    retain_days_models: int | None = Field(14, ge=1)
    retain_days_episodes: int | None = Field(7, ge=1)
    # Staged tables (a refused night's is kept there for inspection).
    retain_days_staging: int | None = Field(7, ge=1)


def settings_from(**values: object) -> Settings:
    """Settings from optional overrides (CLI options, flow parameters): a None or empty value
    means "the default, or the METAREC_* environment variable"."""
    return Settings(**{k: v for k, v in values.items() if v not in (None, "")})
