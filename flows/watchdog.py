"""Prefect's temporary API server, bound to the life of the command that needs it.

A flow run from the shell with no PREFECT_API_URL starts a temporary API server: Prefect
runs it as a plain subprocess (SubprocessASGIServer) and stops it from an atexit hook,
which never runs when the command is killed (kill -9, the OOM killer): the server, its
port and its SQLite database lived on. `guard_ephemeral_server` starts that server early
(every Prefect client of the process then uses it) under a watchdog that stops it when
the command dies, however it dies.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

# The watchdog: a tiny process of its own session that reads server pids, one a line, from
# a pipe whose only write end is the command's. Any death of the command (kill -9
# included) closes the pipe; the watchdog then stops those servers through pidfds, which
# cannot hit a reused pid.
_WATCHDOG = """
import os, select, signal, sys
fds = []
for line in sys.stdin.buffer:
    try:
        fds.append(os.pidfd_open(int(line)))
    except (ValueError, OSError):
        pass
for fd in fds:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if select.select([fd], [], [], 0)[0]:
            break
        signal.pidfd_send_signal(fd, sig)
        select.select([fd], [], [], 5)
"""
_GUARDS: list[subprocess.Popen] = []


def guard_ephemeral_server() -> int | None:
    """Without PREFECT_API_URL, start Prefect's temporary API server now (the flows then
    use it) with a watchdog that stops it when this process dies; returns its pid (None:
    an API is configured, nothing to guard).

    The watchdog starts first and learns the server's pid the moment it exists (the server
    starts in a thread while this one watches), so a kill during the server's slow start
    leaves no orphan either."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    guard = subprocess.Popen(
        [sys.executable, "-I", "-c", _WATCHDOG], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    _GUARDS.append(guard)  # kept open for the life of the process: its end is our death
    server = SubprocessASGIServer()  # the instance every Prefect client of this process uses
    failed: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:
            failed.append(exc)

    starter = threading.Thread(target=start, name="metarec-prefect-server", daemon=True)
    starter.start()
    told = None
    while True:  # Prefect restarts the server on another port when its port was taken
        proc = server.server_process
        if proc is not None and proc.pid != told:
            guard.stdin.write(f"{proc.pid}\n".encode())
            guard.stdin.flush()
            told = proc.pid
        if not starter.is_alive():
            break
        time.sleep(0.01)
    if failed:
        raise failed[0]
    return told
