"""The `firstparty` command: serve, worker, migrate, replay, sources, doctor."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import settings as settings_mod
from firstparty.errors import ConfigError
from firstparty.settings import Settings
from firstparty.store import db, migrate


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"firstparty: {exc}", file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firstparty", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: $FIRSTPARTY_CONFIG)")
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
    create.set_defaults(handler=_sources_create)
    src.set_defaults(handler=_sources_list)

    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    return settings_mod.load(config_path=args.config)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from firstparty.app import create_app

    settings = load_settings(args)
    first_run = _is_first_run(settings)
    engine = db.create_engine(settings.database_url)
    if settings.is_sqlite:
        migrate.upgrade(engine)
    elif not migrate.is_current(engine):
        raise ConfigError("database_url: schema is not current; run `firstparty migrate`")
    default_key = _ensure_default_source(settings, engine) if first_run else None
    engine.dispose()
    _banner(settings, args, first_run, default_key)
    if args.workers > 1:
        uvicorn.run(
            "firstparty.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http="httptools",
            log_level="warning",
        )
    else:
        uvicorn.run(
            create_app(settings),
            host=args.host,
            port=args.port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
        )
    return 0


def _is_first_run(settings: Settings) -> bool:
    if not settings.is_sqlite:
        return False
    path = settings.database_url.split("///", 1)[-1]
    return not Path(path).exists()


def _ensure_default_source(settings: Settings, engine: Engine) -> str | None:
    """On the very first run with no sources configured, create one so curl works at once."""
    from firstparty.collect import sources

    if settings.sources or sources.listing(settings, engine):
        return None
    secret = settings.secret_key.get_secret_value()
    return sources.create(engine, secret, name="default", kind="server", origins=[])


def _banner(
    settings: Settings, args: argparse.Namespace, first_run: bool, default_key: str | None
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
    if default_key:
        lines += [
            "",
            "  First run: created the source 'default'. Its write key (shown once):",
            f"    {default_key}",
            "  Try it:",
            f"    curl -si {url}/v1/events -H 'X-Write-Key: {default_key}' \\",
            """      -d '{"type":"track","name":"Lead","properties":{"value":49}}'""",
        ]
    if first_run:
        lines += [
            "",
            "  Add a website source:",
            "    firstparty sources create www --kind browser --origin https://www.example.com",
        ]
    print("\n".join(lines) + "\n", flush=True)


def _migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    engine = db.create_engine(settings.database_url)
    migrate.upgrade(engine)
    engine.dispose()
    print("database is at the newest schema")
    return 0


def _sources_list(args: argparse.Namespace) -> int:
    from firstparty.collect import sources

    settings = load_settings(args)
    engine = db.create_engine(settings.database_url)
    if settings.is_sqlite:
        migrate.upgrade(engine)
    rows = sources.listing(settings, engine)
    engine.dispose()
    if not rows:
        print("no sources yet: firstparty sources create NAME --kind browser --origin URL")
    for row in rows:
        print(f"{row['name']:<20} {row['kind']:<8} {row['from']:<9} {row['origins']}")
    return 0


def _sources_create(args: argparse.Namespace) -> int:
    from firstparty.collect import sources
    from firstparty.settings import SourceSettings

    settings = load_settings(args)
    # Validate the name and origins with the same rules as the config file.
    SourceSettings(name=args.name, kind=args.kind, write_key="x" * 8, origins=args.origin)
    engine = db.create_engine(settings.database_url)
    if settings.is_sqlite:
        migrate.upgrade(engine)
    try:
        key = sources.create(
            engine,
            settings.secret_key.get_secret_value(),
            name=args.name,
            kind=args.kind,
            origins=[o.rstrip("/") for o in args.origin],
        )
    except sa.exc.IntegrityError:
        print(f"firstparty: a source named {args.name!r} exists already", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"created {args.kind} source {args.name!r}; write key (shown once):\n{key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
