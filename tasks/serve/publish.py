"""The publish stage: audit the staged top-K table, publish it, record the night.

Reads `staging/recommendations/run_date=D/model=M/` (what the score stage staged); writes
`gold/recommendations/run_date=D/` (contract: schemas.recommendations), the night's row of
`gold/runs/stage=nightly/dt=D/` (`tasks.serve.runs`) and makes sure `warehouse.duckdb`
serves the views (`tasks.serve.warehouse`). A table that breaks the contract raises before
anything becomes visible, and the published tables stay as they were. A table that fails
a publish guard (`tasks.serve.guards`: empty, or collapsed versus the previous night) is
refused: the night is recorded with status `refused`, the staged table is kept, and
`PublishRefused` says why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from schemas.recommendations import SEGMENTS
from schemas.tables import RECOMMENDATIONS, STAGING_RECOMMENDATIONS
from tasks.config import Settings
from tasks.lake.pseudonyms import pseudonyms_for
from tasks.lake.storage import Lake
from tasks.serve.gate import ChampionDecision, SegmentGate
from tasks.serve.guards import PublishRefused, refusal
from tasks.serve.runs import record_run, stage_columns
from tasks.serve.score import STAGED, ScoreStageResult
from tasks.serve.warehouse import ensure_warehouse


# ---- gold/recommendations ---------------------------------------------------------
def write_recommendations(
    lake: Lake,
    run_date: dt.date,
    recs: pl.DataFrame,
    model_name: str,
    model_version: str,
    generated_at: dt.datetime,
) -> str:
    """Write (or replace) the top-K partition of `run_date`; returns the file path.

    Args:
        lake: the lake.
        run_date: the nightly date D (also stored as a column inside the file).
        recs: user_id, rank, item_id, score, user_segment (from tasks.serve.score.recommend).
        model_name: the model whose scores these are (the `model` column).
        model_version: its version (e.g. the checkpoint's run date or hash).
        generated_at: when the lists were computed; naive datetimes are taken as UTC.

    Raises:
        ValueError: when `recs` breaks the contract (missing columns, nulls, ranks not
            1..n per user, an item twice in a list, a non-finite score, an unknown segment).
    """
    table = _recommendations_table(run_date, recs, model_name, model_version, generated_at)
    return lake.write_partition(RECOMMENDATIONS, table, run_date=run_date)


def _recommendations_table(
    day: dt.date, recs: pl.DataFrame, model: str, version: str, generated_at: dt.datetime
) -> pa.Table:
    """Check `recs` against the contract and return it typed, ordered and sorted."""
    needed = ("user_id", "rank", "item_id", "score", "user_segment")
    missing = [c for c in needed if c not in recs.columns]
    if missing:
        raise ValueError(f"recommendations lack columns {missing}")
    if not model or not version:
        raise ValueError("model name and model version must be non-empty")
    _check_lists(recs)
    when = generated_at.replace(tzinfo=dt.UTC) if generated_at.tzinfo is None else generated_at
    frame = (
        recs.lazy()
        .select(
            pl.lit(day, pl.Date).alias("run_date"),
            pl.col("user_id").cast(pl.String),
            pl.col("rank").cast(pl.Int16, strict=True),
            pl.col("item_id").cast(pl.String),
            pl.col("score").cast(pl.Float32),
            # Per row when the score stage composed lists from several models (the gate).
            (pl.col("model") if "model" in recs.columns else pl.lit(model, pl.String))
            .cast(pl.String)
            .alias("model"),
            (
                pl.col("model_version")
                if "model_version" in recs.columns
                else pl.lit(version, pl.String)
            )
            .cast(pl.String)
            .alias("model_version"),
            pl.col("user_segment").cast(pl.String),
            pl.lit(when.astimezone(dt.UTC), pl.Datetime("us", "UTC")).alias("generated_at"),
        )
        # Sorted by user: Parquet min/max statistics then let a one-user lookup skip most
        # row groups.
        .sort("user_id", "rank")
        .collect()
    )
    contract = RECOMMENDATIONS.schema
    table = frame.to_arrow().cast(contract).replace_schema_metadata(None)
    if not table.schema.equals(contract):
        raise ValueError(f"schema {table.schema} is not the contract {contract}")
    return table


def _check_lists(recs: pl.DataFrame) -> None:
    """Raise ValueError unless every list is ranked 1..n without repeats, nulls or NaNs."""
    nulls = {c: n for c, n in recs.null_count().row(0, named=True).items() if n}
    if nulls:
        raise ValueError(f"null values in recommendations: {nulls}")
    if recs.height == 0:
        return
    per_user = recs.group_by("user_id").agg(
        pl.len().alias("n"),
        pl.col("rank").min().alias("lo"),
        pl.col("rank").max().alias("hi"),
        pl.col("rank").n_unique().alias("ranks"),
        pl.col("item_id").n_unique().alias("items"),
    )
    bad = per_user.filter(
        (pl.col("lo") != 1) | (pl.col("hi") != pl.col("n")) | (pl.col("ranks") != pl.col("n"))
    )
    # Examples leave the user id out: the message reaches logs and the UI (docs/privacy.md).
    if bad.height:
        example = bad.drop("user_id").row(0, named=True)
        raise ValueError(f"ranks are not 1..n for {bad.height} users, e.g. {example}")
    repeats = per_user.filter(pl.col("items") != pl.col("n"))
    if repeats.height:
        example = repeats.drop("user_id").row(0, named=True)
        raise ValueError(f"{repeats.height} users have an item twice, e.g. {example}")
    if not recs.select(pl.col("score").cast(pl.Float64).is_finite().all()).item():
        raise ValueError("non-finite scores in recommendations")
    unknown = recs.filter(~pl.col("user_segment").is_in(list(SEGMENTS)))
    if unknown.height:
        raise ValueError(
            f"unknown user_segment {unknown['user_segment'].unique().to_list()[:5]}; "
            f"expected one of {SEGMENTS}"
        )


# ---- the nightly publish stage ---------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    """What the nightly publish stage made visible (small: rendered as artifacts)."""

    run_date: dt.date
    path: str
    url: str
    model: str
    model_version: str
    rows: int
    users: int
    status: str  # as recorded in gold/runs: published | published_baseline
    warehouse: str | None
    preview: list[dict]  # the first rows, user ids as pseudonyms (for the UI)


def publish_stage(
    lake: Lake,
    run_date: dt.date,
    settings: Settings,
    scored: ScoreStageResult,
    decision: SegmentGate | ChampionDecision,
    stage_seconds: Mapping[str, float],
    started_at: dt.datetime | None = None,
) -> PublishResult:
    """Check the staged table against the contract, publish it atomically as
    `gold/recommendations/run_date=D/`, make sure the warehouse views exist, and record
    the run in `gold/runs/`. `decision` is the evaluate stage's gate (per segment),
    `scored` the lists the score stage staged."""
    stage_columns(stage_seconds)  # a bad timing record fails before anything is visible
    gate = SegmentGate.of(decision)
    decision = gate.pooled
    status = "published" if gate.published_from_candidate else "published_baseline"
    staged = lake.read_partition(STAGING_RECOMMENDATIONS, run_date=run_date, model=STAGED)
    now = dt.datetime.now(dt.UTC)
    where = lake.path(STAGING_RECOMMENDATIONS, run_date=run_date, model=STAGED)
    if reason := refusal(lake, run_date, settings, staged, where):
        _record_refusal(lake, run_date, settings, scored, gate, stage_seconds,
                        started_at or now, reason)  # fmt: skip
        raise PublishRefused(reason)
    pseudonyms = pseudonyms_for(lake, settings)
    # Services look users up by real id; a team may publish pseudonyms instead.
    table = pseudonyms.frame(staged) if settings.publish_pseudonyms else staged
    path = write_recommendations(lake, run_date, table, scored.model, scored.model_version, now)
    # The whole night's staging goes: every model staged for it, not only the published one.
    lake.delete_partition(STAGING_RECOMMENDATIONS, run_date=run_date)
    warehouse = ensure_warehouse(lake)
    record_run(
        lake,
        run_date,
        {
            "status": status,
            "champion_model": decision.model,
            "published_model": scored.model,
            "published_from_candidate": gate.published_from_candidate,
            "gate_reason": gate.summary(),
            "model_version": scored.model_version,
            "top_k": settings.top_k,
            "users_scored": scored.users,
            "rows_published": staged.height,
            "started_at": started_at or now,
            "finished_at": dt.datetime.now(dt.UTC),
            "stage_seconds": dict(stage_seconds),
        },
    )
    # The preview goes to the UI: pseudonyms, whatever the published table holds.
    preview = pseudonyms.frame(staged.sort("user_id", "rank").head(3 * settings.top_k))
    return PublishResult(
        run_date=run_date,
        path=path,
        url=lake.url(RECOMMENDATIONS, run_date=run_date),
        model=scored.model,
        model_version=scored.model_version,
        rows=staged.height,
        users=scored.users,
        status=status,
        warehouse=warehouse,
        preview=[
            {k: (str(v) if not isinstance(v, (int, float)) else v) for k, v in r.items()}
            for r in preview.to_dicts()
        ],
    )


def _record_refusal(
    lake: Lake,
    run_date: dt.date,
    settings: Settings,
    scored: ScoreStageResult,
    gate: SegmentGate,
    stage_seconds: Mapping[str, float],
    started_at: dt.datetime,
    reason: str,
) -> None:
    """Record the refused night in gold/runs (status `refused`, the reason in `error`) and
    make sure the warehouse serves it; nothing else is written."""
    ensure_warehouse(lake)
    record_run(
        lake,
        run_date,
        {
            "status": "refused",
            "error": reason,
            "champion_model": gate.pooled.model,
            "published_from_candidate": gate.published_from_candidate,
            "gate_reason": gate.summary(),
            "model_version": scored.model_version,
            "top_k": settings.top_k,
            "users_scored": scored.users,
            "rows_published": 0,
            "started_at": started_at,
            "finished_at": dt.datetime.now(dt.UTC),
            "stage_seconds": dict(stage_seconds),
        },
    )
