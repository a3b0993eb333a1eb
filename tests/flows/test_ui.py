"""The Prefect UI served on a port other than 4200 talks to its own API: /ui-settings names
it, and a real headless browser (Debian's chromium; .ci/run installs it) renders the
deployments page with the nightly deployment on it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import ops

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# FIELD-NOTES: the flags that make Debian's chromium run headless, offline and quiet.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1600,1400",
                  "--virtual-time-budget=15000"]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[str]:
    """A Prefect server on a free port with metarec's deployments registered; the shell
    still exports PREFECT_API_URL for :4200, as docs/operations.md once told users to."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = ops.free_port()
    env = ops.child_env(PREFECT_HOME=str(home), PREFECT_API_URL="http://127.0.0.1:4200/api")
    proc, api_url = ops.start_server(port=port, env=env, log_path=home / "server.log")
    try:
        ops.deploy(api_url, storage=str(tmp_path_factory.mktemp("lake")))
        yield api_url
    finally:
        ops.stop_process(proc)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


@pytest.mark.slow
def test_the_ui_settings_name_the_served_api(served: str) -> None:
    ui = served.removesuffix("/api")
    assert _get(f"{ui}/ui-settings")["api_url"] == served


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_a_browser_shows_the_nightly_deployment(served: str, tmp_path: Path) -> None:
    nightly = _get(f"{served}/deployments/name/nightly/nightly")
    ui = served.removesuffix("/api")
    page = f"{ui}/deployments"
    base = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    env = {**os.environ, "HOME": str(tmp_path)}  # chromium writes its caches under HOME
    dom = subprocess.run([*base, "--dump-dom", page], capture_output=True, text=True,
                         timeout=180, env=env, check=True).stdout  # fmt: skip
    shot = tmp_path / "deployments.png"
    subprocess.run([*base, f"--screenshot={shot}", page], capture_output=True, timeout=180,
                   env=env, check=True)  # fmt: skip
    assert "Oops" not in dom, "the UI could not reach its API"
    # The deployment list links the nightly deployment this server registered, by its id.
    link = re.search(r'<a href="/deployments/deployment/([0-9a-f-]+)" '
                     r'class="deployment-list__name" title="nightly">nightly</a>', dom)  # fmt: skip
    assert link is not None, dom[:2000]
    assert link.group(1) == nightly["id"]
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
