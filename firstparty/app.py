"""create_app(settings) -> the ASGI app. Every route module is mounted here, and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from firstparty import crashes, heap
from firstparty.alerts import loop as alerts_loop
from firstparty.api import admin, collect, limits, ops, otp, segment
from firstparty.audiences import service as audience_service
from firstparty.collect import service
from firstparty.collect.sources import SourceBook
from firstparty.collect.writer import GroupWriter
from firstparty.delivery import queue, verdicts, worker
from firstparty.destinations import book
from firstparty.destinations.book import DestinationBook
from firstparty.errors import InputError
from firstparty.identity import users
from firstparty.privacy import retention
from firstparty.reports import funnel_rounds
from firstparty.runtime import Runtime
from firstparty.settings import Settings
from firstparty.store import db, instance, partitions, shards
from firstparty.tracker import serve
from firstparty.web import acquisition as acquisition_ui
from firstparty.web import admin as admin_ui
from firstparty.web import alerts as alerts_ui
from firstparty.web import audiences as audiences_ui
from firstparty.web import audit as audit_ui
from firstparty.web import demo, live, login, operate
from firstparty.web import funnels as funnels_ui
from firstparty.web import health as health_ui
from firstparty.web import reports as reports_ui

log = logging.getLogger("firstparty")
CHECKPOINT_SECONDS = 1.0
SOURCES_REFRESH_SECONDS = 2.0


def route_modules() -> list[Sequence[BaseRoute]]:
    """Every module that contributes routes (each exposes `routes`)."""
    return [
        collect.routes,
        ops.routes,
        admin.routes,
        otp.routes,
        segment.routes,
        serve.routes,
        demo.routes,
        admin_ui.routes,
        login.routes,
        audit_ui.routes,
        live.routes,
        operate.routes,
        health_ui.routes,  # before reports_ui: its /admin/reports/{name}.csv
        reports_ui.routes,
        audiences_ui.routes,
        acquisition_ui.routes,
        funnels_ui.routes,
        alerts_ui.routes,
    ]


def create_app(settings: Settings, *, run_worker: bool | None = None) -> Starlette:
    """The whole server. `run_worker`: run the delivery worker in-process (default: embedded)."""
    settings = _with_generated_admin_token(settings)
    engine = db.create_engine(
        settings.database_url, pool_size=10, max_overflow=20, background_checkpoints=True
    )
    destinations = DestinationBook(settings=settings, engine=engine)
    _first_reload(destinations)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        destinations=destinations,
        notifier=queue.make_queue(settings),
    )
    route = destinations.plan

    secret = settings.secret_key.get_secret_value()

    def resolve_phone(conn: Connection, e164: str) -> str | None:
        return users.find_by_phone(conn, secret, e164, settings.otp.default_region)

    writer = GroupWriter(
        engine,
        route,
        window_ms=settings.collect.commit_window_ms,
        max_rows=settings.collect.commit_max_rows,
        resolve_phone=resolve_phone,
    )
    collector = service.Collector(runtime, SourceBook(settings, engine), writer)
    embedded = settings.redis_url is None if run_worker is None else run_worker

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            _delivery(runtime, embedded),
            _checkpoints(runtime),
            _pruning(runtime),
            _alerting(runtime),
            _audiences(runtime),
            _verdicts(runtime),
            _funnels(runtime),
            _sources_refresh(collector.sources),
            _destinations_refresh(destinations),
            _background(heap.trimming()),
        ):
            yield
        await writer.close()
        engine.dispose()

    routes = [r for module in route_modules() for r in module]
    app = _Server(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            InputError: _input_error,
            HTTPException: _http_error,
            Exception: _crash,  # what fails in a middleware outside _Crashes
        },
        middleware=[
            Middleware(limits.BodyLimits, limits=limits.table(settings.collect)),
            Middleware(_Crashes),  # innermost: keep it last
        ],
    )
    # Starlette's slash redirect builds its Location from the Host header; the Host is never
    # reflected (issue 12), so a path with a stray slash is a 404 (or an explicit relative route).
    app.router.redirect_slashes = False
    app.hot = _hot_paths(settings)
    app.state.runtime = runtime
    app.state.collector = collector
    return app


class _Server(Starlette):
    """Starlette, with the hot collect paths (`POST /v1/events`, `/v1/batch`) answered before its
    middleware and router: the same handlers, body limits and crash answer, fewer layers."""

    hot: dict[str, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            hot = self.hot.get(scope["path"])
            if hot is not None:
                scope["app"] = self
                await hot(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _hot_paths(settings: Settings) -> dict[str, ASGIApp]:
    """Each hot path's ASGI app: body limits, then the crash answer, then the handler."""
    table = limits.table(settings.collect)
    handlers = {"/v1/events": collect.events, "/v1/batch": collect.batch}
    return {
        path: limits.BodyLimits(_Crashes(_endpoint(handler)), limits=table)
        for path, handler in handlers.items()
    }


def _endpoint(handler: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    """A request handler as an ASGI app, without a router around it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    return app


def _with_generated_admin_token(settings: Settings) -> Settings:
    """A server database without FIRSTPARTY_ADMIN_TOKEN: the token `serve` generated, by hash."""
    if settings.admin_token is not None or settings.is_sqlite:
        return settings
    engine = db.create_engine(settings.database_url)
    try:
        digest = instance.generated_admin_digest(engine)
    finally:
        engine.dispose()
    return settings.model_copy(update={"admin_token_digest": digest}) if digest else settings


@contextlib.asynccontextmanager
async def _delivery(runtime: Runtime, embedded: bool) -> AsyncIterator[None]:
    """The in-process worker on the embedded default; the queue closed at shut-down."""
    notifier = runtime.notifier
    try:
        if not embedded:
            yield
            return
        embedded_worker = worker.Worker(
            settings=runtime.settings,
            engine=runtime.engine,
            adapters={},
            queue=runtime.notifier,
            book=runtime.destinations,
        )
        await embedded_worker.start()
        try:
            yield
        finally:
            await embedded_worker.stop()
    finally:
        await notifier.close()


@contextlib.asynccontextmanager
async def _background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `work` as a task for the lifespan; cancel it and wait for it at shut-down."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def _checkpoints(runtime: Runtime) -> AsyncIterator[None]:
    """SQLite: fold the WAL into the database every second, outside any request's commit."""
    if not runtime.settings.is_sqlite:
        yield
        return

    async def loop() -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await asyncio.to_thread(db.checkpoint, runtime.engine)
            except Exception:  # a busy database: the next round will do it
                log.warning("WAL checkpoint failed; retrying", exc_info=True)

    try:
        async with _background(loop()):
            yield
    finally:
        await asyncio.to_thread(db.checkpoint, runtime.engine)


@contextlib.asynccontextmanager
async def _sources_refresh(book: SourceBook) -> AsyncIterator[None]:
    """Re-read the database's sources every few seconds, off the event loop: a key rotated,
    disabled or deleted (by the CLI or another process) is refused here within that time."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(SOURCES_REFRESH_SECONDS)
            try:
                await asyncio.to_thread(book.reload)
            except Exception:  # a busy or unreachable database: keep the keys known so far
                log.warning("reading the sources failed; retrying", exc_info=True)

    async with _background(loop()):
        yield


def _first_reload(destinations: DestinationBook) -> None:
    """The stored destinations at start; a database not ready yet leaves the config file's
    (the refresh loop reads them as soon as it can)."""
    try:
        destinations.reload()
    except SQLAlchemyError as exc:
        log.warning("stored destinations not read yet (%s); retrying", type(exc).__name__)


@contextlib.asynccontextmanager
async def _destinations_refresh(destinations: DestinationBook) -> AsyncIterator[None]:
    """Look at the stored destinations every few seconds, off the event loop: one added,
    changed, disabled or deleted in the admin UI (any process) is routed accordingly here."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(book.REFRESH_SECONDS)
            try:
                await asyncio.to_thread(destinations.reload)
            except Exception:  # a busy or unreachable database: keep the destinations known
                log.warning("reading the stored destinations failed; retrying", exc_info=True)

    async with _background(loop()):
        yield


@contextlib.asynccontextmanager
async def _audiences(runtime: Runtime) -> AsyncIterator[None]:
    """Audiences synced on their schedule (one process per audience at a time: a lease)."""
    if not any(a.every_minutes and a.destinations for a in runtime.settings.audiences):
        yield
        return
    scheduler = audience_service.Scheduler(settings=runtime.settings, engine=runtime.engine)
    try:
        async with _background(scheduler.run()):
            yield
    finally:
        await scheduler.close()


@contextlib.asynccontextmanager
async def _verdicts(runtime: Runtime) -> AsyncIterator[None]:
    """The platforms' verdicts on matching pulled every few hours (a lease: one process)."""
    puller = verdicts.Puller(
        settings=runtime.settings, engine=runtime.engine, book=runtime.destinations
    )
    try:
        async with _background(puller.run()):
            yield
    finally:
        await puller.close()


@contextlib.asynccontextmanager
async def _funnels(runtime: Runtime) -> AsyncIterator[None]:
    """Funnels' preset ranges computed off the request path (a lease per funnel: one process)."""
    refresher = funnel_rounds.Refresher(settings=runtime.settings, engine=runtime.engine)
    try:
        async with _background(refresher.run()):
            yield
    finally:
        await refresher.close()


@contextlib.asynccontextmanager
async def _alerting(runtime: Runtime) -> AsyncIterator[None]:
    """Alert rules judged every `[alerts] interval_seconds` (one process at a time: a lease)."""
    if not runtime.settings.alerts.enabled:
        yield
        return
    evaluator = alerts_loop.Evaluator(
        settings=runtime.settings, engine=runtime.engine, book=runtime.destinations
    )
    try:
        async with _background(evaluator.run()):
            yield
    finally:
        await evaluator.close()


@contextlib.asynccontextmanager
async def _pruning(runtime: Runtime) -> AsyncIterator[None]:
    """Delete rows past their retention a while after start, then every day (bounded chunks),
    and fold the rollups' shards of past hours into one row (`store.shards.fold`).

    At start, first, this month's and next month's partitions (PostgreSQL) where missing; each
    prune round makes them again, so a server up for months never runs out of them.
    """
    retention_settings = runtime.settings.retention

    async def loop() -> None:
        await asyncio.sleep(retention_settings.prune_first_delay_seconds)
        while True:
            try:
                removed = await asyncio.to_thread(
                    retention.prune, runtime.engine, retention_settings
                )
                log.info("pruned rows past their retention: %s", removed)
            except Exception:  # a busy or unreachable database: the next round will do it
                log.warning("prune failed; retrying at the next round", exc_info=True)
            try:
                folded = await asyncio.to_thread(shards.fold, runtime.engine)
                log.info("folded the rollups' shards of past hours: %s", folded)
            except Exception:  # the reports' sums are right either way; the next round folds
                log.warning("folding rollup shards failed; retrying next round", exc_info=True)
            await asyncio.sleep(retention_settings.prune_interval_hours * 3600)

    # Before serving, not in the background: a thread still making them at a quick shut-down
    # would hold a connection of an engine already disposed.
    try:
        await asyncio.to_thread(partitions.ensure, runtime.engine)
    except Exception:  # the default partition takes the rows meanwhile; the round retries
        log.warning("making partitions failed; retrying at the next round", exc_info=True)
    async with _background(loop()):
        yield


async def _input_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InputError)
    details = [{"field": d.field, "message": d.message} for d in exc.details]
    return JSONResponse({"error": exc.error, "details": details}, exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail, "details": []}, exc.status_code, headers=exc.headers)


class _Crashes:
    """A route's unexpected exception answered by `_crash`, the request finished here.

    Starlette hands the `Exception` handler to its outermost middleware, which answers and
    then re-raises, for the server to log a second, full traceback of the same failure.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:  # too late to answer: the server closes the connection
                raise
            response = await _crash(Request(scope, receive), exc)
            await response(scope, receive, send)


async def _crash(request: Request, exc: Exception) -> Response:
    """One log line with an error id, counted; the caller gets the id, never a stack trace."""
    error_id = crashes.record(exc, where=f"{request.method} {request.url.path}")
    return JSONResponse({"error": "internal error", "details": [], "error_id": error_id}, 500)


def tune_gc() -> None:
    """Keep garbage-collector pauses off the hot path: measured by bench/ingest (p99 halved)."""
    # What is loaded at start lives as long as the process: don't walk it on every full pass
    # (tens of ms each, paid by whichever request is running); and collect young objects less
    # often, since a request's garbage is mostly freed by reference counting anyway.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` with several worker processes: settings from the env."""
    from firstparty import settings as settings_mod

    heap.limit_arenas()
    settings = settings_mod.load(config_path=os.environ.get("FIRSTPARTY_CONFIG"))
    app = create_app(settings)
    tune_gc()
    return app
