"""Operate metarec on Prefect: `metarec server`, `metarec deploy`, `metarec worker`.

Reads deployments/prefect.yaml; talks to a Prefect API (PREFECT_API_URL). No lake tables.

- `start_server` runs `prefect server start` bound to 127.0.0.1 (telemetry off) and waits
  for /api/health.
- `ensure_pools` creates the process work pools `metarec-cpu` and `metarec-gpu` if absent.
- `deploy` registers every deployment of deployments/prefect.yaml (`prefect deploy --all`),
  after applying the nightly's cron/timezone and the storage given on the command line.
- `start_worker` runs `prefect worker start --pool NAME` in this clone (METAREC_REPO, read
  by the deployments' pull step); metarec-gpu workers take one flow run at a time.
- `run_stack` does all of it and stops everything on Ctrl-C: workers first, with SIGINT
  (a background worker ignores SIGTERM; FIELD-NOTES), then the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
POOLS = ("metarec-cpu", "metarec-gpu")
GPU_POOL = "metarec-gpu"
DEFAULT_PORT = 4200
# Telemetry off unless the user set these otherwise.
QUIET_ENV = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "GX_ANALYTICS_ENABLED": "false"}  # fmt: skip


def prefect_bin() -> str:
    """The `prefect` executable of this environment (beside the running Python)."""
    candidate = Path(sys.executable).with_name("prefect")
    return str(candidate) if candidate.exists() else "prefect"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def child_env(api_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a server, worker or deploy process: ours, telemetry off, this
    clone as METAREC_REPO, and PREFECT_API_URL when given."""
    env = {**QUIET_ENV, **os.environ, "METAREC_REPO": str(REPO), **extra}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def start_server(
    host: str = "127.0.0.1", port: int = DEFAULT_PORT, env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None, timeout: float = 120.0,
) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """Start `prefect server start` and wait until its API answers; returns (process,
    API URL). The process has its own session, so a terminal's Ctrl-C reaches us first
    and we stop it in order (`stop_process`)."""
    api_url = f"http://{host}:{port}/api"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    # The UI's API URL derives from PREFECT_API_URL or the default port, not from --port:
    # without this a UI served on another port calls :4200 ("Oops. Something went wrong").
    server_env = {**(env or child_env()), "PREFECT_SERVER_UI_API_URL": api_url}
    server_env.pop("PREFECT_UI_API_URL", None)  # the older alias would win over it
    proc = subprocess.Popen(
        [prefect_bin(), "server", "start", "--host", host, "--port", str(port)],
        env=server_env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode} (log: {log_path})")
        if _healthy(api_url):
            return proc, api_url
        time.sleep(0.5)
    stop_process(proc)
    raise TimeoutError(f"prefect server not healthy at {api_url} after {timeout:.0f}s")


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def ensure_pools(api_url: str, pools: tuple[str, ...] = POOLS) -> list[str]:
    """Create the process work pools that do not exist yet; returns the ones created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    created = []
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as c:
        for name in pools:
            try:
                c.read_work_pool(name)
            except ObjectNotFound:
                template = ProcessWorker.get_default_base_job_template()
                c.create_work_pool(
                    WorkPoolCreate(name=name, type="process", base_job_template=template)
                )
                created.append(name)
    return created


def render_prefect_file(
    target: str | Path, cron: str | None = None, timezone: str | None = None,
    storage: str | None = None, train_max_steps: int | None = None,
) -> Path:  # fmt: skip
    """deployments/prefect.yaml with the nightly's schedule and the storage/train steps of
    every deployment overridden where given, written to `target`."""
    import yaml

    spec = yaml.safe_load(PREFECT_FILE.read_text())
    for dep in spec["deployments"]:
        params = dep.setdefault("parameters", {})
        if storage is not None and "storage" in params:
            params["storage"] = storage
        if train_max_steps is not None and "train_max_steps" in params:
            params["train_max_steps"] = train_max_steps
        if dep["name"] == "nightly":
            for schedule in dep["schedules"]:
                schedule.update({k: v for k, v in (("cron", cron), ("timezone", timezone)) if v})
    spec.pop("definitions", None)  # aliases are already resolved
    path = Path(target)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def deploy(
    api_url: str, cron: str | None = None, timezone: str | None = None,
    storage: str | None = None, train_max_steps: int | None = None,
) -> list[str]:  # fmt: skip
    """Create the pools if absent and register every deployment; returns their names
    (`flow/deployment`)."""
    import yaml

    ensure_pools(api_url)
    if timezone:
        _check_timezone(timezone)
    with tempfile.TemporaryDirectory(prefix="metarec-deploy-") as tmp:
        rendered = render_prefect_file(Path(tmp) / "prefect.yaml", cron, timezone, storage,
                                       train_max_steps)  # fmt: skip
        # Without METAREC_REPO here, its placeholder in the pull step is kept as is and
        # resolved by each worker at run time (its own clone), not frozen to ours.
        env = {k: v for k, v in child_env(api_url).items() if k != "METAREC_REPO"}
        proc = subprocess.run(
            [prefect_bin(), "--no-prompt", "deploy", "--all", "--prefect-file", str(rendered)],
            cwd=REPO, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        spec = yaml.safe_load(rendered.read_text())
    if proc.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    flows = {"nightly": "nightly", "backfill": "backfill", "train": "train", "ingest": "ingest"}
    return [f"{flows.get(d['name'], d['name'])}/{d['name']}" for d in spec["deployments"]]


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except Exception as exc:
        raise ValueError(f"unknown timezone {name!r} (an IANA name like Europe/Paris)") from exc


def start_worker(
    pool: str, api_url: str | None = None, limit: int | None = None,
    name: str | None = None, log_path: str | Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen:  # fmt: skip
    """Start a process worker for `pool` in this clone; GPU-pool workers default to one
    flow run at a time (`limit`)."""
    if limit is None and pool == GPU_POOL:
        limit = 1
    cmd = [prefect_bin(), "worker", "start", "--pool", pool, "--type", "process"]
    if limit:
        cmd += ["--limit", str(limit)]
    if name:
        cmd += ["--name", name]
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115
    return subprocess.Popen(
        cmd, cwd=REPO, env=child_env(api_url, **dict(extra_env or {})), stdout=out,
        stderr=subprocess.STDOUT if out else None, start_new_session=True,
    )  # fmt: skip


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> int | None:
    """Stop a worker or server we started: SIGINT (workers ignore SIGTERM when in the
    background), then SIGKILL of its process group if it does not exit in time."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)


def run_stack(
    host: str = "127.0.0.1", port: int = DEFAULT_PORT, cron: str | None = None,
    timezone: str | None = None, storage: str | None = None, log_dir: str | Path | None = None,
) -> int:  # fmt: skip
    """`metarec server`: server + pools + deployments + one worker per pool, until Ctrl-C."""
    _interrupt_on(signal.SIGINT, signal.SIGTERM)
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    logs = Path(log_dir or home / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    server = None
    try:
        print(f"metarec: starting the Prefect server on {host}:{port} (logs in {logs})")
        server, api_url = start_server(host, port, log_path=logs / "server.log")
        names = deploy(api_url, cron=cron, timezone=timezone, storage=storage)
        print(f"metarec: deployments registered: {', '.join(names)}")
        for pool in POOLS:
            procs.append(start_worker(pool, api_url, log_path=logs / f"worker-{pool}.log"))
        ui = api_url.removesuffix("/api")
        print(f"metarec: workers polling {', '.join(POOLS)}")
        print(f"metarec: Prefect UI at {ui}  (Deployments -> nightly shows its schedule)")
        print(f"metarec: point clients at it with  export PREFECT_API_URL={api_url}")
        print("metarec: Ctrl-C stops the workers and the server")
        while all(p.poll() is None for p in [server, *procs]):
            time.sleep(1)
        dead = [p.args[:3] for p in [server, *procs] if p.poll() is not None]
        print(f"metarec: a process exited unexpectedly: {dead}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmetarec: stopping workers and server")
        return 0
    finally:
        for p in procs:
            stop_process(p)
        if server is not None:
            stop_process(server)


def run_worker(pool: str, api_url: str | None = None, limit: int | None = None) -> int:
    """`metarec worker --pool NAME`: one worker in the foreground until Ctrl-C."""
    _interrupt_on(signal.SIGINT, signal.SIGTERM)
    proc = start_worker(pool, api_url, limit)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return stop_process(proc) or 0
    finally:
        stop_process(proc)


def _interrupt_on(*signums: int) -> None:
    """Raise KeyboardInterrupt on these signals, even when started in the background
    (where SIGINT is inherited as ignored), so the finally blocks stop the children."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for signum in signums:
        signal.signal(signum, handler)


def api_post(api_url: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """POST a JSON body to the Prefect REST API (stdlib only); returns the decoded reply."""
    request = urllib.request.Request(
        f"{api_url}/{path.lstrip('/')}", data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read() or b"null")
