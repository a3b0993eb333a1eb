"""tasks.serve.inputs: a night's fingerprint follows its raw files up to the date, the
settings and the model config, not the storage root; a stamp marks it published."""

from __future__ import annotations

from pathlib import Path

from schemas import tables
from tasks.config import Settings
from tasks.lake.dates import parse_date
from tasks.lake.storage import Lake
from tasks.serve.inputs import is_published, night_fingerprint, stamp_published
from tasks.sources.synth import SynthParams, generate


def test_fingerprint_tracks_raw_files_up_to_the_date(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    generate(lake, SynthParams(users=50, items=40, days=3, events_per_day=200))
    days = [parse_date(d) for d in lake.partitions(tables.RAW_INTERACTIONS)]
    settings = Settings(storage=lake.root)
    before = {d: night_fingerprint(lake, d, settings) for d in days}
    assert before == {d: night_fingerprint(lake, d, settings) for d in days}  # stable
    assert len(set(before.values())) == 3
    # A late file for the middle day changes that day and the next, not the first.
    lake.write_file(tables.RAW_INTERACTIONS, "late.csv", b"user_id,item_id,ts\nu1,i1,0\n",
                    dt=days[1])  # fmt: skip
    after = {d: night_fingerprint(lake, d, settings) for d in days}
    assert after[days[0]] == before[days[0]]
    assert after[days[1]] != before[days[1]] and after[days[2]] != before[days[2]]
    # Config is part of the inputs; the storage root is not.
    assert night_fingerprint(lake, days[0], Settings(storage="/elsewhere")) == after[days[0]]
    assert night_fingerprint(lake, days[0], Settings(storage=lake.root, top_k=7)) != after[days[0]]
    # Published = a stamp with these inputs and a published status.
    assert not is_published(lake, days[0], after[days[0]])
    stamp_published(lake, days[0], after[days[0]], "failed")
    assert not is_published(lake, days[0], after[days[0]])
    stamp_published(lake, days[0], after[days[0]], "published_baseline")
    assert is_published(lake, days[0], after[days[0]])
    assert not is_published(lake, days[0], before[days[1]])
