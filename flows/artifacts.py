"""Prefect artifacts for the nightly run: one per stage, each with a stable key.

Rendering only: every function takes a stage's result record (tasks/*) and turns it into a
table, markdown or link artifact, so a run can be read from the Prefect UI alone. The UI
is outside the serving path: no artifact carries a real user id (the publish preview comes
with pseudonyms, docs/privacy.md), only counts, models and metrics.
"""

from __future__ import annotations

from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from tasks.lake.storage import Lake


def episodes(result: Any) -> None:
    """Episode counts (gold/episodes)."""
    create_table_artifact(
        key="metarec-episodes",
        table=[
            {
                "run_date": str(result.run_date),
                "interactions": result.n_interactions,
                "users": result.n_users,
                "episodes": result.n_episodes,
                "path": result.path,
            }
        ],
        description="Episodic tasks built from silver up to the run date",
    )


def training(result: Any) -> None:
    """The training curve and where the checkpoint went."""
    rows = [
        {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in result.log
    ]
    create_table_artifact(
        key="metarec-training",
        table=rows or [{"step": 0}],
        description=(
            f"Meta-learner training on {result.device}: {result.steps} steps in "
            f"{result.seconds:.1f}s, best validation NDCG@10 "
            f"{_fmt(result.best_metric)} at step {result.best_step}; warm start from "
            f"{result.warm_start_from or 'scratch'}; checkpoint {result.checkpoint}"
        ),
    )


def evaluation(result: Any) -> None:
    """Every model side by side on the holdout, and the gate's decision."""
    rows = [
        {
            "model": r["model"],
            "segment": r["segment"],
            "users": r["users"],
            "ndcg@10": _fmt(r["ndcg_at_10"]),
            "recall@20": _fmt(r["recall_at_20"]),
            "coverage": _fmt(r["coverage"]),
            "novelty": _fmt(r["novelty"]),
            "champion": "yes" if r["is_champion"] else "",
        }
        for r in sorted(result.table, key=lambda r: (r["segment"], -(r["ndcg_at_10"] or 0)))
    ]
    create_table_artifact(
        key="metarec-evaluation",
        table=rows,
        description=f"Full-catalogue holdout: models fitted on what was known at "
        f"{result.cutoff:%Y-%m-%d %H:%M} UTC, scored on the {result.horizon_days} days after",
    )
    gate = result.gate
    lines = [
        f"| `{seg}` | {result.holdout_users.get(seg, 0)} | `{gate.model_for(seg)}` | "
        f"{gate.reasons.get(seg, 'no holdout users: the pooled choice')} |"
        for seg in sorted({*result.holdout_users, *gate.reasons})
    ]
    create_markdown_artifact(
        key="metarec-gate",
        markdown="### Quality gate, per segment\n\n"
        f"**Published models: {', '.join(f'`{m}`' for m in gate.models)}**\n\n"
        "| segment | holdout users | serves it | why |\n|---|---:|---|---|\n"
        + "\n".join(lines)
        + f"\n\nPooled holdout (and segments with too few users): {gate.pooled.reason}\n",
        description="Which model serves which users tonight, and why",
    )


def published(result: Any, lake: Lake) -> None:
    """A preview of the published table (user ids as pseudonyms) and a link to its
    partition."""
    create_table_artifact(
        key="metarec-recommendations",
        table=result.preview,
        description=(
            f"{result.rows} rows for {result.users} users from `{result.model}` "
            f"({result.model_version}); first rows, user ids pseudonymised"
        ),
    )
    create_link_artifact(
        key="metarec-partition",
        link=result.url,
        link_text=f"gold/recommendations run_date={result.run_date}",
        description="The published partition",
    )


def backfill(results: dict[str, str]) -> None:
    """One row per date of a backfill."""
    create_table_artifact(
        key="metarec-backfill",
        table=[{"run_date": d, "result": r} for d, r in results.items()],
        description="Nightly runs of this backfill",
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
