"""The `metarec` command line: the user's contract (DESIGN.md, "Command line").

Each subcommand validates its arguments, builds one Settings object and calls a flow (or a
plain task function for the commands that need no orchestration). Heavy imports (torch,
prefect, great_expectations) happen inside the subcommand, so `metarec --help` is instant.
Exit code 0 only when the command did everything it should.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Telemetry off and a patient temporary API server unless the user says otherwise. Set
# before anything imports prefect or great_expectations.
_DEFAULT_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


class UserError(Exception):
    """A problem the user can fix (bad argument, missing input); printed without traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `metarec` console script."""
    for key, value in _DEFAULT_ENV.items():
        os.environ.setdefault(key, value)
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"metarec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metarec: interrupted", file=sys.stderr)
        return 130


def _settings(args: argparse.Namespace, **overrides):
    from tasks.config import settings_from

    return settings_from(storage=getattr(args, "storage", None), **overrides)


def _date(text: str) -> str:
    from tasks.lake.dates import parse_date

    try:
        return parse_date(text).isoformat()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


# ---- subcommands --------------------------------------------------------------------


def _cmd_import_movielens(args: argparse.Namespace) -> int:
    from tasks.lake.storage import lake_from
    from tasks.sources.movielens import import_movielens

    source = Path(args.source)
    if not source.is_dir():
        raise UserError(f"--source {source} is not a folder (expected ML-100K or ml-latest-small)")
    settings = _settings(args)
    result = import_movielens(source, lake_from(settings.storage))
    print(f"imported {result}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from tasks.lake.storage import lake_from
    from tasks.sources.synth import SynthParams, generate

    settings = _settings(args)
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


def _date_span(args: argparse.Namespace) -> tuple[str, str]:
    if args.date and (args.start or args.end):
        raise UserError("give either --date or --start/--end, not both")
    if args.date:
        return args.date, args.date
    if not (args.start and args.end):
        raise UserError("give --date D, or --start D1 --end D2")
    if args.end < args.start:
        raise UserError(f"--end {args.end} is before --start {args.start}")
    return args.start, args.end


def _cmd_ingest(args: argparse.Namespace) -> int:
    from flows.ingest import ingest_flow

    start, end = _date_span(args)
    settings = _settings(args)
    state = ingest_flow(storage=settings.storage, start=start, end=end, return_state=True)
    return 0 if state.is_completed() else 1


def _cmd_nightly(args: argparse.Namespace) -> int:
    from flows.nightly import nightly_flow

    settings = _settings(args, top_k=args.top_k)
    state = nightly_flow(
        run_date=args.date,
        storage=settings.storage,
        top_k=settings.top_k,
        train_max_steps=args.train_steps,
        return_state=True,
    )
    return 0 if state.is_completed() else 1


def _cmd_backfill(args: argparse.Namespace) -> int:
    from flows.nightly import backfill_flow

    if args.end < args.start:
        raise UserError(f"--end {args.end} is before --start {args.start}")
    settings = _settings(args, top_k=args.top_k)
    state = backfill_flow(
        start=args.start,
        end=args.end,
        storage=settings.storage,
        top_k=settings.top_k,
        train_max_steps=args.train_steps,
        max_parallel_dates=args.max_parallel_dates,
        force=args.force,
        return_state=True,
    )
    return 0 if state.is_completed() else 1


def _api_url(args: argparse.Namespace) -> str:
    return args.api_url or os.environ.get("PREFECT_API_URL") or "http://127.0.0.1:4200/api"


def _cmd_server(args: argparse.Namespace) -> int:
    from flows.ops import run_stack

    if args.timezone:
        _check_timezone(args.timezone)
    return run_stack(args.host, args.port, cron=args.cron, timezone=args.timezone,
                     storage=args.storage)  # fmt: skip


def _cmd_deploy(args: argparse.Namespace) -> int:
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


def _cmd_worker(args: argparse.Namespace) -> int:
    from flows.ops import run_worker

    return run_worker(args.pool, _api_url(args), args.limit)


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except Exception:
        raise UserError(f"unknown timezone {name!r} (an IANA name like Europe/Paris)") from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    settings = _settings(args)
    return run_demo(settings, days=args.days)


def _cmd_sql(args: argparse.Namespace) -> int:
    from tasks.lake.storage import lake_from
    from tasks.serve.publish import connect_warehouse, warehouse_path

    settings = _settings(args)
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


# ---- parser ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metarec",
        description="Meta-learned recommendations: raw logs -> Parquet -> nightly top-K tables.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def add(name: str, run: Callable, help_: str, storage: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if storage:
            p.add_argument(
                "--storage",
                help="lake root: a folder or fsspec URL (default: $METAREC_STORAGE, then ./lake)",
            )
        p.set_defaults(run=run)
        return p

    p = add("demo", _cmd_demo, "land the bundled sample, run its last nights, show results")
    p.add_argument("--days", type=_positive, default=2, help="nights to backfill (default 2)")

    p = add("import-movielens", _cmd_import_movielens, "land a MovieLens copy as raw logs")
    p.add_argument("--source", required=True, help="folder of ML-100K or ml-latest-small")

    p = add("synth", _cmd_synth, "write synthetic raw logs (with optional injected faults)")
    p.add_argument("--users", type=_positive, required=True)
    p.add_argument("--items", type=_positive, required=True)
    p.add_argument("--days", type=_positive, required=True)
    p.add_argument("--events-per-day", type=_positive, required=True)
    p.add_argument("--dirty-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=_date, help="first day (default 2024-01-01)")

    for name, run, help_ in (
        ("ingest", _cmd_ingest, "ingest + validate raw partitions into bronze/silver"),
    ):
        p = add(name, run, help_)
        p.add_argument("--date", type=_date)
        p.add_argument("--start", type=_date)
        p.add_argument("--end", type=_date)

    p = add("nightly", _cmd_nightly, "the whole nightly run for one date")
    p.add_argument("--date", type=_date, required=True)
    p.add_argument("--top-k", type=_positive, default=None, help="list length (default 20)")
    p.add_argument(
        "--train-steps", type=_positive, default=None, help="meta-learner steps (default 300)"
    )

    p = add("backfill", _cmd_backfill, "nightly runs for every date in a range (see docs)")
    p.add_argument("--start", type=_date, required=True)
    p.add_argument("--end", type=_date, required=True)
    p.add_argument("--top-k", type=_positive, default=None)
    p.add_argument(
        "--train-steps", type=_positive, default=None, help="meta-learner steps (default 300)"
    )
    p.add_argument(
        "--max-parallel-dates",
        type=_positive,
        default=2,
        help="dates whose episodes are built at once (default 2); training stays in order",
    )
    p.add_argument(
        "--force", action="store_true", help="recompute dates already published (unchanged)"
    )

    def add_schedule(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cron", help='nightly schedule (default "0 2 * * *")')
        p.add_argument("--timezone", help="timezone of the schedule (default UTC)")

    p = add("server", _cmd_server, "local Prefect server + workers + deployments, until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_positive, default=4200, help="port (default 4200)")
    add_schedule(p)

    p = add("deploy", _cmd_deploy, "create the work pools and register the deployments")
    p.add_argument("--api-url", help="Prefect API (default $PREFECT_API_URL, then :4200)")
    add_schedule(p)

    p = add("worker", _cmd_worker, "a Prefect process worker for one pool, until Ctrl-C", False)
    p.add_argument("--pool", required=True, help="metarec-cpu (data) or metarec-gpu (training)")
    p.add_argument("--limit", type=_positive, help="flow runs at once (metarec-gpu: 1)")
    p.add_argument("--api-url", help="Prefect API (default $PREFECT_API_URL, then :4200)")

    p = add("sql", _cmd_sql, "query the warehouse with DuckDB (-c QUERY, or a shell)")
    p.add_argument("-c", "--command", help="run one query and exit")
    return parser


if __name__ == "__main__":
    sys.exit(main())
