"""Pseudonyms: keyed HMAC-SHA256 (16 hex digits), the key from the environment, a Prefect
Secret block or the lake's own generated key (0600), never shown."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

import polars as pl
import pytest

from tasks.config import Settings
from tasks.lake.pseudonyms import KEY_ENV, KEY_FILE, Pseudonyms, pseudonyms_for
from tasks.lake.storage import Lake

ENV_KEY = "team-provided-key-0123456789"


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def test_pseudonym_is_the_truncated_keyed_hmac() -> None:
    p = Pseudonyms(b"k" * 32, "test")
    expected = hmac.new(b"k" * 32, b"42", hashlib.sha256).hexdigest()[:16]
    assert p.of("42") == expected and len(expected) == 16
    assert Pseudonyms(b"j" * 32, "test").of("42") != expected  # the key matters
    ids = pl.Series("user_id", ["42", None, "7", "42"])
    assert p.series(ids).to_list() == [expected, None, p.of("7"), expected]
    assert p.frame(pl.DataFrame({"user_id": ["7"], "x": [1]})).row(0) == (p.of("7"), 1)
    assert "kkkk" not in repr(p)  # the key never shows in a repr (logs, tracebacks)


def test_the_environment_key_wins(lake_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, ENV_KEY)
    p = pseudonyms_for(Lake(lake_root), Settings(storage=lake_root))
    assert p.source == f"environment {KEY_ENV}"
    assert p.of("42") == hmac.new(ENV_KEY.encode(), b"42", hashlib.sha256).hexdigest()[:16]
    assert not (Path(lake_root) / KEY_FILE).exists()  # no lake key generated


def test_a_short_key_is_refused_without_showing_it(
    lake_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "short-secret")
    with pytest.raises(ValueError) as info:
        pseudonyms_for(Lake(lake_root), Settings(storage=lake_root))
    assert str(info.value) == (
        f"the pseudonym key in ${KEY_ENV} is shorter than 16 characters"
    )  # fmt: skip


def test_the_lake_key_is_generated_once_private(lake_root: str) -> None:
    lake, settings = Lake(lake_root), Settings(storage=lake_root)
    first = pseudonyms_for(lake, settings)
    path = Path(lake_root) / KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.source == f"lake key {KEY_FILE}"
    assert pseudonyms_for(lake, settings).of("42") == first.of("42")  # stable across runs
    assert Pseudonyms(path.read_bytes().strip(), "file").of("42") == first.of("42")
    other = Lake(f"{lake_root}-other")
    assert pseudonyms_for(other, Settings(storage=other.root)).of("42") != first.of("42")


def test_runs_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    for n in range(10):
        lake = Lake(str(tmp_path / f"lake{n}"))
        barrier, got = threading.Barrier(4), []

        def run(lake: Lake = lake, barrier: threading.Barrier = barrier, got: list = got) -> None:
            barrier.wait()
            got.append(pseudonyms_for(lake, Settings(storage=lake.root)).of("42"))

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 4 and len(set(got)) == 1
        assert os.listdir(tmp_path / f"lake{n}" / "_keys") == ["pseudonym.key"]  # no temp


@pytest.mark.usefixtures("prefect_harness")
def test_the_key_from_a_prefect_secret_block(lake_root: str) -> None:
    from prefect.blocks.system import Secret

    Secret(value="block-provided-key-0123456789").save("metarec-pseudonym-test", overwrite=True)
    settings = Settings(storage=lake_root, pseudonym_secret_block="metarec-pseudonym-test")
    p = pseudonyms_for(Lake(lake_root), settings)
    assert p.source == "Secret 'metarec-pseudonym-test'"
    key = b"block-provided-key-0123456789"
    assert p.of("42") == hmac.new(key, b"42", hashlib.sha256).hexdigest()[:16]
    assert not (Path(lake_root) / KEY_FILE).exists()
