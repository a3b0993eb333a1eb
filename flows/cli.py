"""The `metarec` command line: the user's contract (DESIGN.md, "Command line").

Each subcommand validates its arguments (dates are parsed here, once) and calls a flow,
which builds the one Settings object of the run, or, for the commands that need no
orchestration, builds it here and calls a plain task function. Heavy imports (torch,
prefect, great_expectations) happen inside the subcommand, so `metarec --help` is instant.
Exit code 0 only when the command did everything it should.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Sequence

from flows import commands, housekeeping
from flows.commands import UserError

# Telemetry off and a patient temporary API server unless the user says otherwise. Set
# before anything imports prefect or great_expectations.
_DEFAULT_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


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
        return exc.exit_code  # 2, or 75 when another run holds the lake (LakeBusy)
    except KeyboardInterrupt:
        print("metarec: interrupted", file=sys.stderr)
        return 130


def _date(text: str) -> dt.date:
    """The one place a date given on the command line is parsed."""
    from tasks.lake.dates import parse_date

    try:
        return parse_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


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

    p = add("demo", commands.demo, "land the bundled sample, run its last nights, show results")
    p.add_argument("--days", type=_positive, default=1, help="nights to backfill (default 1)")
    p.add_argument("--sample", help="a MovieLens folder to use instead of the bundled sample")

    p = add("import-movielens", commands.import_movielens, "land a MovieLens copy as raw logs")
    p.add_argument("--source", required=True, help="folder of ML-100K or ml-latest-small")

    p = add("synth", commands.synth, "write synthetic raw logs (with optional injected faults)")
    p.add_argument("--users", type=_positive, required=True)
    p.add_argument("--items", type=_positive, required=True)
    p.add_argument("--days", type=_positive, required=True)
    p.add_argument("--events-per-day", type=_positive, required=True)
    p.add_argument("--dirty-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=_date, help="first day (default 2024-01-01)")

    for name, run, help_ in (
        ("ingest", commands.ingest, "ingest + validate raw partitions into bronze/silver"),
    ):
        p = add(name, run, help_)
        p.add_argument("--date", type=_date)
        p.add_argument("--start", type=_date)
        p.add_argument("--end", type=_date)

    p = add("nightly", commands.nightly, "the whole nightly run for one date")
    p.add_argument("--date", type=_date, required=True)
    p.add_argument("--top-k", type=_positive, default=None, help="list length (default 20)")
    p.add_argument(
        "--train-steps", type=_positive, default=None, help="meta-learner steps (default 300)"
    )

    p = add("backfill", commands.backfill, "nightly runs for every date in a range (see docs)")
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

    p = add("server", commands.server, "local Prefect server + workers + deployments, until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_positive, default=4200, help="port (default 4200)")
    add_schedule(p)

    p = add("deploy", commands.deploy, "create the work pools and register the deployments")
    p.add_argument("--api-url", help="Prefect API (default $PREFECT_API_URL, then :4200)")
    add_schedule(p)

    p = add("worker", commands.worker, "a Prefect process worker for one pool, until Ctrl-C", False)
    p.add_argument("--pool", required=True, help="metarec-cpu (data) or metarec-gpu (training)")
    p.add_argument("--limit", type=_positive, help="flow runs at once (metarec-gpu: 1)")
    p.add_argument("--api-url", help="Prefect API (default $PREFECT_API_URL, then :4200)")

    p = add("gc", housekeeping.gc, "delete partitions past their retention (retain_days_*)")
    p.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    p.add_argument("--date", type=_date, help="the day ages are counted from (default: today UTC)")

    p = add("forget", housekeeping.forget, "erase one user from every table and model input")
    p.add_argument("--user", required=True, help="the user id, as landed in raw files")
    p.add_argument(
        "--keep-models", action="store_true", help="keep checkpoints trained on their events"
    )

    p = add("sql", commands.sql, "query the warehouse with DuckDB (-c QUERY, or a shell)")
    p.add_argument("-c", "--command", help="run one query and exit")
    return parser


if __name__ == "__main__":
    sys.exit(main())
