"""Operations: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firstparty.api import openapi
from firstparty.delivery import outbox
from firstparty.metrics import DELIVERY_LAG, REGISTRY
from firstparty.runtime import Runtime

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    """Ready when the database (and the queue, if Redis carries it) answers."""
    runtime: Runtime = request.app.state.runtime
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping_database, runtime), timeout=5)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        ready = await asyncio.wait_for(runtime.notifier.ready(), timeout=5)
        checks["queue"] = "ok" if ready else "unreachable"
    except Exception as exc:
        checks["queue"] = f"unreachable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    answer: dict[str, object] = {"ok": ok, "checks": checks}
    if runtime.destinations.problems:  # reported, not unready: the rest of the server works
        answer["misconfigured"] = dict(runtime.destinations.problems)
    return JSONResponse(answer, 200 if ok else 503)


def _ping_database(runtime: Runtime) -> None:
    with runtime.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


async def metrics(request: Request) -> Response:
    """Prometheus's text format; behind `Authorization: Bearer <metrics_token>` when one is set."""
    runtime: Runtime = request.app.state.runtime
    token = runtime.settings.metrics_token
    if token is not None and not _bearer_is(request, token.get_secret_value()):
        return JSONResponse(
            {"error": "metrics need Authorization: Bearer <metrics_token>", "details": []},
            401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    await _measure_lag(runtime)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _measure_lag(runtime: Runtime) -> None:
    """The queue-lag gauge, read from the outbox at this scrape (NaN when the database fails)."""
    try:
        lag = await asyncio.wait_for(asyncio.to_thread(_lag_seconds, runtime), timeout=5)
    except Exception as exc:
        log.warning("queue lag not measured: %s", type(exc).__name__)
        lag = math.nan
    DELIVERY_LAG.set(lag)


def _lag_seconds(runtime: Runtime) -> float:
    now = datetime.now(UTC)
    oldest = outbox.oldest_due(runtime.engine, now=now)
    return 0.0 if oldest is None else (now - oldest).total_seconds()


def _bearer_is(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi.document())


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
