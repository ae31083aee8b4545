"""The `firstparty` command: serve, worker, migrate, replay, sources, operators, doctor."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import cli_errors, doctor, heap
from firstparty import settings as settings_mod
from firstparty.audiences import cli as audiences_cli
from firstparty.errors import ConfigError
from firstparty.operators import audit
from firstparty.operators import commands as operators_commands
from firstparty.settings import Settings
from firstparty.store import db, instance, migrate

WORKER_HEALTHCHECK_SECONDS = 30  # serve --workers N: how long a child may take to answer

if TYPE_CHECKING:
    from firstparty.destinations.base import DestinationSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Context impl ..." on every start
    try:
        with cli_errors.explained(debug=args.debug):
            code: int = args.handler(args)
    except cli_errors.Refusal as refusal:
        print(f"firstparty: {refusal.message}", file=sys.stderr)
        return refusal.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last resort: one line, the traceback on --debug
        if args.debug:
            raise
        print(f"firstparty: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print("  (run again with --debug for the traceback)", file=sys.stderr)
        return cli_errors.OTHER
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firstparty", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: $FIRSTPARTY_CONFIG)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP server (and, embedded, the worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="server processes")
    serve.set_defaults(handler=_serve)

    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.set_defaults(handler=_migrate)

    src = sub.add_parser("sources", help="list sources, or create one and print its write key")
    src_sub = src.add_subparsers(metavar="ACTION")
    create = src_sub.add_parser("create", help="create a source")
    create.add_argument("name")
    create.add_argument("--kind", choices=["browser", "server"], default="browser")
    create.add_argument("--origin", action="append", default=[], help="allowed origin (repeat)")
    create.add_argument(
        "--rate-limit", type=float, help="requests a second for this key (default: [collect])"
    )
    create.add_argument(
        "--burst", type=int, help="requests saved up for this key (default: [collect])"
    )
    create.set_defaults(handler=_sources_create)
    for action, about in (
        ("show", "kind, origins, key prefix, state and limits of a source"),
        ("rotate", "give a database source a new key (printed once); the old one is refused"),
        ("disable", "refuse a database source's key until it is enabled again"),
        ("enable", "accept a disabled source's key again"),
        ("delete", "delete a database source (its events stay)"),
    ):
        act = src_sub.add_parser(action, help=about)
        act.add_argument("name")
        act.set_defaults(handler=_sources_act, action=action)
    src.set_defaults(handler=_sources_list)

    work = sub.add_parser("worker", help="run a delivery worker (Redis deployments)")
    work.set_defaults(handler=_worker)

    rep = sub.add_parser("replay", help="re-send failed deliveries with their original time")
    rep.add_argument("--destination", help="only this destination")
    rep.add_argument("--since", help="events at or after this time (ISO 8601)")
    rep.add_argument("--until", help="events before this time (ISO 8601)")
    rep.add_argument("--event", help="only events of this name")
    rep.add_argument("--dry-run", action="store_true", help="report, change nothing")
    rep.set_defaults(handler=_replay)

    priv = sub.add_parser("privacy", help="erase or export what is held about one person")
    priv_sub = priv.add_subparsers(metavar="ACTION")
    for action, handler in (("erase", _privacy_erase), ("export", _privacy_export)):
        act = priv_sub.add_parser(action, help=f"{action} a person (user and linked visitors)")
        for flag in ("--user-id", "--visitor-id", "--phone", "--email"):
            act.add_argument(flag)
        act.set_defaults(handler=handler)

    dest = sub.add_parser("destinations", help="list destinations, or send one a test event")
    dest_sub = dest.add_subparsers(metavar="ACTION")
    probe = dest_sub.add_parser("test", help="send a synthetic event, show request and answer")
    probe.add_argument("name")
    probe.add_argument("--test-event-code", help="Meta/TikTok: the code of the Test events tab")
    probe.add_argument("--live", action="store_true", help="send a real event if no test mode")
    probe.set_defaults(handler=_destinations_test)
    dest.set_defaults(handler=_destinations_list)

    aud = sub.add_parser("audiences", help="list, preview, sync or export audiences")
    audiences_cli.add_arguments(aud)

    prune = sub.add_parser("prune", help="delete rows older than their retention")
    prune.set_defaults(handler=_prune)

    operators_commands.add_arguments(sub)

    doc = sub.add_parser("doctor", help="check a deployment against Safari's cookie caps")
    doctor.add_arguments(doc)
    doc.set_defaults(handler=doctor.run)
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    return settings_mod.load(config_path=args.config)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from firstparty.api import limits
    from firstparty.app import create_app, tune_gc

    heap.limit_arenas()
    settings = load_settings(args)
    engine = open_database(settings)
    keys = _first_run_sources(settings, engine, args)
    first_run = bool(keys)
    if settings.admin_token is None and not settings.is_sqlite:
        generated = instance.generate_admin_token(engine, settings.secret_key.get_secret_value())
        if generated is not None:
            keys["admin"] = generated
    engine.dispose()
    _banner(settings, args, first_run, keys)
    if args.workers > 1:
        _name_config_for_children(args)
        uvicorn.run(
            "firstparty.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http=limits.BoundedHttpTools,
            h11_max_incomplete_event_size=limits.HEAD_BYTES,
            # uvicorn's own X-Forwarded-* reading (loopback proxies) only when firstparty trusts
            # the proxy: it takes the rightmost untrusted X-Forwarded-For entry as the peer,
            # which behind a local proxy is the client's own spoofed one (issue 12).
            proxy_headers=settings.collect.trust_forwarded_for,
            log_level="warning",
            access_log=False,
            # A spawned child answers the supervisor's ping only once its imports are done (about
            # 3 s here, more on a busy machine); uvicorn's 5 s default killed and respawned it.
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        )
    else:
        app = create_app(settings)
        tune_gc()
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            loop="uvloop",
            http=limits.BoundedHttpTools,
            h11_max_incomplete_event_size=limits.HEAD_BYTES,
            # uvicorn's own X-Forwarded-* reading (loopback proxies) only when firstparty trusts
            # the proxy: it takes the rightmost untrusted X-Forwarded-For entry as the peer,
            # which behind a local proxy is the client's own spoofed one (issue 12).
            proxy_headers=settings.collect.trust_forwarded_for,
            log_level="warning",
            access_log=False,
        )
    return 0


def open_database(settings: Settings) -> Engine:
    """The database, ready for a command: migrated on the embedded default (elsewhere, refused
    unless `firstparty migrate` ran), and opened with the secret key it was set up with."""
    engine = db.create_engine(settings.database_url)
    current = migrate.is_current(engine)  # without Alembic: serve need not load it
    if settings.is_sqlite and not current:
        migrate.upgrade(engine)
    elif not current:
        engine.dispose()
        raise ConfigError("database_url: schema is not current; run `firstparty migrate`")
    try:
        instance.check_secret(engine, settings.secret_key.get_secret_value())
    except ConfigError:
        engine.dispose()
        raise
    return engine


def _name_config_for_children(args: argparse.Namespace) -> None:
    """`--workers N` children are new processes building their app from the environment (and
    working directory) they inherit: name this process's config file there, so each loads
    exactly what this one loaded."""
    if args.config:
        os.environ["FIRSTPARTY_CONFIG"] = str(Path(args.config).resolve())


def _first_run_sources(
    settings: Settings, engine: Engine, args: argparse.Namespace
) -> dict[str, str]:
    """On the very first run (no source in the config file or the database, on any engine), create
    some so everything works at once: `default` (server: curl), and `demo` (browser, this server's
    own origin: the /demo/ site)."""
    from firstparty.collect import sources

    if settings.sources or sources.listing(settings, engine):
        return {}
    secret = settings.secret_key.get_secret_value()
    keys = {"default": sources.create(engine, secret, name="default", kind="server", origins=[])}
    if settings.demo_on:
        origin = f"http://{args.host}:{args.port}"
        keys["demo"] = sources.create(engine, secret, name="demo", kind="browser", origins=[origin])
    return keys


def _banner(
    settings: Settings, args: argparse.Namespace, first_run: bool, keys: dict[str, str]
) -> None:
    url = f"http://{args.host}:{args.port}"
    where = settings.database_url
    if settings.is_sqlite:
        where = str(Path(settings.database_url.split("///", 1)[-1]).resolve())
    queue = "Redis " + settings.redis_url if settings.redis_url else "embedded (in the database)"
    lines = [
        "",
        f"  firstparty is running at {url}",
        f"  data:    {where}",
        f"  queue:   {queue}",
        f"  sources: {len(settings.sources)} from config",
    ]
    if "default" in keys:
        lines += [
            "",
            "  First run: created the source 'default'. Its write key (shown once):",
            f"    {keys['default']}",
            "  Try it:",
            f"    curl -si {url}/v1/events -H 'X-Write-Key: {keys['default']}' \\",
            """      -d '{"type":"track","name":"Lead","properties":{"value":49}}'""",
        ]
    if "demo" in keys:
        lines += [
            "",
            "  See the whole flow in a browser (the demo site):",
            f"    {url}/demo/?key={keys['demo']}",
        ]
    for name, unset in sorted(settings.misconfigured.items()):
        lines += [
            "",
            f"  destination {name} cannot send: {', '.join(unset)} not set "
            "(its events wait until the server restarts with it)",
        ]
    lines += _admin_lines(settings, url, first_run, keys.get("admin"))
    if settings.demo_on and "demo" not in keys:
        lines += ["", f"  demo:    {url}/demo/"]
    if first_run:
        lines += [
            "",
            "  Add a website source:",
            f"    {command_name()} sources create www --kind browser --origin https://www.example.com",
        ]
    print("\n".join(lines) + "\n", flush=True)


def _admin_lines(
    settings: Settings, url: str, first_run: bool, generated: str | None = None
) -> list[str]:
    """Where the admin UI is and how to sign in; a generated token only when it is made."""
    lines = ["", f"  admin:   {url}/admin/"]
    if generated is not None:  # a server database: only its hash is kept, shown this once
        return [
            *lines,
            "  admin token (generated; shown once, only its hash is kept):",
            f"    {generated}",
        ]
    if settings.admin_token is None:
        return [*lines, "  sign in with the admin token printed at the first start"]
    kept = settings_mod.admin_token_file(settings.database_url) if settings.is_sqlite else None
    if kept is None or not kept.exists() or os.environ.get("FIRSTPARTY_ADMIN_TOKEN"):
        return [*lines, "  sign in with FIRSTPARTY_ADMIN_TOKEN"]
    if first_run:
        token = settings.admin_token.get_secret_value()
        return [*lines, f"  admin token (generated, kept in {kept}):", f"    {token}"]
    return [*lines, f"  admin token: in {kept}"]


def command_name() -> str:
    """How this shell can run firstparty: `firstparty` when that is on the PATH (an activated
    venv, an install), else the path of this very command (`.venv/bin/firstparty` after ./run)."""
    own = Path(sys.argv[0])
    found = shutil.which("firstparty")
    if found and (own.name != "firstparty" or Path(found).resolve() == own.resolve()):
        return "firstparty"
    if own.name != "firstparty":  # python -m firstparty.cli
        return f"{sys.executable} -m firstparty.cli"
    with contextlib.suppress(ValueError):
        return str(own.resolve().relative_to(Path.cwd()))
    return str(own.resolve())


def _worker(args: argparse.Namespace) -> int:
    from firstparty.delivery import worker

    settings = load_settings(args)
    open_database(settings).dispose()
    print(f"firstparty worker: {len(settings.destinations)} destination(s)", flush=True)
    worker.run_worker(settings)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from firstparty.delivery import replay
    from firstparty.destinations.book import DestinationBook

    settings = load_settings(args)
    engine = open_database(settings)
    try:
        book = DestinationBook(settings=settings, engine=engine)  # the file's and the stored
        book.reload()
        if args.destination and args.destination not in book.adapters:
            raise ConfigError(f"--destination: no destination named {args.destination!r}")
        result = replay.replay(
            engine,
            settings=settings,
            adapters=book.adapters,
            destination=args.destination,
            since=_when(args.since, "--since"),
            until=_when(args.until, "--until"),
            event_name=args.event,
            dry_run=args.dry_run,
            progress=_progress_bar,
            actor=audit.CLI,
        )
    finally:
        engine.dispose()
    print(file=sys.stderr)
    verb = "would re-queue" if args.dry_run else "re-queued"
    print(f"matched {result.matched} failed deliveries; {verb} {result.requeued}")
    for reason, count in sorted(result.skipped.items()):
        print(f"  skipped {count}: {reason}")
    if result.requeued and not args.dry_run:
        asyncio.run(_wake(settings))
    return 0


async def _wake(settings: Settings) -> None:
    from firstparty.delivery import queue

    notifier = queue.make_queue(settings)
    await notifier.notify()
    await notifier.close()


def _when(raw: str | None, flag: str) -> datetime | None:
    from firstparty.collect.prepare import parse_timestamp

    if raw is None:
        return None
    try:
        return parse_timestamp(raw)
    except ValueError:
        raise ConfigError(f"{flag}: {raw!r} is not an ISO 8601 time") from None


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // total if total else width
    bar = "#" * filled + "-" * (width - filled)
    print(f"\rreplay [{bar}] {done}/{total}", end="", file=sys.stderr, flush=True)


def _migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    engine = db.create_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
        instance.check_secret(engine, settings.secret_key.get_secret_value())
    finally:
        engine.dispose()
    print("database is at the newest schema")
    return 0


def _sources_list(args: argparse.Namespace) -> int:
    from firstparty.collect import keys

    settings = load_settings(args)
    engine = open_database(settings)
    try:
        views = keys.listing(settings=settings, engine=engine)
    finally:
        engine.dispose()
    if not views:
        print(f"no sources yet: {command_name()} sources create NAME --kind browser --origin URL")
    for view in views:
        origins = " ".join(view.origins)
        print(
            f"{view.name:<20} {view.kind:<8} {view.kept_in:<9} {view.state:<9} "
            f"{view.key_prefix:<11} {origins}"
        )
    return 0


def _sources_act(args: argparse.Namespace) -> int:
    """show, rotate, disable, enable, delete NAME."""
    from firstparty.collect import keys

    settings = load_settings(args)
    engine = open_database(settings)
    where = {"settings": settings, "engine": engine, "name": args.name}
    try:
        if args.action == "rotate":
            key = keys.rotate(**where)
            print(f"new write key of {args.name!r} (shown once; the old one is refused now):")
            print(key)
        elif args.action == "delete":
            keys.delete(**where)
            print(f"deleted source {args.name!r} (its events stay)")
        elif args.action in ("disable", "enable"):
            state = keys.SourceState(args.action + "d")
            print(f"source {args.name!r} is {keys.set_state(**where, state=state).state}")
        else:
            _print_source(keys.show(**where))
        if args.action != "show":
            action = audit.Action("source_" + args.action)
            audit.write(engine, actor=audit.CLI, action=action, subject=args.name)
    finally:
        engine.dispose()
    return 0


def _print_source(view: Any) -> None:
    rate = view.rate_limit_per_second or "default ([collect])"
    burst = view.rate_limit_burst or "default ([collect])"
    for label, value in (
        ("name", view.name),
        ("kind", view.kind),
        ("origins", " ".join(view.origins) or "-"),
        ("key", f"{view.key_prefix} (the rest is never shown; rotate to get a new one)"),
        ("state", view.state),
        ("kept in", view.kept_in),
        ("rate limit", f"{rate}/s, burst {burst}"),
        ("created", view.created_at or "-"),
    ):
        print(f"{label + ':':<12}{value}")


def _sources_create(args: argparse.Namespace) -> int:
    from firstparty.collect import sources
    from firstparty.settings import SourceSettings

    settings = load_settings(args)
    # Validate the name and origins with the same rules as the config file.
    SourceSettings(
        name=args.name,
        kind=args.kind,
        write_key="x" * 8,
        origins=args.origin,
        rate_limit_per_second=args.rate_limit,
        rate_limit_burst=args.burst,
    )
    engine = open_database(settings)
    try:
        key = sources.create(
            engine,
            settings.secret_key.get_secret_value(),
            name=args.name,
            kind=args.kind,
            origins=[o.rstrip("/") for o in args.origin],
            rate_limit_per_second=args.rate_limit,
            rate_limit_burst=args.burst,
        )
        audit.write(
            engine,
            actor=audit.CLI,
            action=audit.Action.SOURCE_CREATE,
            subject=args.name,
            detail={"kind": args.kind},
        )
    except sa.exc.IntegrityError:
        print(f"firstparty: a source named {args.name!r} exists already", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"created {args.kind} source {args.name!r}; write key (shown once):\n{key}")
    return 0


def _privacy_who(args: argparse.Namespace) -> object:
    from firstparty.privacy import service

    who = service.Who(
        user_id=args.user_id, visitor_id=args.visitor_id, phone=args.phone, email=args.email
    )
    if not any((who.user_id, who.visitor_id, who.phone, who.email)):
        raise ConfigError("name the person: --user-id, --visitor-id, --phone or --email")
    return who


def _privacy_run(args: argparse.Namespace, action: str) -> Any:
    from firstparty.identity import pii
    from firstparty.privacy import service

    who = _privacy_who(args)
    assert isinstance(who, service.Who)
    settings = load_settings(args)
    engine = open_database(settings)
    where: dict[str, Any] = {
        "who": who,
        "secret": settings.secret_key.get_secret_value(),
        "default_region": settings.otp.default_region,
    }
    try:
        if action == "erase":
            return service.erase_person(engine, **where, actor=audit.CLI)
        return service.export_person(engine, **where)
    except pii.InvalidValue as exc:
        raise ConfigError(f"{exc}") from None
    finally:
        engine.dispose()


def _privacy_erase(args: argparse.Namespace) -> int:
    removed = _privacy_run(args, "erase")
    print(f"erased {sum(removed.values())} rows")
    for table, count in removed.items():
        print(f"  {table:<14} {count}")
    return 0


def _privacy_export(args: argparse.Namespace) -> int:
    print(json.dumps(_privacy_run(args, "export"), indent=2, default=str))
    return 0


def _destinations_list(args: argparse.Namespace) -> int:
    from firstparty.destinations import registry

    settings = load_settings(args)
    for found in settings.destinations:
        unset = settings.misconfigured.get(found.name)
        state = f"cannot send: {', '.join(unset)} not set" if unset else "ready"
        if found.type not in registry.ADAPTERS:
            state += " (audience: firstparty audiences)"
        print(f"{found.name:<20} {found.type:<16} {state}")
    try:
        added = _stored_listing(settings)
    except ConfigError as exc:  # the file's are listed; the database's cannot be read now
        print(f"destinations added in the admin UI not read: {exc}", file=sys.stderr)
        return 0
    for line in added:
        print(line)
    if not settings.destinations and not added:
        print("no destinations: add one in the admin UI or [[destinations]] to the config file")
    return 0


def _stored_listing(settings: Settings) -> list[str]:
    """One line per destination added in the admin UI: its state and whether it can send."""
    from firstparty.destinations import stored
    from firstparty.destinations.book import DestinationBook

    engine = open_database(settings)
    try:
        book = DestinationBook(settings=settings, engine=engine)
        book.reload()
        views = stored.listing(engine=engine)
    finally:
        engine.dispose()
    lines = []
    for view in views:
        problem = book.problems.get(view.name)
        state = "disabled" if view.state == "disabled" else "ready"
        state = f"cannot send: {problem}" if problem and state == "ready" else state
        if view.name in book.config_names:
            state = "ignored: the config file has this name"
        lines.append(f"{view.name:<20} {view.type:<16} {state} (admin UI)")
    return lines


def _stored_destination(settings: Settings, name: str) -> DestinationSettings:
    """A destination added in the admin UI (not in the config file), ready to send."""
    from firstparty.destinations.book import DestinationBook

    engine = open_database(settings)
    try:
        book = DestinationBook(settings=settings, engine=engine)
        book.reload()
    finally:
        engine.dispose()
    adapter = book.adapters.get(name)
    if adapter is None:
        known = ", ".join(sorted(book.adapters)) or "none"
        raise ConfigError(f"no destination named {name!r} (configured: {known})")
    if name in book.problems:
        raise ConfigError(f"{name}: cannot send: {book.problems[name]}")
    return adapter.settings


def _destinations_test(args: argparse.Namespace) -> int:
    from firstparty.delivery import probe
    from firstparty.destinations import registry

    settings = load_settings(args)
    found = {d.name: d for d in settings.destinations}.get(args.name)
    if found is not None and found.type not in registry.ADAPTERS:
        raise ConfigError(
            f"{args.name} is an audience destination ({found.type}): it takes no events; "
            "see `firstparty audiences preview NAME` and `firstparty audiences sync NAME`"
        )
    if found is None:
        found = _stored_destination(settings, args.name)
    if args.name in settings.misconfigured:
        unset = ", ".join(settings.misconfigured[args.name])
        raise ConfigError(f"{args.name}: cannot send: environment variable(s) {unset} not set")
    result = asyncio.run(
        probe.send_test_event(
            found, delivery=settings.delivery, code=args.test_event_code, live=args.live
        )
    )
    print(f"destination {result.destination} ({found.type}), sent in {result.mode}")
    for exchange in result.exchanges:
        print(f"\n> {exchange.method} {exchange.url}")
        if exchange.request is not None:
            print(json.dumps(exchange.request, indent=2))
        answer = exchange.error or f"{exchange.status} {exchange.response or ''}"
        print(f"< {answer.strip()}")
    detail = f": {result.detail}" if result.detail else ""
    print(f"\noutcome: {result.status}{detail}")
    return 0 if result.ok else 1


def _prune(args: argparse.Namespace) -> int:
    from firstparty.privacy import retention
    from firstparty.store import shards

    settings = load_settings(args)
    engine = open_database(settings)
    try:
        removed = retention.prune(engine, settings.retention)
        folded = shards.fold(engine)
    finally:
        engine.dispose()
    for table, count in removed.items():
        print(f"pruned {count} {table}")
    for table, count in folded.items():
        print(f"folded {count} shard rows of {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
