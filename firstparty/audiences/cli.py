"""`firstparty audiences list | preview NAME | sync NAME | export NAME --format F`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa

from firstparty.audiences import preview, service
from firstparty.audiences.sync import RunResult
from firstparty.cli_errors import Refusal
from firstparty.settings import Settings
from firstparty.store.models import audience_runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `audiences` command's actions (cli.py calls this)."""
    actions = parser.add_subparsers(metavar="ACTION")
    listing = actions.add_parser("list", help="the audiences, their rules and last syncs")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("preview", help="size, identifiers per platform, a sample of ids")
    show.add_argument("name")
    show.set_defaults(handler=_preview)
    run = actions.add_parser("sync", help="sync an audience to its destinations now")
    run.add_argument("name")
    run.set_defaults(handler=_sync)
    out = actions.add_parser("export", help="hashed identifiers in a platform's upload format")
    out.add_argument("name")
    out.add_argument("--format", required=True, choices=preview.FORMATS)
    out.add_argument("--output", help="write to this file (default: standard output)")
    out.set_defaults(handler=_export)
    parser.set_defaults(handler=_list)


def _open(args: argparse.Namespace) -> tuple[Settings, sa.Engine]:
    from firstparty import cli

    settings = cli.load_settings(args)
    return settings, cli.open_database(settings)


def _list(args: argparse.Namespace) -> int:
    settings, engine = _open(args)
    try:
        last = _last_runs(engine)
    finally:
        engine.dispose()
    if not settings.audiences:
        print("no audiences: add [[audiences]] to the config file (docs/audiences.md)")
    for audience in settings.audiences:
        every = f"every {audience.every_minutes} min" if audience.every_minutes else "on demand"
        print(f"{audience.name}  ({every}, members for {audience.membership_days} days)")
        for rule in audience.rules:
            print(f"  - {rule.describe()}")
        for name in audience.destinations or ["(no destinations: preview and export only)"]:
            run = last.get((audience.name, name))
            seen = "never synced" if run is None else _run_line(run)
            print(f"  -> {name}: {seen}")
    return 0


def _last_runs(engine: sa.Engine) -> dict[tuple[str, str], sa.Row[tuple[object, ...]]]:
    c = audience_runs.c
    latest = sa.select(sa.func.max(c.id)).group_by(c.audience, c.destination)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(audience_runs).where(c.id.in_(latest))).all()
    return {(r.audience, r.destination): r for r in rows}


def _run_line(run: sa.Row[tuple[object, ...]]) -> str:
    when = run.started_at.strftime("%Y-%m-%d %H:%M UTC")
    line = f"last sync {when}: size {run.size}, +{run.adds} -{run.removes}, {run.errors} errors"
    return line + (f" ({run.detail})" if run.detail else "")


def _preview(args: argparse.Namespace) -> int:
    settings, engine = _open(args)
    try:
        seen = preview.preview(settings, engine, name=args.name, now=datetime.now(UTC))
    finally:
        engine.dispose()
    print(f"audience {args.name}: {seen.size} people match the rules")
    print(
        f"  {seen.consented} of them may be sent to ad platforms (consent: {seen.audience.consent})"
    )
    for found in seen.coverage:
        counts = ", ".join(f"{k} {n}" for k, n in found.by_identifier.items())
        print(f"  {found.destination} ({found.type}): {found.usable} usable; {counts}")
        if found.warning:
            print(f"  warning: {found.warning}")
    missing = [
        d for d in seen.audience.destinations if d not in {c.destination for c in seen.coverage}
    ]
    for name in missing:
        print(f"  {name}: cannot send (environment variable(s) not set)")
    print("  sample of members (ids only):")
    for key in seen.sample:
        print(f"    {key}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    settings, engine = _open(args)
    try:
        results = asyncio.run(
            service.sync_now(settings=settings, engine=engine, name=args.name, trigger="command")
        )
    except service.Busy as exc:
        raise Refusal(str(exc), 1) from None
    finally:
        engine.dispose()
    if not results:
        print(f"audience {args.name} has no destinations: nothing to sync")
    for result in results:
        print(_result_line(result))
        if result.warning:
            print(f"  warning: {result.warning}")
    unsent = any(r.errors or r.detail.startswith("cannot send") for r in results)
    return 1 if unsent else 0


def _result_line(result: RunResult) -> str:
    line = (
        f"{result.audience} -> {result.destination}: {result.size} members, "
        f"+{result.adds} added, -{result.removes} removed, {result.errors} not acknowledged"
    )
    return line + (f" (retried next run: {result.detail})" if result.detail else "")


def _export(args: argparse.Namespace) -> int:
    settings, engine = _open(args)
    try:
        if not args.output:
            count = _export_to(sys.stdout, settings, engine, args)
            print(f"{count} members of {args.name} ({args.format})", file=sys.stderr)
            return 0
        target = Path(args.output)
        part = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            with part.open("w", newline="") as out:
                count = _export_to(out, settings, engine, args)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(target)  # the file appears whole or not at all
    finally:
        engine.dispose()
    print(f"wrote {count} members of {args.name} to {args.output} ({args.format})")
    return 0


def _export_to(out: TextIO, settings: Settings, engine: sa.Engine, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    return preview.export(settings, engine, name=args.name, fmt=args.format, now=now, out=out)
