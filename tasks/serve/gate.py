"""The champion gate: which model publishes tonight, and why.

Reads the metrics table `evaluate_models` returns (no lake table); writes nothing. The
candidate (the meta-learner) publishes only when it strictly beats the baseline and every
other model on the pooled holdout; otherwise the best baseline does, and the reason says so
with the numbers.
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
