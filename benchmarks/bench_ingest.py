"""Benchmark: ingest + validate + clean one synthetic day vs a plain pandas implementation.

    .venv/bin/python benchmarks/bench_ingest.py [--events 5000000] [--dirty 0.01] [--lake DIR]

Generates one day (tasks/sources/synth: CSV, gzip'd JSONL, Parquet and, on dirty days, a
truncated gzip) once, then runs each implementation in its own child process, so the
peak RSS of each is its own (getrusage of the child). Ours = tasks.ingest.ingest_date +
tasks.validate.validate_date (GX imported before the clock starts: a one-off ~3 s per
process, reported separately). Pandas = read each file, type, filter by the same rules,
dedupe, write silver and quarantine Parquet. Prints a Markdown table with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DAY = "2024-01-01"


def _child_ours(root: str) -> dict:
    from tasks.config import Settings
    from tasks.ingest import ingest_date
    from tasks.lake.dates import parse_date
    from tasks.lake.storage import Lake
    from tasks.validate import load_gx, validate_date

    t0 = time.perf_counter()
    load_gx()
    gx_import = time.perf_counter() - t0
    lake, settings, day = Lake(root), Settings(max_bad_share=1.0), parse_date(DAY)
    # Force a real run: ingest skips a date whose bronze stamp matches, validate one whose
    # silver stamp (silver/interactions/dt=D/_stamp.json) matches.
    lake.delete_partition("bronze/interactions", dt=day)
    lake.delete_partition("silver/interactions", dt=day)
    t0 = time.perf_counter()
    ing = ingest_date(lake, day, settings)
    t1 = time.perf_counter()
    val = validate_date(lake, day, settings)
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "ingest_s": t1 - t0,
        "validate_s": t2 - t1,
        "gx_import_s": gx_import,
        "rows": ing.rows,
        "silver": val.silver_rows,
        "quarantined": sum(val.quarantined.values()),
        "duplicates": val.duplicates,
    }


def _child_pandas(root: str) -> dict:
    import gzip
    import io

    import numpy as np
    import pandas as pd

    from tasks.config import Settings

    s = Settings()
    folder = Path(root) / "raw" / "interactions" / f"dt={DAY}"
    t0 = time.perf_counter()
    frames = []
    for path in sorted(folder.iterdir()):
        name = path.name
        try:
            data = path.read_bytes()
            if name.endswith(".gz"):
                data = gzip.decompress(data)
                name = name[:-3]
        except (EOFError, OSError):
            continue  # unreadable file
        if name.endswith(".csv"):
            df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False,
                             on_bad_lines="skip", encoding_errors="replace")  # fmt: skip
        elif name.endswith(".jsonl"):
            rows = []
            for line in data.decode("utf-8", "replace").splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
            df = pd.DataFrame(rows)
        else:
            df = pd.read_parquet(io.BytesIO(data))
        for c in ("user_id", "item_id", "ts", "event_type", "value"):
            df[c] = (df[c] if c in df else pd.Series(pd.NA, index=df.index)).astype("string")
        frames.append(df[["user_id", "item_id", "ts", "event_type", "value"]])
    df = pd.concat(frames, ignore_index=True)
    raw_rows = len(df)
    ts_s = df["ts"].str.strip()
    epoch = pd.to_numeric(ts_s, errors="coerce")
    ts = pd.to_datetime(ts_s.where(epoch.isna()), format="ISO8601", utc=True, errors="coerce")
    ts = ts.fillna(pd.to_datetime(epoch, unit="s", utc=True))
    value = pd.to_numeric(df["value"], errors="coerce")
    event = df["event_type"].fillna("interaction").replace("", "interaction")
    limit = pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(days=1, hours=s.future_tolerance_hours)
    blank = lambda c: df[c].isna() | (df[c].str.strip() == "")  # noqa: E731
    reasons = [
        ("missing_user_id", blank("user_id")),
        ("missing_item_id", blank("item_id")),
        ("missing_ts", blank("ts")),
        ("unparseable_ts", ts.isna()),
        ("future_ts", ts > limit),
        ("unknown_event_type", ~event.isin(s.event_types)),
        ("unparseable_value", df["value"].notna() & (df["value"] != "") & value.isna()),
        ("value_out_of_range", value.notna() & ~value.between(s.value_min, s.value_max)),
    ]
    reason = pd.Series(np.select([m.fillna(False).to_numpy(bool) for _, m in reasons],
                                 [r for r, _ in reasons], default=""), index=df.index)  # fmt: skip
    out = pd.DataFrame({"user_id": df["user_id"], "item_id": df["item_id"], "ts": ts,
                        "event_type": event, "value": value})  # fmt: skip
    ok = out[reason == ""]
    exact = ok.duplicated(["user_id", "item_id", "event_type", "ts", "value"])
    ok = ok[~exact]
    conflict = ok.duplicated(["user_id", "item_id", "event_type", "ts"])
    silver = ok[~conflict].sort_values(["ts", "user_id", "item_id"])
    bad = df[reason != ""].assign(reason=reason[reason != ""])
    conflicts = df.loc[ok.index[conflict]].assign(reason="conflicting_duplicate")
    quarantine = pd.concat([bad, conflicts])
    out_dir = Path(root) / "bench_pandas"
    out_dir.mkdir(exist_ok=True)
    silver.to_parquet(out_dir / "silver.parquet", compression="zstd")
    quarantine.to_parquet(out_dir / "quarantine.parquet", compression="zstd")
    return {
        "seconds": time.perf_counter() - t0,
        "rows": raw_rows,
        "silver": len(silver),
        "quarantined": len(quarantine),
        "duplicates": int(exact.sum()),
    }


def _run_child(kind: str, root: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--lake", root],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "GX_ANALYTICS_ENABLED": "false"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--dirty", type=float, default=0.01)
    ap.add_argument("--lake", default=None, help="reuse/keep the generated lake here")
    ap.add_argument("--child", choices=["ours", "pandas"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = args.lake or tempfile.mkdtemp(prefix="metarec-bench-ingest-")
    if args.child:
        result = _child_ours(root) if args.child == "ours" else _child_pandas(root)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    from tasks.lake.storage import Lake
    from tasks.sources.synth import SynthParams, generate

    lake = Lake(root)
    if lake.read_json("raw/_synth_manifest.json") is None:
        t0 = time.perf_counter()
        generate(lake, SynthParams(users=200_000, items=50_000, days=1,
                                   events_per_day=args.events, dirty_rate=args.dirty))  # fmt: skip
        print(f"generated {args.events:,} events in {time.perf_counter() - t0:.1f} s at {root}")
    day = lake.read_json("raw/_synth_manifest.json")["days"][0]
    ours, pandas = _run_child("ours", root), _run_child("pandas", root)
    bad = sum(day["quarantine"].values())
    print(f"\nmanifest: {day['rows_written']:,} rows, {day['clean_rows']:,} clean, "
          f"{bad:,} quarantined, {day['duplicates']:,} duplicates\n")  # fmt: skip
    cols = ("implementation", "rows", "silver", "quarantined", "duplicates", "seconds",
            "rows/s", "peak RSS MB")  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in (("metarec (numpy/Polars/DuckDB)", ours), ("plain pandas", pandas)):
        print(f"| {name} | {r['rows']:,} | {r['silver']:,} | {r['quarantined']:,} | "
              f"{r['duplicates']:,} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | "
              f"{r['peak_rss_mb']:,.0f} |")  # fmt: skip
    print(f"\nthroughput ratio metarec / pandas: {pandas['seconds'] / ours['seconds']:.2f}x "
          f"(ours: ingest {ours['ingest_s']:.2f} s + validate {ours['validate_s']:.2f} s; "
          f"GX import {ours['gx_import_s']:.2f} s once per process, not timed)")  # fmt: skip


if __name__ == "__main__":
    main()
