"""Fixtures of the ingest tests: an empty local lake."""

from __future__ import annotations

import pytest

from tasks.lake.storage import Lake


@pytest.fixture()
def lake(lake_root: str) -> Lake:
    return Lake(lake_root)
