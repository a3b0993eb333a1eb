"""`generate`: the world once, then each day's events, faults and files, then the manifest."""

from __future__ import annotations

import datetime as dt

import numpy as np

from schemas.interactions import REASONS
from schemas.tables import RAW_INTERACTIONS, RAW_ITEMS, RAW_USERS
from tasks.lake.storage import Lake
from tasks.sources.synth.faults import DayManifest, SynthManifest, assemble, plan_faults
from tasks.sources.synth.files import write_files
from tasks.sources.synth.params import CORRUPT, CSV, FILES, JSONL, SynthParams, rng_for
from tasks.sources.synth.world import World, build_world, draw, sample_events

MANIFEST_PATH = "raw/_synth_manifest.json"  # lake-relative: SynthManifest.to_json()
TRUTH_PATH = "raw/_synth_truth.npz"  # lake-relative: World.truth_npz()


def generate(lake: Lake, params: SynthParams) -> SynthManifest:
    """Generate side tables and `params.days` days of raw interaction files into `lake`.

    Returns the manifest (also written to raw/_synth_manifest.json) that states, per day,
    how many rows validation should keep, quarantine (by reason) and drop as duplicates.
    """
    world = build_world(params, rng_for(params, 0))
    lake.write_parquet_file(RAW_USERS, "users.parquet", world.users)
    lake.write_parquet_file(RAW_ITEMS, "items.parquet", world.items)
    lake.write_bytes(TRUTH_PATH, world.truth_npz())
    manifest = SynthManifest(
        params=params,
        users=params.users,
        items=params.items,
        zero_shot_users=int(world.zero_shot.sum()),
        days=tuple(_generate_day(lake, world, params, t) for t in range(params.days)),
    )
    lake.write_json(MANIFEST_PATH, manifest.to_json())
    return manifest


def _generate_day(lake: Lake, w: World, p: SynthParams, t: int) -> DayManifest:
    rng = rng_for(p, 1, t)
    day = p.start + dt.timedelta(days=t)
    events = sample_events(w, p, t, rng)
    dirty = p.dirty_rate > 0
    # File-level faults on a regular schedule, so even a short run shows each kind.
    period = max(1, round(1 / (5 * p.dirty_rate))) if dirty else 0
    corrupt_day = dirty and t % period == 0
    extra_col = (CSV if t % 2 == 0 else JSONL) if dirty and t % period == 1 % period else None

    n = events.height
    shares = np.array([0.38, 0.28, 0.29, 0.05] if corrupt_day else [0.4, 0.3, 0.3, 0.0])
    file = draw(shares, n, rng).astype(np.int8)
    fault = np.full(n, -1, np.int16)
    conflict = dups = np.empty(0, np.int64)
    if dirty:
        has_value = events["value"].is_not_null().to_numpy()
        fault, conflict, dups = plan_faults(file, has_value, p.dirty_rate, rng)
    frame = assemble(events, file, fault, conflict, dups, p, rng)
    written = write_files(lake, frame, day, t, extra_col)
    # Stale landing files from an earlier run with other parameters would break the counts.
    names = {f.rsplit("/", 1)[-1] for f in written}
    for old in lake.files(RAW_INTERACTIONS, dt=day):
        if old.rsplit("/", 1)[-1] not in names:
            lake.fs.rm(old)

    counts = dict.fromkeys(REASONS, 0)
    codes, k = np.unique(fault[fault >= 0], return_counts=True)
    counts.update({REASONS[c]: int(m) for c, m in zip(codes, k, strict=True)})
    counts["conflicting_duplicate"] = len(conflict)
    n_corrupt = int((file == CORRUPT).sum())
    rel = f"{RAW_INTERACTIONS}/dt={day.isoformat()}"
    corrupt = {"file": f"{rel}/{FILES[CORRUPT]}", "reason": "truncated_gzip", "rows": n_corrupt}
    return DayManifest(
        date=day,
        rows_written=n - n_corrupt + len(conflict) + len(dups),
        clean_rows=n - n_corrupt - int((fault >= 0).sum()),
        quarantine=counts,
        duplicates=len(dups),
        corrupt_files=(corrupt,) if corrupt_day else (),
        unknown_column_files=(f"{rel}/{FILES[extra_col]}",) if extra_col is not None else (),
        files=tuple(written),
    )
