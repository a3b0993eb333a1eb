"""Fitting the item-item parts (item_item.py) and tuning their mixing weights.

Mixing: one weight per part and bucket, from MIX_GRID (0 included, so a part never hurts
where it does not help), chosen by coordinate ascent on NDCG@10. Buckets: support size
n = 0 | 1-2 | 3-5 | 6-10 | 11-20 | 21+, tuned on validation users shown their first n events
(MIX_SHOTS); and "stale", users whose latest event is more than `stale_days` before the
scoring time (returning users: their next events follow the catalogue, not their last
session), tuned on the other training users' events after a time cut, from their history
before it. The tuning matrices are fitted on the rows before that cut, validation users
left out. A part whose weight is 0 everywhere is dropped.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from tasks.learn.holdout import NightHoldout
from tasks.learn.interactions import Interactions
from tasks.learn.metrics import ndcg_at_k
from tasks.models.metalearner.item_item import (
    N_MIX,
    STALE,
    ItemItemConfig,
    fit_matrix,
    history_rows,
    make_part,
    mix_bucket,
    part_kinds,
    stale_users,
)

MIX_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
MIX_SHOTS = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50)
MIX_ROUNDS = 2  # coordinate-ascent sweeps over the parts
STALE_CUT = 0.9  # quantile of the training times where the stale tuning cases are cut
STALE_USERS = 600  # at most this many training users in the stale tuning cases
BUCKET_USERS = 1000  # at most this many holdout cases per bucket (memory at large catalogues)


def ndcg_rows(scores: np.ndarray, rel: sp.csr_matrix, k: int = 10) -> np.ndarray:
    """Per-row NDCG@k (tasks.learn.metrics.ndcg_at_k) of dense scores against a binary relevance
    matrix (excluded items must already score -inf); 0 for a row with nothing relevant."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)
    hits = np.asarray(rel[np.arange(len(scores))[:, None], top].todense(), bool)
    return ndcg_at_k(hits, np.maximum(np.diff(rel.indptr), 1), k)  # no hits there: 0


def tuning_case(parts, history, targets, bucket, base_scores) -> tuple | None:
    """One block of tuning users: (base scores with history items at -inf, each part's
    evidence at weight 1, relevance); None when nobody has both history (unless bucket 0)
    and targets."""
    x, rec = history_rows(history, history.item.astype(np.int64), history.n_items)
    rel = targets.csr(binary=True)
    rel = rel - rel.multiply(x)  # an item already in the history is no target
    rel.eliminate_zeros()
    has_history = (np.diff(x.indptr) > 0) | (bucket == 0)  # bucket 0: zero-shot users
    users = np.flatnonzero(has_history & (np.diff(rel.indptr) > 0))
    if len(users) == 0:
        return None
    x, rec, rel = x[users], rec[users], sp.csr_matrix(rel[users], dtype=np.float32)
    base = base_scores(history)[users].astype(np.float32)
    base[x.toarray() > 0] = -np.inf  # history items are never recommended
    b = np.full(len(users), bucket)
    unit = [replace(p, mix=np.ones(N_MIX, np.float32)) for p in parts]
    evidence = [(p.rows(x, rec, b) @ p.weights).toarray().astype(np.float32) for p in unit]
    return base, evidence, rel


def tune_mix(cases: dict[int, list], n_parts: int) -> tuple[np.ndarray, list[dict]]:
    """Mixing weights (N_MIX, n_parts): per bucket, coordinate ascent over the parts
    (MIX_GRID values, MIX_ROUNDS sweeps) on the mean NDCG@10 of its tuning cases.

    Returns the weights and a table of the gains per bucket (for the training record)."""

    def score(b: int, w: np.ndarray) -> float:
        total = sum(ndcg_rows(base + sum(wk * e for wk, e in zip(w, ev, strict=True)), rel).sum()
                    for base, ev, rel in cases[b])  # fmt: skip
        return total / sum(len(c[0]) for c in cases[b])

    mix = np.zeros((N_MIX, n_parts), np.float32)
    table = []
    for b in sorted(b for b, c in cases.items() if c):
        w = np.zeros(n_parts, np.float32)
        start = best = score(b, w)
        for _ in range(MIX_ROUNDS):
            for j in range(n_parts):
                for value in MIX_GRID:
                    trial = w.copy()
                    trial[j] = value
                    got = score(b, trial)
                    if got > best + 1e-9:  # ties keep the simpler (earlier) weights
                        best, w = got, trial
        mix[b] = w
        pairs = sum(len(c[0]) for c in cases[b])
        table.append({"bucket": "stale" if b == STALE else b, "pairs": pairs,
                      "ndcg_base": round(start, 4), "ndcg_best": round(best, 4),
                      "mix": w.tolist()})  # fmt: skip
    return mix, table


def _only(cases: dict[int, list], j: int) -> dict[int, list]:
    """The tuning cases with part j's evidence alone."""
    return {b: [(base, [ev[j]], rel) for base, ev, rel in c] for b, c in cases.items()}


def _total(table: list[dict]) -> float:
    """Pair-weighted mean NDCG@10 at the best weights of a tune_mix table."""
    pairs = sum(r["pairs"] for r in table)
    return sum(r["ndcg_best"] * r["pairs"] for r in table) / max(pairs, 1)


def fit_parts(train: Interactions, val_users: np.ndarray, cfg: ItemItemConfig, base_scores,
              item_features: sp.csr_matrix | None = None):  # fmt: skip
    """Fit the parts and their mixing weights; returns (parts with a non-zero weight
    somewhere, summary). `base_scores(history)` gives the model's own (n_users, n_items)
    scores for a history over train's catalogue; `item_features` (item_feature_matrix)
    feed the newcomer prior of the recent part."""
    start = time.perf_counter()
    is_val = np.zeros(train.n_users, bool)
    is_val[np.asarray(val_users, np.int64)] = True
    kinds = part_kinds(cfg)
    summary: dict = {"kinds": kinds}
    if not kinds or not is_val.any() or is_val.all():
        return [], {**summary, "skipped": "no validation users to tune the mixing on"}
    other = ~is_val[train.user]
    cut = int(np.quantile(train.ts[other], STALE_CUT, method="higher"))
    before = train.ts < cut
    rest = train.filter(other & before)  # neither tuning set's targets are in it
    tuning = [make_part(k, fit_matrix(k, rest, cfg, item_features), np.zeros(N_MIX, np.float32),
                        cfg) for k in kinds]  # fmt: skip
    cases: dict[int, list] = {b: [] for b in range(N_MIX)}
    # Size buckets: validation users given their first `shot` events.
    sub = train.subset_users(np.flatnonzero(is_val))
    rank = np.arange(len(sub)) - sub.user_slices()[sub.user]
    for shot in MIX_SHOTS:
        b = int(mix_bucket(np.array([shot]))[0])
        case = tuning_case(tuning, sub.filter(rank < shot), sub.filter(rank >= shot), b,
                           base_scores)  # fmt: skip
        cases[b] += [case] if case is not None else []
    # Stale bucket: other users' events after the cut, from their history before it (rest).
    stale = np.flatnonzero(stale_users(rest, cut, cfg.stale_days))
    stale = stale[np.linspace(0, len(stale) - 1, min(len(stale), STALE_USERS)).astype(int)]
    if len(stale):
        case = tuning_case(tuning, rest.subset_users(stale),
                           train.filter(other & ~before).subset_users(stale), STALE,
                           base_scores)  # fmt: skip
        cases[STALE] += [case] if case is not None else []
    kinds, tuning, cases = _one_recent_window(kinds, tuning, cases, summary)
    mix, summary["tuning"] = tune_mix(cases, len(tuning))
    parts = [make_part(k, fit_matrix(k, train, cfg, item_features), mix[:, j], cfg)
             for j, k in enumerate(kinds) if mix[:, j].any()]  # fmt: skip
    summary["mix"] = {k: mix[:, j].tolist() for j, k in enumerate(kinds)}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return parts, summary


def fit_parts_on_holdout(train: Interactions, holdout: NightHoldout, cfg: ItemItemConfig,
                         base_scores, item_features: sp.csr_matrix | None = None):  # fmt: skip
    """`fit_parts` tuned on the night's holdout instead of training users: the parts are
    fitted on `train` (everything before the cut), each holdout case falls in the bucket of
    its support size (stale: last event more than `stale_days` before the cut), and the
    mixing weights are chosen on what the cases did after the cut."""
    start = time.perf_counter()
    history, targets, now_ts = holdout.history, holdout.targets, int(holdout.cut.timestamp())
    kinds = part_kinds(cfg)
    summary: dict = {"kinds": kinds, "tuned_on": "night holdout"}
    if not kinds or history.n_users == 0:
        return [], {**summary, "skipped": "no holdout cases to tune the mixing on"}
    matrices = {k: fit_matrix(k, train, cfg, item_features) for k in kinds}
    tuning = [make_part(k, matrices[k], np.zeros(N_MIX, np.float32), cfg) for k in kinds]
    counts = np.diff(history.user_slices())
    buckets = mix_bucket(counts, stale_users(history, now_ts, cfg.stale_days) & (counts > 0))
    cases: dict[int, list] = {b: [] for b in range(N_MIX)}
    for b in np.unique(buckets):
        users = np.flatnonzero(buckets == b)
        # Evenly spaced, deterministic: the cases are dense (users x n_items) score blocks.
        users = users[np.unique(np.linspace(0, len(users) - 1, min(len(users), BUCKET_USERS))
                                .astype(np.int64))]  # fmt: skip
        case = tuning_case(tuning, history.subset_users(users), targets.subset_users(users),
                           int(b), base_scores)  # fmt: skip
        cases[int(b)] += [case] if case is not None else []
    kinds, tuning, cases = _one_recent_window(kinds, tuning, cases, summary)
    mix, summary["tuning"] = tune_mix(cases, len(tuning))
    parts = [make_part(k, matrices[k], mix[:, j], cfg) for j, k in enumerate(kinds)
             if mix[:, j].any()]  # fmt: skip
    summary["mix"] = {k: mix[:, j].tolist() for j, k in enumerate(kinds)}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return parts, summary


def _one_recent_window(kinds: list, tuning: list, cases: dict, summary: dict):
    """Keep one popularity window: the one that helps most on its own (a hyperparameter
    chosen on the tuning users, like the recent-popularity baseline's); more overfit."""
    recent = [j for j, k in enumerate(kinds) if k.startswith("recent:")]
    if len(recent) > 1:
        gain = {j: _total(tune_mix(_only(cases, j), 1)[1]) for j in recent}
        drop = [j for j in recent if j != max(gain, key=gain.get)]
        summary["recent_windows"] = {kinds[j]: round(g, 4) for j, g in gain.items()}
        kinds = [k for j, k in enumerate(kinds) if j not in drop]
        tuning = [p for j, p in enumerate(tuning) if j not in drop]
        cases = {b: [(base, [e for j, e in enumerate(ev) if j not in drop], rel)
                     for base, ev, rel in c] for b, c in cases.items()}  # fmt: skip
    return kinds, tuning, cases
