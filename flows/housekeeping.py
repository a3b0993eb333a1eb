"""The housekeeping subcommands: `metarec gc` (retention) and `metarec forget` (erasure),
docs/privacy.md. Each builds Settings, takes the lake's writer lock (a nightly running at
the same time finishes first, or this command waits, then fails with exit 75) and calls a
plain task function; nothing here needs Prefect.

Tasks are imported inside each command, as in flows/commands.py, so that `metarec --help`
answers at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from flows.commands import UserError, lake_for, settings_for, writer_lock


def gc(args: argparse.Namespace) -> int:
    """`metarec gc`: delete partitions past their retention, printing each with its size."""
    from tasks.lake.retention import collect_garbage, human

    settings = settings_for(args)
    lake = lake_for(settings, must_exist=True)
    today = args.date or dt.datetime.now(dt.UTC).date()
    if args.dry_run:  # reads only: no lock, a running night is not disturbed
        result = collect_garbage(lake, today, settings, dry_run=True)
    else:
        with writer_lock(lake, settings):
            result = collect_garbage(lake, today, settings)
    verb = "would delete" if result.dry_run else "deleted"
    for r in result.removed:
        print(f"{verb} {r.table}/{r.partition}  {human(r.bytes)}")
    for line in result.protected:
        print(f"kept {line}")
    tail = " (dry run: nothing deleted)" if result.dry_run else ""
    print(f"gc {today}: {verb} {len(result.removed)} partitions, {human(result.bytes)}{tail}")
    return 0


def forget(args: argparse.Namespace) -> int:
    """`metarec forget --user ID`: erase one user from every table and model input, the
    files under folders that are not partitions included; exit 1 when some file could not
    be checked."""
    from tasks.serve.erase import forget as forget_user

    if not args.user.strip():
        raise UserError("--user must not be empty")
    settings = settings_for(args)
    lake = lake_for(settings, must_exist=True)
    with writer_lock(lake, settings):
        result = forget_user(lake, args.user, settings, keep_models=args.keep_models)
    for path, n in result.raw_files + result.user_files + result.stray_files:
        verb = "deleted" if path in result.deleted_files else "rewrote"  # nothing else in it
        print(f"{verb} {path} ({n} rows removed)")
    for table, n in result.rows.items():
        if n:
            print(f"removed {n} rows from {table}")
    if result.models_deleted:
        print(f"deleted model checkpoints of {', '.join(result.models_deleted)}")
    if not result.found:
        print(f"user {args.user!r} was not found in any table")
    if result.strays_checked:  # no stage reads there: say that forget did look
        print(f"checked {result.strays_checked} files under folders that are not partitions "
              "(e.g. dt=junk; ingest skips them)")  # fmt: skip
    print(f"erasure record: {result.record} (pseudonym {result.pseudonym})")
    if result.unreadable:
        names = ", ".join(result.unreadable)
        print(f"unreadable files could not be checked; replace or delete them by hand: "
              f"{names}", file=sys.stderr)  # fmt: skip
        return 1
    return 0
