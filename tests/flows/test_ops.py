"""`metarec server`: one command brings up the Prefect server, both pools with a worker
each, and the scheduled deployments; SIGINT (Ctrl-C) stops every process it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from flows import ops


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_metarec_server_brings_up_the_stack_and_stops_it(tmp_path: Path) -> None:
    port = ops.free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "PREFECT_LOGGING_LEVEL": "INFO"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "flows.cli", "server", "--port", str(port),
           "--storage", str(tmp_path / "lake"), "--cron", "15 4 * * *",
           "--timezone", "America/New_York"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ops.REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        assert any(f"http://127.0.0.1:{port}" in x for x in lines), lines
        api = f"http://127.0.0.1:{port}/api"
        # The UI served there calls this API, not the default port's (tests/flows/test_ui.py).
        assert _get(f"http://127.0.0.1:{port}/ui-settings")["api_url"] == api
        nightly = _get(f"{api}/deployments/name/nightly/nightly")
        (schedule,) = nightly["schedules"]
        assert schedule["schedule"]["cron"] == "15 4 * * *"
        assert schedule["schedule"]["timezone"] == "America/New_York"
        assert nightly["parameters"]["storage"] == str(tmp_path / "lake")
        assert _get(f"{api}/deployments/name/train/train")["work_pool_name"] == "metarec-gpu"
        for pool in ops.POOLS:  # one worker per pool, polling
            workers = ops.api_post(api, f"work_pools/{pool}/workers/filter")
            for _ in range(30):
                if workers:
                    break
                time.sleep(1)
                workers = ops.api_post(api, f"work_pools/{pool}/workers/filter")
            assert len(workers) == 1, pool
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # server + 2 workers

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, alive
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for child in children:  # whatever the stack left behind: SIGINT, then SIGKILL
            if child.is_running():
                child.send_signal(signal.SIGINT)
        for child in psutil.wait_procs(children, timeout=20)[1]:
            child.kill()
