"""The champion gate both ways: a broken candidate is refused with the numbers, a better
one publishes, and the candidate must beat every other model too."""

from __future__ import annotations

import polars as pl

from tasks.serve.gate import POOLED, ChampionDecision, choose_champion


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
