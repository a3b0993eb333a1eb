"""The synthetic generator: determinism, row accounting, faults, arrivals, structure.

The strongest check re-validates the generated files with an independent line-by-line
reference (plain Python, small sizes) and compares its counts with the manifest.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.interactions import RAW_COLUMNS, REASONS
from tasks.config import Settings
from tasks.lake.storage import lake_from
from tasks.sources.synth import SynthParams, generate
from tasks.sources.synth.faults import INJECTED

SMALL = SynthParams(users=300, items=200, days=4, events_per_day=1500, dirty_rate=0.05, seed=7)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("dirty")
    return root, generate(lake_from(root), SMALL)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("clean")
    params = SynthParams(users=400, items=150, days=6, events_per_day=800, seed=3)
    return root, generate(lake_from(root), params)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _events(root: Path) -> pl.DataFrame:
    """All readable rows of a clean lake (every file type), with their partition date."""
    frames = []
    for folder in sorted((root / "raw" / "interactions").iterdir()):
        day = dt.date.fromisoformat(folder.name.removeprefix("dt="))
        for f in sorted(folder.iterdir()):
            if f.suffix == ".parquet":
                frame = pl.read_parquet(f)
                if frame.schema["ts"] != pl.Int64:  # a UTC timestamp, not epoch seconds
                    frame = frame.with_columns(pl.col("ts").dt.epoch("s"))
            else:
                data = f.read_bytes()
                data = gzip.decompress(data) if f.suffix == ".gz" else data
                reader = pl.read_csv if ".csv" in f.name else pl.read_ndjson
                frame = reader(io.BytesIO(data)).with_columns(
                    pl.col("ts").str.to_datetime(time_zone="UTC").dt.epoch("s")
                )
            frames.append(frame.select(*RAW_COLUMNS).with_columns(dt=pl.lit(day)))
    return pl.concat(frames, how="vertical_relaxed")


# ---- determinism and accounting -----------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    params = SynthParams(users=120, items=80, days=3, events_per_day=600, dirty_rate=0.05)
    generate(lake_from(tmp_path / "a"), params)
    generate(lake_from(tmp_path / "b"), params)
    generate(lake_from(tmp_path / "c"), SynthParams(**{**params.__dict__, "seed": 1}))
    a, b, c = (_tree(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) == 3 * 3 + 1 + 2 + 2  # 3 files a day, 1 corrupt, side tables, docs
    assert a["raw/_synth_manifest.json"] != c["raw/_synth_manifest.json"]
    assert a["raw/users/users.parquet"] != c["raw/users/users.parquet"]


def test_rerun_in_same_lake_is_identical_and_removes_stale_files(tmp_path: Path) -> None:
    lake = lake_from(tmp_path)
    generate(lake, SMALL)  # dirty: day 0 has a corrupt part-d file
    first = _tree(tmp_path)
    assert "raw/interactions/dt=2024-01-01/part-d.jsonl.gz" in first
    generate(lake, SMALL)
    assert _tree(tmp_path) == first
    generate(lake, SynthParams(**{**SMALL.__dict__, "dirty_rate": 0.0}))
    assert not list(tmp_path.rglob("part-d.jsonl.gz"))


def test_manifest_invariant_and_rows_in_files(dirty) -> None:
    root, manifest = dirty
    on_disk = json.loads((root / "raw" / "_synth_manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest.to_json()))
    for day in manifest.days:
        assert set(day.quarantine) == set(REASONS)
        assert day.rows_written == day.clean_rows + sum(day.quarantine.values()) + day.duplicates
        folder = root / "raw" / "interactions" / f"dt={day.date}"
        corrupt = {Path(c["file"]).name for c in day.corrupt_files}
        rows = 0
        for f in folder.iterdir():
            if f.name in corrupt:
                with pytest.raises((EOFError, zlib.error, OSError)):
                    gzip.decompress(f.read_bytes())
            elif f.suffix == ".parquet":
                rows += pq.read_metadata(f).num_rows
            else:
                data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
                rows += data.count(b"\n") - (1 if ".csv" in f.name else 0)
        assert rows == day.rows_written


def test_faults_present_at_five_percent(dirty) -> None:
    _, manifest = dirty
    totals = manifest.totals
    assert all(totals["quarantine"][r] > 0 for r in INJECTED), totals
    assert all(totals["quarantine"][r] == 0 for r in REASONS if r not in INJECTED), totals
    assert totals["duplicates"] > 0
    assert totals["corrupt_files"] >= 1 and totals["corrupt_rows"] > 0
    assert totals["unknown_column_files"] >= 1
    bad = sum(totals["quarantine"].values()) + totals["duplicates"]
    assert 0.03 < bad / totals["rows_written"] < 0.07


def _reference_day(folder: Path, day: dt.date, corrupt: set[str]) -> list[tuple[str, str]]:
    """Classify every raw row the way the contract says: (file, reason) in file order."""
    settings = Settings()
    end = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(days=1)
    late = (end + dt.timedelta(hours=settings.future_tolerance_hours)).timestamp()
    records = []  # (file, reason or None, record)
    for f in sorted(folder.iterdir()):
        if f.name in corrupt:
            continue
        if f.suffix == ".parquet":
            for rec in pq.read_table(f).to_pylist():
                ts = rec["ts"]
                rec["ts"] = ts if isinstance(ts, int) else int(ts.timestamp())
                records.append((f.name, None, rec))
            continue
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        lines = data.split(b"\n")[:-1]
        header = lines.pop(0).decode().split(",") if ".csv" in f.name else None
        for raw in lines:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                records.append((f.name, "invalid_encoding", None))
                continue
            if header is not None:
                fields = text.split(",")
                ok = len(fields) == len(header)
                rec = dict(zip(header, fields, strict=True)) if ok else None
                records.append((f.name, None if ok else "malformed_line", rec))
            else:
                try:
                    records.append((f.name, None, json.loads(text)))
                except json.JSONDecodeError:
                    records.append((f.name, "malformed_line", None))
    out = []
    seen: dict[tuple, object] = {}
    for name, reason, rec in records:
        if reason is None:
            reason = _row_reason(rec, late, settings)
        if reason is None:
            key = (rec["user_id"], rec["item_id"], rec["event_type"], rec["ts"])
            if key in seen:
                reason = "duplicate" if seen[key] == rec["value"] else "conflicting_duplicate"
            else:
                seen[key] = rec["value"]
                reason = "clean"
        out.append((name, reason))
    return out


def _row_reason(rec: dict, late: float, settings: Settings) -> str | None:
    for col, reason in (("user_id", "missing_user_id"), ("item_id", "missing_item_id")):
        if rec.get(col) in (None, ""):
            return reason
    ts = rec.get("ts")
    if ts in (None, ""):
        return "missing_ts"
    if isinstance(ts, str):
        try:
            ts = rec["ts"] = int(dt.datetime.fromisoformat(ts).timestamp())
        except ValueError:
            return "unparseable_ts"
    if ts > late:
        return "future_ts"
    if rec["event_type"] not in settings.event_types:
        return "unknown_event_type"
    value = rec.get("value")
    if value not in (None, ""):
        try:
            value = float(value)
        except ValueError:
            return "unparseable_value"
        if not settings.value_min <= value <= settings.value_max:
            return "value_out_of_range"
    rec["value"] = None if value in (None, "") else value
    return None


def test_reference_validation_agrees_with_manifest(dirty) -> None:
    root, manifest = dirty
    for day in manifest.days:
        corrupt = {Path(c["file"]).name for c in day.corrupt_files}
        rows = _reference_day(root / "raw" / "interactions" / f"dt={day.date}", day.date, corrupt)
        want = Counter({r: k for r, k in day.quarantine.items() if k})
        want.update({"clean": day.clean_rows, "duplicate": day.duplicates})
        assert Counter(reason for _, reason in rows) == +want, day.date
        # The conflicting copy comes after its original: in the CSV, they are its last rows.
        csv = [reason for name, reason in rows if name.endswith(".csv")]
        n_conf = csv.count("conflicting_duplicate")
        assert n_conf > 0 and set(csv[-n_conf:]) == {"conflicting_duplicate"}


def test_unknown_columns_are_extra_columns(dirty) -> None:
    root, manifest = dirty
    files = [f for d in manifest.days for f in d.unknown_column_files]
    assert files
    for rel in files:
        data = (root / rel).read_bytes()
        first = gzip.decompress(data).split(b"\n")[0] if rel.endswith(".gz") else data[:200]
        assert b"session_id" in first or b'"app_version"' in first


# ---- clean generation and structure ---------------------------------------------------


def test_dirty_rate_zero_is_all_clean(clean) -> None:
    root, manifest = clean
    totals = manifest.totals
    assert all(v == 0 for v in totals["quarantine"].values())
    assert totals["duplicates"] == totals["corrupt_files"] == totals["unknown_column_files"] == 0
    assert totals["rows_written"] == totals["clean_rows"] > 0.95 * 6 * 800
    events = _events(root)
    assert events.height == totals["clean_rows"]
    assert events.select(pl.struct("user_id", "item_id", "event_type", "ts").is_unique().all())[
        0, 0
    ]
    # Every event lies on its partition's UTC day.
    assert (pl.from_epoch(events["ts"], time_unit="s").dt.date() == events["dt"]).all()
    assert set(events["event_type"].unique()) == {
        "view", "click", "cart", "purchase", "rating", "play"
    }  # fmt: skip
    ratings = events.filter(pl.col("event_type") == "rating")["value"]
    assert ratings.min() >= 1 and ratings.max() <= 5


def test_side_tables_zero_shot_users_and_arrivals(clean) -> None:
    root, manifest = clean
    users = pl.read_parquet(root / "raw/users/users.parquet")
    items = pl.read_parquet(root / "raw/items/items.parquet")
    assert users.height == 400 and items.height == 150
    assert users.schema["age"].is_numeric() and items.schema["price"].is_numeric()
    # Plain (not large) strings, as MovieLens side tables: readers agree on the types.
    for name in ("users", "items"):
        schema = pq.read_schema(root / f"raw/{name}/{name}.parquet")
        assert schema.field(f"{name[:-1]}_id").type == pa.string()
    assert users["interests"].str.contains("|", literal=True).any()
    assert items["tags"].str.split("|").list.len().max() > 1
    events = _events(root)
    active = set(events["user_id"])
    zero_shot = set(users["user_id"]) - active
    assert manifest.zero_shot_users >= 1 and len(zero_shot) >= manifest.zero_shot_users

    truth = np.load(root / "raw/_synth_truth.npz")
    assert set(truth["user_ids"][truth["zero_shot"]]) <= zero_shot
    first_day = events.group_by("user_id").agg(pl.col("dt").min())
    start = manifest.params.start
    for ids, arrival, col in (
        (truth["user_ids"], truth["user_arrival"], "user_id"),
        (truth["item_ids"], truth["item_arrival"], "item_id"),
    ):
        arrived = pl.DataFrame({col: ids, "arrival": arrival})
        seen = events.group_by(col).agg(pl.col("dt").min().alias("first")).join(arrived, on=col)
        # No activity before arrival, and some entities do arrive after day 0.
        days_in = seen.select((pl.col("first") - pl.lit(start)).dt.total_days())["first"]
        assert (days_in >= seen["arrival"]).all()
        assert (seen["arrival"] > 0).sum() > 0
    assert first_day["dt"].n_unique() > 1  # new users keep showing up


def test_taste_follows_features_and_evening_peak(clean) -> None:
    root, _ = clean
    users = pl.read_parquet(root / "raw/users/users.parquet")
    items = pl.read_parquet(root / "raw/items/items.parquet")
    events = _events(root).join(users, on="user_id").join(items, on="item_id")
    in_interests = events.select(
        pl.col("interests").str.split("|").list.contains(pl.col("category")).mean()
    )[0, 0]
    # Baseline: the same users paired with items drawn by the same popularity, shuffled.
    shuffled = events.with_columns(pl.col("category").shuffle(seed=0))
    baseline = shuffled.select(
        pl.col("interests").str.split("|").list.contains(pl.col("category")).mean()
    )[0, 0]
    assert in_interests > baseline + 0.1
    hours = pl.from_epoch(events["ts"], time_unit="s").dt.hour()
    assert hours.is_between(17, 22).sum() > 2 * hours.is_between(5, 10).sum()
