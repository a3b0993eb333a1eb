"""The black-box yardstick (issue 10): build a lake from a split, run the real nightly,
score what it published, beside tuned baselines fitted on the same lake.

    .venv/bin/python -m benchmarks.quality.published \\
        --datasets ml-100k,ml-latest-small,lastfm,synth --seeds 3 --protocols cold,replay \\
        [--train-steps N] [--out benchmarks/out/published]

Per dataset, protocol and seed (benchmarks.quality.lakes says what each lake holds):
  1. build the lake in a temporary folder (raw landing format; deleted afterwards unless
     --keep-lakes); ML-100K is read from ../shared/data and never lands in the repo;
  2. `python -m flows.cli nightly --storage LAKE --date D` in its own process
     (benchmarks.quality.product), then read gold/recommendations/run_date=D;
  3. check the plumbing: silver holds exactly the landed events, every raw/users user has
     a list;
  4. tune and fit the baselines on the lake's history (benchmarks.quality.peers), list
     their top-20 for the same users;
  5. score the published table and every baseline's with one function
     (benchmarks.quality.scoring), per segment, plus the new-item statistics; also the
     night's meta-learner checkpoint ("candidate"), scored as the score stage would, so a
     gate that published a baseline still shows what the candidate would have scored.
Each run is written to OUT/runs/<dataset>-<protocol>-s<seed>.json and skipped when that
file exists (--force to redo), so a long measurement can be split; the Markdown report
(OUT/report.md, benchmarks.quality.report) is rebuilt from every JSON there. The
in-process yardstick (benchmarks/quality/run.py) stays the fast inner loop; its JSON
(--inprocess) is printed beside the black-box cold start for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from benchmarks.quality import report
from benchmarks.quality.data import SHARED, Dataset, load_dataset
from benchmarks.quality.lakes import (
    LakeSpec,
    cold_spec,
    frame_of,
    land,
    replay_dates,
    replay_spec,
    segment_users,
    with_time,
)
from benchmarks.quality.peers import (
    GRID,
    baseline_lists,
    candidate_list,
    names_for,
    tuned_configs,
)
from benchmarks.quality.product import REPO, night_record, published, run_nightly
from benchmarks.quality.scoring import new_item_stats, score_lists, self_information
from tasks.lake.storage import lake_from
from tasks.learn.history import History, load_history
from tasks.serve.tuning import TuningGrid

PROTOCOLS = ("cold", "replay")
REPLAY_DATES = 3
CANDIDATE = "candidate"  # the night's meta-learner lists, whether published or not


@dataclass(frozen=True)
class Options:
    """How to run: where results go, the nightly's step cap, which checkout runs."""

    out: Path = Path("benchmarks/out/published")
    train_steps: int | None = None  # None: the product's default (Settings.train_max_steps)
    train_budget: float | None = None  # None: the product's (Settings.train_budget_seconds)
    product: Path = REPO
    keep_lakes: bool = False
    force: bool = False
    lakes: Path | None = None  # parent of the temporary lake folders (default: the system's)
    grid: TuningGrid = GRID  # the baselines' tuning grid (tests use a one-point grid)


def spec_for(ds: Dataset, protocol: str, seed: int) -> LakeSpec:
    """The lake of one (dataset, protocol, seed): replay seed s = the s-th of the
    REPLAY_DATES replay dates (the same dates whatever --seeds says)."""
    if protocol == "cold":
        return cold_spec(ds, seed)
    if protocol == "replay":
        days = replay_dates(ds.data, count=REPLAY_DATES)
        if seed >= len(days):
            raise ValueError(f"replay has {len(days)} run dates (seeds 0..{len(days) - 1})")
        return replay_spec(ds, days[seed])
    raise ValueError(f"unknown protocol {protocol!r} (one of {PROTOCOLS})")


def run_one(ds: Dataset, protocol: str, seed: int, opts: Options) -> dict:
    """One black-box run: lake, nightly, checks, baselines, scores (see the module doc)."""
    ds = with_time(ds)
    spec = spec_for(ds, protocol, seed)
    tag = f"{ds.name}-{protocol}-s{seed}"
    (opts.out / "logs").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"metarec-yardstick-{tag}-", dir=opts.lakes))
    try:
        root = tmp / "lake"
        lake = lake_from(str(root))
        t0 = time.perf_counter()
        land(lake, spec)
        t1 = time.perf_counter()
        night = run_nightly(root, spec.run_date, seed, opts.train_steps,
                            opts.out / "logs" / f"{tag}.log", product=opts.product,
                            train_budget=opts.train_budget)  # fmt: skip
        table = published(lake, spec.run_date)
        history = load_history(lake, spec.run_date)
        checks = plumbing(spec, history, table)
        t2 = time.perf_counter()
        cache = opts.out / "tuned" / f"{tag}.json"
        configs, tuning = tuned_configs(history, cache, seed, opts.grid)
        lists = baseline_lists(history, configs, names_for(history))
        t3 = time.perf_counter()
        candidate = candidate_list(lake, history)
        record = night_record(lake, spec.run_date)
    finally:
        if not opts.keep_lakes:
            shutil.rmtree(tmp, ignore_errors=True)
    lists = {"published": table, **lists}
    if candidate is not None:  # the checkpoint, gated or not (diagnostic)
        lists[CANDIDATE] = candidate
    catalogue = pl.Series(history.interactions.item_ids.astype(str))
    info = self_information(spec.events, catalogue)
    fresh = fresh_items(spec)
    metrics, new_items = [], []
    for model, frame in lists.items():
        scored = score_lists(frame, spec.targets, len(catalogue), info)
        metrics += scored.with_columns(pl.lit(model).alias("model")).to_dicts()
        stats = new_item_stats(frame, spec.events["item_id"].unique(), fresh)
        new_items.append({"model": model, **stats})
    return {
        "dataset": ds.name, "protocol": protocol, "seed": seed,
        "run_date": spec.run_date.isoformat(), "info": spec.info,
        "segments": segment_users(spec),
        "published_model": sorted(table["model"].unique().to_list()),
        "night": record, "checks": checks, "metrics": metrics, "new_items": new_items,
        "tuned": tuning["configs"],
        "settings": {"train_steps": opts.train_steps, "train_budget": opts.train_budget,
                     "product": str(opts.product)},
        "seconds": {"land": round(t1 - t0, 1), "nightly": night.seconds,
                    "baselines": round(t3 - t2, 1), "tuning": tuning.get("seconds")},
        "lake": str(root) if opts.keep_lakes else None,
    }  # fmt: skip


def plumbing(spec: LakeSpec, history: History, table: pl.DataFrame) -> dict:
    """What the nightly did with the lake: silver events vs landed events (both ways), the
    registry users without a list, list lengths."""
    key = ["user_id", "item_id", "ts"]
    silver = frame_of(history.interactions).select(key)
    landed = spec.events.select(key)
    users = spec.users["user_id"].cast(pl.String)
    listed = table["user_id"].unique()
    lengths = table.group_by("user_id").len()["len"]
    return {
        "landed_events": landed.height,
        "silver_events": silver.height,
        "landed_not_in_silver": landed.join(silver, on=key, how="anti").height,
        "silver_not_landed": silver.join(landed, on=key, how="anti").height,
        "registry_users": users.len(),
        "registry_users_unlisted": int((~users.is_in(listed.implode())).sum()),
        "listed_users": listed.len(),
        "list_length_min": int(lengths.min()),
        "list_length_max": int(lengths.max()),
    }


def fresh_items(spec: LakeSpec) -> pl.Series:
    """Items users take after the lake ends (cold: the new_items segment's targets; replay:
    the 30-day targets) that have no event in the lake."""
    segs = spec.targets["segment"]
    mask = segs == "new_items" if spec.protocol == "cold" else segs.str.starts_with("h30/")
    items = spec.targets.filter(mask)["item_id"].unique()
    return items.filter(~items.is_in(spec.events["item_id"].unique().implode()))


def main(argv: list[str] | None = None) -> None:
    """Run every missing (dataset, protocol, seed) and rebuild the report."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality.published",
                                 description=__doc__.split("\n\n")[0])  # fmt: skip
    ap.add_argument("--datasets", default="ml-100k,ml-latest-small,lastfm,synth")
    ap.add_argument("--seeds", type=int, default=3,
                    help="seeds per dataset (replay: its first SEEDS dates, <= 3)")  # fmt: skip
    ap.add_argument("--protocols", default="cold,replay")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="the nightly's --train-steps (default: the product's)")  # fmt: skip
    ap.add_argument("--train-budget", type=float, default=None,
                    help="the nightly's training seconds cap (METAREC_TRAIN_BUDGET_SECONDS; "
                    "default: the product's)")  # fmt: skip
    ap.add_argument("--out", default="benchmarks/out/published")
    ap.add_argument("--data", default=str(SHARED), help="folder of the shared datasets")
    ap.add_argument("--product", default=str(REPO), help="checkout whose nightly runs")
    ap.add_argument(
        "--inprocess",
        default=None,
        help="run.py's JSON (its --out with .json) to print beside the cold start",
    )
    ap.add_argument("--label", default="", help="a line for the report (commit, date)")
    ap.add_argument("--keep-lakes", action="store_true")
    ap.add_argument("--force", action="store_true", help="redo runs already in OUT/runs")
    args = ap.parse_args(argv)
    opts = Options(Path(args.out), args.train_steps, args.train_budget, Path(args.product),
                   args.keep_lakes, args.force)  # fmt: skip
    runs = opts.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for name in args.datasets.split(","):
        for protocol in args.protocols.split(","):
            for seed in range(args.seeds):
                path = runs / f"{name}-{protocol}-s{seed}.json"
                if path.exists() and not opts.force:
                    print(f"skip {path} (done)", file=sys.stderr)
                    continue
                t0 = time.perf_counter()
                doc = run_one(load_dataset(name, seed, Path(args.data)), protocol, seed, opts)
                doc["seconds"]["total"] = round(time.perf_counter() - t0, 1)
                doc["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                path.write_text(json.dumps(doc, indent=1, default=str))
                print(json.dumps({k: doc[k] for k in ("dataset", "protocol", "seed",
                                  "run_date", "published_model", "seconds")}),
                      file=sys.stderr)  # fmt: skip
    docs = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    inprocess = json.loads(Path(args.inprocess).read_text()) if args.inprocess else None
    text = report.render(docs, inprocess, args.label)
    (opts.out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
