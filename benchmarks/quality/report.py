"""Markdown tables of the black-box yardstick from its per-run JSON documents.

Per dataset and protocol: the runs (date, published model, gate, training steps, time,
plumbing), then NDCG@10, Recall@20 and coverage per segment for the published table and
every tuned baseline (mean ± sample std over seeds), the best baseline per segment (by its
mean), the ratios published / best baseline and published / most-popular, and the night's
meta-learner checkpoint (`candidate`, published or not: a diagnostic); segments with
fewer than MIN_USERS users (in any seed) are flagged `*`, never hidden. Then the new-item
statistics and, when run.py's JSON is given, the in-process numbers beside the black-box
cold start.
"""

from __future__ import annotations

import math

import polars as pl

from benchmarks.quality.lakes import COLD_SEGMENTS, REPLAY_SEGMENTS, SHOTS
from benchmarks.quality.scoring import MIN_USERS

BASELINES = ("most_popular", "recent_popular", "ease", "item_knn", "als",
             "feature_group_popular", "item_features")  # fmt: skip
SHORT = {"feature_group_popular": "fg_pop", "item_features": "item_feat",
         "recent_popular": "recent_pop", "most_popular": "most_pop"}  # fmt: skip
METRICS = ("ndcg@10", "recall@20", "coverage")


def render(docs: list[dict], inprocess: dict | None = None, label: str = "") -> str:
    """The whole report (every dataset and protocol in `docs`)."""
    out = [label, ""] if label else []
    frame = metrics_frame(docs)
    for (ds, protocol), _ in _groups(docs).items():
        runs = [d for d in docs if d["dataset"] == ds and d["protocol"] == protocol]
        out += [f"### {ds}, {protocol} ({len(runs)} seeds)", "", *run_lines(runs), ""]
        m = frame.filter((pl.col("dataset") == ds) & (pl.col("protocol") == protocol))
        order = COLD_SEGMENTS if protocol == "cold" else REPLAY_SEGMENTS
        for metric in METRICS:
            out += [f"{metric.upper()}", "", *segment_table(m, metric, order), ""]
        out += [*new_item_table(runs), ""]
        if protocol == "cold" and inprocess is not None:
            out += [*side_by_side(m, inprocess, ds), ""]
    return "\n".join(out)


def metrics_frame(docs: list[dict]) -> pl.DataFrame:
    """One row per (dataset, protocol, seed, model, segment)."""
    rows = [{"dataset": d["dataset"], "protocol": d["protocol"], "seed": d["seed"], **r}
            for d in docs for r in d["metrics"]]  # fmt: skip
    return pl.DataFrame(rows, infer_schema_length=None)


def run_lines(runs: list[dict]) -> list[str]:
    """A small table of the runs themselves."""
    head = ("seed", "run date", "published", "nightly's gate", "train steps", "nightly s",
            "baselines s", "plumbing")  # fmt: skip
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for d in sorted(runs, key=lambda d: d["seed"]):
        night, c = d["night"], d["checks"]
        ok = (c["landed_not_in_silver"] == 0 and c["silver_not_landed"] == 0
              and c["registry_users_unlisted"] == 0)  # fmt: skip
        plumbing = "ok" if ok else (f"{c['landed_not_in_silver']} landed not in silver, "
                                    f"{c['registry_users_unlisted']} users unlisted")  # fmt: skip
        gate = (night.get("gate_reason") or "").split(" on the holdout")[0]
        out.append(f"| {d['seed']} | {d['run_date']} | {', '.join(d['published_model'])} | "
                   f"{gate} | {night.get('train', {}).get('steps')} | {d['seconds']['nightly']} "
                   f"| {d['seconds']['baselines']} | {plumbing} |")  # fmt: skip
    info = runs[0]["info"]
    if "cutoff" in info:
        out += ["", f"Cutoff {info['cutoff'][:10]}; run date - cutoff: "
                + ", ".join(str(d["info"]["days_cutoff_to_run_date"]) for d in runs)
                + " days; new users " + str(info["new_users"])]  # fmt: skip
    else:
        days = "; ".join(f"{d['run_date']}: {d['info']['horizon_days']}" for d in runs)
        out += ["", f"Horizon days actually covered by data: {days}"]
    return out


def segment_table(m: pl.DataFrame, metric: str, order: tuple[str, ...]) -> list[str]:
    """Segments x (users, published, best baseline, ratios, each baseline)."""
    agg = m.group_by("model", "segment").agg(
        pl.col(metric).mean().alias("mean"), pl.col(metric).std().fill_null(0.0).alias("sd"),
        pl.col("users").mean().alias("users"), pl.col("users").min().alias("min_users"),
    )  # fmt: skip
    cell = {(r["model"], r["segment"]): r for r in agg.iter_rows(named=True)}
    models = [b for b in BASELINES if any(k[0] == b for k in cell)]
    ratios = metric != "coverage"
    head = ["segment", "users", "published", "best baseline" if ratios else "highest baseline"]
    head += ["pub/best", "pub/most_pop"] if ratios else []
    head += ["candidate"] + [SHORT.get(b, b) for b in models]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for seg in order:
        if ("published", seg) not in cell:
            out.append(f"| {seg} | 0* | - | - |" + " - |" * (len(head) - 4))
            continue
        pub = cell[("published", seg)]
        base = [cell[(b, seg)] for b in models if (b, seg) in cell]
        best = max(base, key=lambda r: _num(r["mean"]), default=None)
        flag = "*" if pub["min_users"] < MIN_USERS else ""
        row = [seg, f"{pub['users']:.0f}{flag}", _pm(pub)]
        row.append(f"{SHORT.get(best['model'], best['model'])} {_pm(best)}" if best else "-")
        if ratios:
            pop = cell.get(("most_popular", seg))
            row += [_ratio(pub, best), _ratio(pub, pop)]
        row += [_f(cell[(b, seg)]["mean"]) if (b, seg) in cell else "-"
                for b in ("candidate", *models)]  # fmt: skip
        out.append("| " + " | ".join(row) + " |")
    out += ["", f"`*` fewer than {MIN_USERS} users in some seed (noisy, shown anyway)."]
    return out


def new_item_table(runs: list[dict]) -> list[str]:
    """Per model: new-item coverage and the share of lists with a new item (mean)."""
    rows = pl.DataFrame([r for d in runs for r in d["new_items"]])
    agg = rows.group_by("model", maintain_order=True).agg(pl.exclude("model").mean())
    out = [f"New items (no event in the lake; {agg['new_items'][0]:.0f} taken later, mean): "
           "share shown in any list, share of lists holding one", "",
           "| model | new_item_coverage | lists_with_new |", "| --- | --- | --- |"]  # fmt: skip
    for r in agg.iter_rows(named=True):
        out.append(f"| {r['model']} | {r['new_item_coverage']:.3f} | {r['lists_with_new']:.3f} |")
    return out


def side_by_side(m: pl.DataFrame, inprocess: dict, ds: str) -> list[str]:
    """In-process (run.py: every new user at every n, fitted on split.train, now = cutoff)
    beside black-box (one n per new user, the nightly on the lake) NDCG@10 per segment;
    "agree" = the difference is within the sum of the two seed spreads."""
    ip = pl.DataFrame(inprocess["metrics"]).filter(pl.col("dataset") == ds)
    if not ip.height:
        return []
    out = [f"In-process (run.py) vs black-box, {ds}, NDCG@10 (mean ± sd over seeds)", "",
           "| segment | in-process meta-learner | black-box published | difference | agree? "
           "| black-box candidate | in-process best baseline | black-box best baseline |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for seg in (*(f"new_n{n}" for n in SHOTS), "warm"):
        a = _stats(ip.filter((pl.col("model") == "metalearner") & (pl.col("segment") == seg)))
        b = _stats(m.filter((pl.col("model") == "published") & (pl.col("segment") == seg)))
        if a is None or b is None:
            continue
        diff = b["mean"] - a["mean"]
        agree = "yes" if abs(diff) <= a["sd"] + b["sd"] else "no"
        c = _stats(m.filter((pl.col("model") == "candidate") & (pl.col("segment") == seg)))
        out.append(f"| {seg} | {_pm(a)} | {_pm(b)} | {diff:+.3f} | {agree} | "
                   f"{_pm(c) if c else '-'} | {_best(ip, seg)} | {_best(m, seg)} |")  # fmt: skip
    return out


def _stats(rows: pl.DataFrame) -> dict | None:
    if not rows.height:
        return None
    sd = rows["ndcg@10"].std() if rows.height > 1 else 0.0
    return {"mean": float(rows["ndcg@10"].mean()), "sd": float(sd or 0.0)}


def _best(rows: pl.DataFrame, seg: str) -> str:
    """The best baseline of a segment by mean NDCG@10 (name and value)."""
    r = rows.filter((pl.col("segment") == seg) & pl.col("model").is_in(BASELINES))
    if not r.height:
        return "-"
    means = r.group_by("model").agg(pl.col("ndcg@10").mean()).sort("ndcg@10", descending=True)
    return f"{SHORT.get(means['model'][0], means['model'][0])} {means['ndcg@10'][0]:.3f}"


def _groups(docs: list[dict]) -> dict:
    keys: dict = {}
    for d in docs:
        keys.setdefault((d["dataset"], d["protocol"]), None)
    return keys


def _num(x: float | None) -> float:
    return -math.inf if x is None or math.isnan(x) else x


def _f(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.3f}"


def _pm(r: dict) -> str:
    return f"{_f(r['mean'])} ± {_f(r['sd'])}"


def _ratio(a: dict, b: dict | None) -> str:
    if b is None or not _num(b["mean"]) > 0 or math.isnan(_num(a["mean"])):
        return "-"
    return f"{a['mean'] / b['mean']:.2f}"
