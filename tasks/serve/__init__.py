"""The serving stages of a night: evaluate -> score -> publish, and the SQL warehouse.

Reads silver up to D (through tasks.learn.history) and tonight's checkpoint
`models/run_date=D/`; writes `gold/metrics/run_date=D/` (evaluate),
`staging/recommendations/run_date=D/model=M/` (score), `gold/recommendations/run_date=D/`
and `gold/runs/stage=nightly/dt=D/` (publish), and `warehouse.duckdb` at the lake root.

Modules, lowest first: `topk` (the top-k kernel), `candidates` (the baselines and their
fitting), `gate` (the champion choice), `evaluate` (holdout metrics, the evaluate stage),
`tuning` (grid search of the baselines), `score` (the score stage), `warehouse` (the
DuckDB views), `runs` (the nightly run record), `publish` (the publish stage).
"""

from tasks.serve.candidates import BaselineConfigs, fit_baselines
from tasks.serve.evaluate import (
    EVAL_SHOTS,
    EvaluateStageResult,
    evaluate_models,
    evaluate_new_items,
    evaluate_stage,
    write_metrics,
)
from tasks.serve.gate import POOLED, ChampionDecision, choose_champion
from tasks.serve.publish import PublishResult, publish_stage, write_recommendations
from tasks.serve.runs import record_run
from tasks.serve.score import ScoreStageResult, assign_segments, recommend, score_stage
from tasks.serve.topk import ranked_lists, top_k
from tasks.serve.tuning import TuningGrid, tune_baselines
from tasks.serve.warehouse import (
    DUCKDB_CONFIG,
    connect_warehouse,
    ensure_warehouse,
    warehouse_path,
)

__all__ = [
    "DUCKDB_CONFIG",
    "EVAL_SHOTS",
    "POOLED",
    "BaselineConfigs",
    "ChampionDecision",
    "EvaluateStageResult",
    "PublishResult",
    "ScoreStageResult",
    "TuningGrid",
    "assign_segments",
    "choose_champion",
    "connect_warehouse",
    "ensure_warehouse",
    "evaluate_models",
    "evaluate_new_items",
    "evaluate_stage",
    "fit_baselines",
    "publish_stage",
    "ranked_lists",
    "recommend",
    "record_run",
    "score_stage",
    "top_k",
    "tune_baselines",
    "warehouse_path",
    "write_metrics",
    "write_recommendations",
]
