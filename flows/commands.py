"""The `metarec` subcommands: each validates its arguments and calls a flow, which builds
the run's one Settings object, or, for the commands that need no orchestration, builds
Settings here and calls a plain task function.

Flows and tasks are imported inside each command on purpose: importing Prefect and torch
costs seconds, and `metarec --help` or a typo should answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

EXIT_BUSY = 75  # EX_TEMPFAIL: another run holds the lake; try again later


class UserError(Exception):
    """A problem the user can fix (bad argument, missing input); printed without traceback."""

    exit_code = 2


class LakeBusy(UserError):
    """Another metarec run holds the lake's writer lock past the wait."""

    exit_code = EXIT_BUSY


def settings_for(args: argparse.Namespace, **overrides):
    from tasks.config import settings_from

    return settings_from(storage=getattr(args, "storage", None), **overrides)


def lake_for(settings, must_exist: bool = False):
    """The command's Lake, its root checked at the edge: a UserError names a root with
    glob characters or `::`, or (`must_exist`, commands that read it) with no lake there."""
    from tasks.lake.roots import StorageError
    from tasks.lake.storage import lake_from

    try:
        return lake_from(settings.storage, must_exist=must_exist)
    except StorageError as exc:
        raise UserError(str(exc)) from None


@contextlib.contextmanager
def writer_lock(lake, settings) -> Iterator[None]:
    """Hold the lake's writer lock while a command writes it (the flows it calls take the
    same lock and find it already held); LakeBusy (exit 75) names the holder."""
    from tasks.lake.lock import WRITER, LakeLocked, lake_lock

    try:
        with lake_lock(lake, WRITER, settings):
            yield
    except LakeLocked as exc:
        raise LakeBusy(str(exc)) from None


def _orchestrate() -> None:
    """Prefect's temporary API server, started now under a watchdog so that it dies with
    this process, however it dies (flows/watchdog.py)."""
    from flows.watchdog import guard_ephemeral_server

    guard_ephemeral_server()


# ---- subcommands --------------------------------------------------------------------


def import_movielens(args: argparse.Namespace) -> int:
    from tasks.sources.movielens import import_movielens

    source = Path(args.source)
    if not source.is_dir():
        raise UserError(f"--source {source} is not a folder (expected ML-100K or ml-latest-small)")
    settings = settings_for(args)
    result = import_movielens(source, lake_for(settings))
    print(f"imported {result}")
    return 0


def synth(args: argparse.Namespace) -> int:
    from tasks.sources.synth import SynthParams, generate

    settings = settings_for(args)
    params = SynthParams(
        users=args.users,
        items=args.items,
        days=args.days,
        events_per_day=args.events_per_day,
        dirty_rate=args.dirty_rate,
        seed=args.seed,
        **({"start": args.start} if args.start else {}),
    )
    manifest = generate(lake_for(settings), params)
    totals = getattr(manifest, "totals", None)
    print(f"synthetic logs written to {settings.storage}: {totals if totals else manifest}")
    return 0


def _date_span(args: argparse.Namespace) -> tuple[dt.date, dt.date]:
    if args.date and (args.start or args.end):
        raise UserError("give either --date or --start/--end, not both")
    if args.date:
        return args.date, args.date
    if not (args.start and args.end):
        raise UserError("give --date D, or --start D1 --end D2")
    if args.end < args.start:
        raise UserError(f"--end {args.end} is before --start {args.start}")
    return args.start, args.end


def ingest(args: argparse.Namespace) -> int:
    from flows.ingest import ingest_flow

    start, end = _date_span(args)
    state = _locked(args, lambda: ingest_flow(storage=args.storage, start=start, end=end,
                                              return_state=True))  # fmt: skip
    print(f"metarec ingest: {state.message}")  # counts, warnings and failed dates
    return 0 if state.is_completed() else 1


def nightly(args: argparse.Namespace) -> int:
    from flows.nightly import nightly_flow

    state = _locked(args, lambda: nightly_flow(
        run_date=args.date, storage=args.storage, top_k=args.top_k,
        train_max_steps=args.train_steps, return_state=True,
    ))  # fmt: skip
    return 0 if state.is_completed() else 1


def backfill(args: argparse.Namespace) -> int:
    from flows.backfill import backfill_flow

    if args.end < args.start:
        raise UserError(f"--end {args.end} is before --start {args.start}")
    state = _locked(args, lambda: backfill_flow(
        start=args.start, end=args.end, storage=args.storage, top_k=args.top_k,
        train_max_steps=args.train_steps, max_parallel_dates=args.max_parallel_dates,
        force=args.force, return_state=True,
    ))  # fmt: skip
    return 0 if state.is_completed() else 1


def _locked(args: argparse.Namespace, run: Callable[[], Any]) -> Any:
    """Run a flow that writes the lake (an existing one) under its writer lock; the flow's
    final state."""
    settings = settings_for(args)
    lake = lake_for(settings, must_exist=True)
    with writer_lock(lake, settings):
        _orchestrate()
        return run()


def _api_url(args: argparse.Namespace) -> str:
    return args.api_url or os.environ.get("PREFECT_API_URL") or "http://127.0.0.1:4200/api"


def server(args: argparse.Namespace) -> int:
    from flows.ops import run_stack

    if args.timezone:
        _check_timezone(args.timezone)
    if args.storage:
        lake_for(settings_for(args))
    return run_stack(args.host, args.port, cron=args.cron, timezone=args.timezone,
                     storage=args.storage)  # fmt: skip


def deploy(args: argparse.Namespace) -> int:
    from flows.ops import deploy

    if args.timezone:
        _check_timezone(args.timezone)
    if args.storage:
        lake_for(settings_for(args))
    try:
        names = deploy(_api_url(args), cron=args.cron, timezone=args.timezone,
                       storage=args.storage)  # fmt: skip
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    print(f"deployed {', '.join(names)} to {_api_url(args)}")
    return 0


def worker(args: argparse.Namespace) -> int:
    from flows.ops import run_worker

    return run_worker(args.pool, _api_url(args), args.limit)


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except Exception:
        raise UserError(f"unknown timezone {name!r} (an IANA name like Europe/Paris)") from None


def demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    settings = settings_for(args)
    sample = Path(args.sample) if args.sample else None
    if sample is not None and not sample.is_dir():
        raise UserError(f"--sample {sample} is not a folder (expected a MovieLens copy)")
    with writer_lock(lake_for(settings), settings):
        _orchestrate()
        return run_demo(settings, days=args.days, sample=sample)


def sql(args: argparse.Namespace) -> int:
    from tasks.serve.warehouse import connect_warehouse, local_only, read_only_sql, warehouse_path

    settings = settings_for(args)
    lake = lake_for(settings, must_exist=True)
    if not lake.is_local:
        raise UserError(local_only(lake))
    if not Path(warehouse_path(lake)).exists():
        raise UserError(
            f"no warehouse at {warehouse_path(lake)}: run `metarec nightly` (or `demo`) first"
        )
    con = connect_warehouse(lake)
    queries = [args.command] if args.command else None
    if queries is None:
        print("metarec sql: DuckDB on the warehouse; end a statement with ';', Ctrl-D quits.")
        print("views: recommendations, recommendations_latest, metrics, runs, quarantine_summary")
    buffer = ""
    lines = iter(queries) if queries else _read_lines()
    for line in lines:
        buffer += line + "\n"
        if queries or buffer.rstrip().endswith(";"):
            try:
                rel = read_only_sql(con, buffer)
                if rel is not None:
                    print(rel)
            except Exception as exc:  # a bad query is the user's to fix
                print(f"error: {exc}", file=sys.stderr)
                if queries:
                    return 1
            buffer = ""
    return 0


def _read_lines():
    while True:
        try:
            yield input("metarec> " if sys.stdin.isatty() else "")
        except EOFError:
            return
