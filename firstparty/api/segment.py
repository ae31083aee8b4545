"""Segment's HTTP Tracking API under `/segment`: existing Segment SDKs send here unchanged.

Answers follow Segment's documented behaviour: `200 {"success": true}` for everything except a
body too large or not JSON (`400`). A bad message inside a batch is left out and the rest are
stored, still with a 200 (the SDKs would otherwise retry or drop the whole batch); the answer
lists what was left out under `rejected`, and a field dropped from a stored message (a phone
that is not a number...) under `warnings` (also logged and counted). An unknown key is a 401,
a disallowed origin a 403, rate limiting a 429, unavailable storage a 503 and an unexpected
failure (logged) a 500: the SDKs drop on the first two and retry the others, and a retried
batch is deduplicated by messageId. A value the database refuses leaves its message out like
any invalid one. Mapping: firstparty.collect.segment; storing: firstparty.collect.service.
"""

from __future__ import annotations

import base64
import binascii
import logging
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firstparty import metrics
from firstparty.api import collect
from firstparty.collect import boundary, prepare, schema, service
from firstparty.collect import segment as mapping
from firstparty.collect.sources import Entry
from firstparty.errors import InputError, UnexpectedError

log = logging.getLogger("firstparty.segment")
PREFIX = "/segment/v1"
_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 429: "rate_limited"}
_AUTH = "Write key: HTTP Basic user name, `writeKey` in the body, X-Write-Key or ?key=."
_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Retry-Count, X-Write-Key"


@dataclass
class Call:
    """One request: its source, what it says beside its body, its clock, the messages left out."""

    entry: Entry
    arrival: prepare.Arrival
    clock: mapping.Clock
    rejected: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)


async def message(request: Request) -> Response:
    """`/v1/track`, `/v1/t` and the other single-message routes."""
    kind = request.url.path.rsplit("/", 1)[-1]
    return await _handle(request, mapping.MAX_EVENT_BYTES, mapping.SHORT.get(kind, kind))


async def batch(request: Request) -> Response:
    """`/v1/batch` (and `/v1/b`, analytics.js's batching): `{"batch": [...], ...}`."""
    return await _handle(request, mapping.MAX_BATCH_BYTES, None)


async def _handle(request: Request, limit: int, segment_type: str | None) -> Response:
    collector: service.Collector = request.app.state.collector
    call = None
    try:
        body = await read(request, limit)
        call = _call(request, collector, body)
        if segment_type is None:
            await _batch(collector, call, body)
        else:
            await _single(collector, call, body, segment_type)
        response = _success(call.rejected, call.warnings)
    except Exception as exc:
        source = call.entry.source.name if call else "-"
        response = error_response(boundary.answer(exc, source=source))
    entry, visitor_id = (call.entry, call.arrival.visitor_id) if call else (None, None)
    return collect.finish(request, collector, response, entry, visitor_id)


def _call(request: Request, collector: service.Collector, body: bytes) -> Call:
    entry = authorise(request, collector, body)
    visitor_id, minted = collect.visitor(request, collector, entry)
    came = collect.arrival(request, collector, entry, visitor_id, minted)
    return Call(entry, came, mapping.Clock(came.received_at))


async def _single(collector: service.Collector, call: Call, body: bytes, segment_type: str) -> None:
    try:
        decoded = msgspec.structs.replace(mapping.decode_message(body), type=segment_type)
        submitted = _submitted(call, decoded, body)
        accepted = await service.accept(
            collector=collector,
            arrival=call.arrival,
            event=submitted.event,
            annex=submitted.annex,
        )
    except InputError as exc:
        # An invalid message is a 400 at Segment, whatever our reason; storage stays a 503.
        raise exc if exc.status >= 500 else InputError(400, exc.error, exc.details) from None
    _count(call, accepted)
    _warn(call, None, decoded.message_id, accepted)


async def _batch(collector: service.Collector, call: Call, body: bytes) -> None:
    parsed = mapping.decode_batch(body)
    if len(parsed.batch) > mapping.MAX_BATCH_EVENTS:
        raise InputError(400, f"a batch holds at most {mapping.MAX_BATCH_EVENTS} messages")
    call.clock = mapping.Clock(call.clock.received_at, parsed.sent_at)
    raws = [bytes(raw) for raw in parsed.batch]
    submitted = [_batch_item(call, parsed.context, raw) for raw in raws]
    outcomes = await service.accept_batch(
        collector=collector, arrival=call.arrival, events=submitted
    )
    # Storage unavailable (503 first: it says "retry"), or a failure nobody expected: the SDK
    # retries the whole batch, and messageId deduplicates what was stored.
    unavailable = [o for o in outcomes if isinstance(o, InputError) and o.status >= 500]
    broken = [o for o in outcomes if isinstance(o, UnexpectedError)]
    if unavailable or broken:
        raise (unavailable or broken)[0]
    for index, (raw, outcome) in enumerate(zip(raws, outcomes, strict=True)):
        if isinstance(outcome, schema.Accepted):
            _count(call, outcome)
            _warn(call, index, _message_id(raw), outcome)
        elif isinstance(outcome, InputError):
            _reject(call, index, raw, outcome)


def _batch_item(call: Call, context: dict[str, Any], raw: bytes) -> service.Submitted | InputError:
    """One message of a batch as our event, or why it cannot be one."""
    if len(raw) > mapping.MAX_EVENT_BYTES:
        return InputError(400, f"message larger than {mapping.MAX_EVENT_BYTES} bytes")
    try:
        return _submitted(call, mapping.merged_context(context, mapping.decode_message(raw)), raw)
    except InputError as exc:
        return exc


def _submitted(call: Call, decoded: mapping.Message, raw: bytes) -> service.Submitted:
    """Our event for a message, and the message as kept beside it in the stored request."""
    event = mapping.to_event(decoded, kind=call.entry.source.kind, clock=call.clock)
    return service.Submitted(event, {"segment": mapping.record(msgspec.json.decode(raw))})


def _reject(call: Call, index: int, raw: bytes, exc: InputError) -> None:
    """A message left out of a batch: logged, counted and listed in the answer."""
    message_id = _message_id(raw)
    details = [{"field": d.field, "message": d.message} for d in exc.details]
    call.rejected.append(
        {"index": index, "messageId": message_id, "error": exc.error, "details": details}
    )
    metrics.EVENTS.labels(call.entry.source.name, f"rejected_{exc.status}").inc()
    log.warning(
        "segment: message %s of source %s left out: %s %s",
        message_id,
        call.entry.source.name,
        exc.error,
        details,
    )


def _warn(call: Call, index: int | None, message_id: Any, accepted: schema.Accepted) -> None:
    """Fields dropped from a stored message: listed in the answer (Segment's SDKs ignore what
    they do not know) and logged; counted by collect.service."""
    for warning in accepted.warnings:
        where = {} if index is None else {"index": index}
        message_id = None if message_id is None else str(message_id)[:128]
        call.warnings.append(
            {**where, "messageId": message_id, "field": warning.field, "message": warning.message}
        )
        log.info(
            "segment: message %s of source %s stored without %s: %s",
            message_id,
            call.entry.source.name,
            warning.field,
            warning.message,
        )


def _message_id(raw: bytes) -> str | None:
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    found = value.get("messageId") if isinstance(value, dict) else None
    return None if found is None else str(found)[:128]


def _count(call: Call, accepted: schema.Accepted) -> None:
    outcome = "duplicate" if accepted.duplicate else "stored"
    metrics.EVENTS.labels(call.entry.source.name, outcome).inc()


def authorise(request: Request, collector: service.Collector, body: bytes) -> Entry:
    """The source: Basic auth user name, X-Write-Key, ?key=, or the body's writeKey."""
    key = (
        basic_user(request.headers.get("authorization"))
        or request.headers.get("x-write-key")
        or request.query_params.get("key")
        or mapping.body_write_key(body)
    )
    if not key:
        raise InputError(401, "missing write key (Basic auth, writeKey, X-Write-Key or ?key=)")
    # The origin check and the rate limit are those of /v1/events, with the key found here.
    return collect.admit(request, collector.sources, key)


def basic_user(header: str | None) -> str | None:
    """The user name of an HTTP Basic Authorization header (Segment's write key)."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


async def read(request: Request, limit: int) -> bytes:
    """The body, gunzipped when sent with `Content-Encoding: gzip`; too large is a 400."""
    try:
        body = await collect.read_body(request, limit)
        if request.headers.get("content-encoding", "").lower() == "gzip":
            body = gunzip(body, limit)
    except InputError as exc:
        raise InputError(400, exc.error) from None
    return schema.without_nul(body)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompressed at most `limit` bytes: a small body that inflates past it is refused."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise InputError(400, "body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise InputError(400, f"body larger than {limit} bytes")
    return out


def _success(rejected: list[dict[str, Any]], warnings: list[dict[str, Any]]) -> Response:
    body: dict[str, Any] = {"success": True}
    if rejected:
        body["rejected"] = rejected
    if warnings:
        body["warnings"] = warnings
    return JSONResponse(body)


def error_response(exc: InputError | UnexpectedError) -> Response:
    """Segment's error shape (`code`, `message`), with our field details."""
    if isinstance(exc, UnexpectedError):  # logged where it was caught; only its id is answered
        body = {"success": False, "code": "internal", "message": exc.error, "details": []}
        body["error_id"] = exc.error_id
        return JSONResponse(body, exc.status)
    details = [{"field": d.field, "message": d.message} for d in exc.details]
    code = _CODES.get(exc.status, "unavailable" if exc.status >= 500 else "invalid_request")
    body = {"success": False, "code": code, "message": exc.error, "details": details}
    return JSONResponse(body, exc.status, headers=exc.headers)


async def preflight(request: Request) -> Response:
    """CORS preflight: as for /v1/events, also allowing the headers Segment's SDKs send."""
    response = await collect.preflight(request)
    if response.status_code == 204:
        response.headers["Access-Control-Allow-Headers"] = _HEADERS
    return response


async def project_settings(request: Request) -> Response:
    """What analytics.js loads from its CDN, served here: it then sends only to this host."""
    collector: service.Collector = request.app.state.collector
    entry = collector.sources.lookup(request.path_params["write_key"])
    if entry is None or entry.source.kind != "browser":
        # Server keys are secrets: this route never confirms one exists.
        return error_response(InputError(404, "no browser source has this write key"))
    public_url = request.app.state.runtime.settings.public_url
    if public_url:
        scheme, _, host = public_url.partition("://")
        cache = {"Cache-Control": "public, max-age=300"}
    else:  # the caller's own Host, so never kept by a shared cache (set public_url to cache it)
        scheme, host = request.url.scheme, request.url.netloc
        cache = {"Cache-Control": "no-store"}
    body = cdn_settings(request.path_params["write_key"], host + PREFIX, scheme)
    response = JSONResponse(body, headers=cache)
    origin = request.headers.get("origin")
    if origin and origin in entry.source.origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


def cdn_settings(write_key: str, api_host: str, protocol: str) -> dict[str, Any]:
    """analytics.js settings: send to us, with cookies (the fp_id visitor), no CDN, no metrics."""
    delivery = {"strategy": "standard", "config": {"credentials": "include"}}
    plan = {"__default": {"enabled": True, "integrations": {}}}
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "addBundledMetadata": False,
                "deliveryStrategy": delivery,
            }
        },
        "plan": {"track": plan, "identify": plan, "group": plan},
        "metrics": {"sampleRate": 0},
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


async def library_metrics(request: Request) -> Response:
    """analytics.js's own telemetry (`/m`): accepted and dropped; it is not tracking data."""
    await collect.read_body(request, mapping.MAX_EVENT_BYTES)
    return JSONResponse({"success": True})


def _routes() -> list[Route]:
    names = [*mapping.TYPES, *mapping.SHORT]
    single = [Route(f"{PREFIX}/{name}", message, methods=["POST"]) for name in sorted(names)]
    many = [Route(f"{PREFIX}/{name}", batch, methods=["POST"]) for name in ("batch", "b")]
    posts = [*single, *many, Route(f"{PREFIX}/m", library_metrics, methods=["POST"])]
    options = [Route(r.path, preflight, methods=["OPTIONS"]) for r in posts]
    settings = Route(f"{PREFIX}/projects/{{write_key}}/settings", project_settings, methods=["GET"])
    return [*posts, *options, settings]


routes = _routes()


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI entries of these routes (firstparty.api.openapi lists them)."""
    answers = {
        "200": {
            "description": '`{"success": true}`; `rejected` lists messages left out, '
            "`warnings` the fields dropped from messages stored"
        },
        "400": {"description": "Malformed JSON, invalid message, or body too large"},
        "401": {"description": "Missing or unknown write key"},
        "403": {"description": "Origin not allowed for this source"},
        "429": {"description": "Rate limited; see Retry-After"},
        "503": {"description": "Storage unavailable; retry"},
    }
    paths: dict[str, Any] = {}
    for route in routes:
        summary = (route.endpoint.__doc__ or "").split("\n")[0]
        if route.path.endswith("/settings"):
            paths[route.path] = {"get": {"summary": summary, "responses": {"200": answers["200"]}}}
        elif "OPTIONS" not in (route.methods or set()):
            op = {"summary": summary, "description": _AUTH, "responses": answers}
            paths[route.path] = {"post": op}
    return paths
