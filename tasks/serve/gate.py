"""The champion gate: which model serves which users tonight, and why.

Reads the metrics table `evaluate_models` returns on the night's holdout (no lake table);
writes nothing. Per segment of users (tasks.learn.holdout.SEGMENTS) and on the pooled
holdout, the candidate (the meta-learner) is chosen only when it strictly beats the
baseline (most-popular) and every other model; otherwise the best other model is, and the
reason says so with the numbers. A segment with too few holdout users follows the pooled
choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

# The pooled holdout segment that evaluate_models adds (warm users + new users with n = 5):
# the gate decides on it, so it is named here, below the evaluation that fills it.
POOLED = "all"


@dataclass(frozen=True)
class ChampionDecision:
    """Which model publishes tonight, and why (a sentence with the numbers)."""

    model: str
    published_from_candidate: bool
    reason: str
    metric: str
    value: float  # the published model's metric on the holdout


def choose_champion(
    metrics: pl.DataFrame,
    baseline: str = "most_popular",
    candidate: str = "metalearner",
    metric: str = "ndcg@10",
    segment: str = POOLED,
) -> ChampionDecision:
    """The champion is the best model on the holdout by `metric`, with the gate: the
    candidate publishes only if it strictly beats `baseline` AND every other model;
    otherwise the best non-candidate model publishes (ties: by name)."""
    seg = metrics.filter(pl.col("segment") == segment).select("model", metric)
    values = {m: float(v) if v is not None else float("nan") for m, v in seg.iter_rows()}
    if baseline not in values:
        raise ValueError(f"baseline {baseline!r} has no {segment!r} row in the metrics")
    base = values[baseline]
    label = metric.upper().replace("RECALL", "Recall")
    cand = values.get(candidate, float("nan"))
    others = sorted(
        ((v, m) for m, v in values.items() if m != candidate and not np.isnan(v)),
        key=lambda t: (-t[0], t[1]),
    )
    best_value, best = others[0] if others else (base, baseline)
    if cand > base and cand > best_value:  # NaN (missing or failed candidate) never passes
        return ChampionDecision(
            candidate,
            True,
            f"{candidate} {label} {cand:.3f} beats {baseline} {base:.3f} on the holdout "
            f"({segment}); publishing {candidate}",
            metric,
            cand,
        )
    if candidate not in values:
        verdict = f"{candidate} has no metrics (not trained, or it failed)"
    elif not cand > base:
        verdict = f"{candidate} {label} {cand:.3f} does not beat {baseline} {base:.3f}"
    else:
        verdict = f"{candidate} {label} {cand:.3f} beats {baseline} {base:.3f} but not {best}"

    return ChampionDecision(
        best,
        False,
        f"{verdict} on the holdout ({segment}); publishing {best} "
        f"(best baseline, {best_value:.3f})",
        metric,
        best_value,
    )


@dataclass(frozen=True)
class SegmentGate:
    """Tonight's models by segment: `by_segment[s]` serves the users of segment s (a
    segment not listed, or one with too few holdout users, gets `pooled.model`)."""

    pooled: ChampionDecision
    by_segment: dict[str, str]
    reasons: dict[str, str]  # segment -> a sentence with the numbers
    candidate: str = "metalearner"

    def model_for(self, segment: str) -> str:
        """The model that serves `segment`."""
        return self.by_segment.get(segment, self.pooled.model)

    @property
    def models(self) -> list[str]:
        """Every model that serves some segment tonight (pooled fallback included)."""
        return sorted({*self.by_segment.values(), self.pooled.model})

    @property
    def published_from_candidate(self) -> bool:
        """True when the candidate serves at least one segment."""
        return self.candidate in self.models

    def summary(self) -> str:
        """One clause per decided segment, then the pooled decision."""
        if not self.reasons:
            return self.pooled.reason
        lines = [f"{s}: {self.reasons[s]}" for s in self.reasons]
        return "; ".join([*lines, f"pooled: {self.pooled.reason}"])

    @classmethod
    def of(cls, decision: SegmentGate | ChampionDecision) -> SegmentGate:
        """A gate from a pooled-only decision (every segment follows it)."""
        return decision if isinstance(decision, SegmentGate) else cls(decision, {}, {})


def choose_by_segment(
    metrics: pl.DataFrame,
    min_users: int,
    baseline: str = "most_popular",
    candidate: str = "metalearner",
    metric: str = "ndcg@10",
) -> SegmentGate:
    """Per segment of the holdout with at least `min_users` users, the gate of
    `choose_champion` on that segment's rows: the candidate serves a segment only where it
    strictly beats `baseline` and every other model there, else the segment's best other
    model does. Smaller segments follow the pooled decision."""
    pooled = choose_champion(metrics, baseline, candidate, metric, POOLED)
    by_segment, reasons = {}, {}
    sizes = metrics.filter(pl.col("model") == baseline).select("segment", "users")
    for segment, users in sizes.iter_rows():
        if segment == POOLED:
            continue
        if users < min_users:
            reasons[segment] = f"{users} holdout users (< {min_users}): the pooled choice"
            continue
        decision = choose_champion(metrics, baseline, candidate, metric, segment)
        by_segment[segment] = decision.model
        reasons[segment] = f"{decision.model} ({decision.reason})"
    return SegmentGate(pooled, by_segment, reasons, candidate)
