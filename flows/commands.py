"""The `metarec` subcommands: each validates its arguments and calls a flow, which builds
the run's one Settings object, or, for the commands that need no orchestration, builds
Settings here and calls a plain task function.

Flows and tasks are imported inside each command on purpose: importing Prefect and torch
costs seconds, and `metarec --help` or a typo should answer at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix (bad argument, missing input); printed without traceback."""


def settings_for(args: argparse.Namespace, **overrides):
    from tasks.config import settings_from

    return settings_from(storage=getattr(args, "storage", None), **overrides)


# ---- subcommands --------------------------------------------------------------------


def import_movielens(args: argparse.Namespace) -> int:
    from tasks.lake.storage import lake_from
    from tasks.sources.movielens import import_movielens

    source = Path(args.source)
    if not source.is_dir():
        raise UserError(f"--source {source} is not a folder (expected ML-100K or ml-latest-small)")
    settings = settings_for(args)
    result = import_movielens(source, lake_from(settings.storage))
    print(f"imported {result}")
    return 0


def synth(args: argparse.Namespace) -> int:
    from tasks.lake.storage import lake_from
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
    manifest = generate(lake_from(settings.storage), params)
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
    state = ingest_flow(storage=args.storage, start=start, end=end, return_state=True)
    return 0 if state.is_completed() else 1


def nightly(args: argparse.Namespace) -> int:
    from flows.nightly import nightly_flow

    state = nightly_flow(
        run_date=args.date,
        storage=args.storage,
        top_k=args.top_k,
        train_max_steps=args.train_steps,
        return_state=True,
    )
    return 0 if state.is_completed() else 1


def backfill(args: argparse.Namespace) -> int:
    from flows.backfill import backfill_flow

    if args.end < args.start:
        raise UserError(f"--end {args.end} is before --start {args.start}")
    state = backfill_flow(
        start=args.start,
        end=args.end,
        storage=args.storage,
        top_k=args.top_k,
        train_max_steps=args.train_steps,
        max_parallel_dates=args.max_parallel_dates,
        force=args.force,
        return_state=True,
    )
    return 0 if state.is_completed() else 1


def _api_url(args: argparse.Namespace) -> str:
    return args.api_url or os.environ.get("PREFECT_API_URL") or "http://127.0.0.1:4200/api"


def server(args: argparse.Namespace) -> int:
    from flows.ops import run_stack

    if args.timezone:
        _check_timezone(args.timezone)
    return run_stack(args.host, args.port, cron=args.cron, timezone=args.timezone,
                     storage=args.storage)  # fmt: skip


def deploy(args: argparse.Namespace) -> int:
    from flows.ops import deploy

    if args.timezone:
        _check_timezone(args.timezone)
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
    return run_demo(settings, days=args.days, sample=sample)


def sql(args: argparse.Namespace) -> int:
    from tasks.lake.storage import lake_from
    from tasks.serve.warehouse import connect_warehouse, warehouse_path

    settings = settings_for(args)
    lake = lake_from(settings.storage)
    if not lake.is_local or not Path(warehouse_path(lake)).exists():
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
                rel = con.sql(buffer)
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
