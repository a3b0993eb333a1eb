"""The champion gate both ways: a broken candidate is refused with the numbers, a better
one publishes, and the candidate must beat every other model too."""

from __future__ import annotations

import polars as pl

from tasks.serve.gate import (
    POOLED,
    ChampionDecision,
    SegmentGate,
    choose_by_segment,
    choose_champion,
)


def test_broken_candidate_is_refused_with_the_numbers(metrics):
    decision = choose_champion(metrics)
    assert isinstance(decision, ChampionDecision) and not decision.published_from_candidate
    at = dict(metrics.filter(pl.col("segment") == POOLED).select("model", "ndcg@10").iter_rows())
    best = max((v, m) for m, v in at.items() if m != "metalearner")
    assert decision.model == best[1] and decision.value == best[0]
    assert f"metalearner NDCG@10 {at['metalearner']:.3f}" in decision.reason
    assert f"most_popular {at['most_popular']:.3f}" in decision.reason
    assert f"publishing {best[1]} (best baseline, {best[0]:.3f})" in decision.reason


def test_better_candidate_is_published():
    frame = pl.DataFrame(
        {
            "model": ["most_popular", "ease", "metalearner"] * 2,
            "segment": ["all"] * 3 + ["warm"] * 3,
            "ndcg@10": [0.082, 0.091, 0.095, 0.5, 0.5, 0.0],
        }
    )
    decision = choose_champion(frame)
    assert decision.model == "metalearner" and decision.published_from_candidate
    assert decision.value == 0.095 and decision.metric == "ndcg@10"
    assert "0.095 beats most_popular 0.082" in decision.reason
    refused = choose_champion(frame, segment="warm")  # ties never pass; best by name on ties
    assert refused.model == "ease" and not refused.published_from_candidate
    missing = choose_champion(frame.filter(pl.col("model") != "metalearner"))
    assert missing.model == "ease" and "no metrics" in missing.reason


def test_candidate_must_also_beat_every_other_model():
    frame = pl.DataFrame(
        {"model": ["most_popular", "ease", "metalearner"], "segment": ["all"] * 3,
         "ndcg@10": [0.082, 0.099, 0.095]}
    )  # fmt: skip
    decision = choose_champion(frame)
    assert decision.model == "ease" and not decision.published_from_candidate
    assert "beats most_popular 0.082 but not ease" in decision.reason


def test_a_nan_candidate_never_passes():
    frame = pl.DataFrame(
        {"model": ["most_popular", "metalearner"], "segment": ["all"] * 2,
         "ndcg@10": [0.05, float("nan")]}
    )  # fmt: skip
    decision = choose_champion(frame)
    assert decision.model == "most_popular" and not decision.published_from_candidate


MODELS = ("most_popular", "recent_popular_30d", "metalearner")


def test_the_gate_chooses_per_segment_on_a_holdout_with_known_answers():
    """Four segments whose winners are known, one too small to decide on its own."""
    rows = {
        # segment: users, then NDCG@10 of most_popular, recent_popular_30d, metalearner
        "zero_shot": (50, 0.20, 0.25, 0.30),  # the candidate wins
        "n3_5": (80, 0.30, 0.40, 0.35),  # beats most-popular but not recent popularity
        "n51_plus": (60, 0.30, 0.10, 0.25),  # loses to most-popular: never published there
        "n1_2": (12, 0.10, 0.20, 0.90),  # too few users: the pooled choice
        POOLED: (202, 0.30, 0.32, 0.31),
    }
    frame = pl.DataFrame(
        [
            {"model": m, "segment": seg, "users": n, "ndcg@10": v}
            for seg, (n, *values) in rows.items()
            for m, v in zip(MODELS, values, strict=True)
        ]
    )
    gate = choose_by_segment(frame, min_users=30)
    assert gate.pooled.model == "recent_popular_30d"  # 0.32 > 0.31 on the pooled holdout
    assert gate.by_segment == {"zero_shot": "metalearner", "n3_5": "recent_popular_30d",
                               "n51_plus": "most_popular"}  # fmt: skip
    assert gate.model_for("n1_2") == gate.model_for("returning_after_gap") == "recent_popular_30d"
    assert gate.models == ["metalearner", "most_popular", "recent_popular_30d"]
    assert gate.published_from_candidate
    assert "12 holdout users (< 30)" in gate.reasons["n1_2"]
    assert "0.250 does not beat most_popular 0.300" in gate.reasons["n51_plus"]
    assert gate.summary().startswith("zero_shot: metalearner (metalearner NDCG@10 0.300 beats")
    # A decision made on the pooled holdout alone is a gate whose every segment follows it.
    plain = SegmentGate.of(gate.pooled)
    assert plain.model_for("zero_shot") == "recent_popular_30d" and not plain.by_segment
