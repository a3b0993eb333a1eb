"""Shared test setup: no telemetry, no network, an isolated PREFECT_HOME, real data paths."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Set before anything imports prefect or great_expectations.
_HOME = tempfile.mkdtemp(prefix="metarec-test-prefect-")
os.environ.setdefault("PREFECT_HOME", _HOME)
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("METAREC_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (ML-100K, ml-latest-small, Last.fm 2K); never copied into the repo."""
    if not (SHARED_DATA / "ml-100k" / "u.data").exists():
        pytest.fail(f"shared datasets not found at {SHARED_DATA} (set METAREC_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture()
def lake_root(tmp_path: Path) -> str:
    return str(tmp_path / "lake")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite in PREFECT_HOME) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
