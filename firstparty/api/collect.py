"""`POST /v1/events` and `POST /v1/batch`: the hot path. Parse, call collect.service, answer.

Kept lean on purpose (Starlette + msgspec, no per-request dependency tree): see README,
"Performance".
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

import msgspec
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty import metrics
from firstparty.collect import boundary, client_address, prepare, schema, service, sources, touch
from firstparty.collect.sources import Entry, SourceBook
from firstparty.errors import InputError, UnexpectedError
from firstparty.identity import cookie, cookie_keeper
from firstparty.settings import CollectSettings

JSON = "application/json"
log = logging.getLogger("firstparty.collect")


def _collector(request: Request) -> service.Collector:
    collector: service.Collector = request.app.state.collector
    return collector


async def events(request: Request) -> Response:
    collector = _collector(request)
    settings = collector.runtime.settings
    entry, visitor_id = None, None
    try:
        entry = authorise(request, collector.sources)
        visitor_id, minted = visitor(request, collector, entry)
        body = await read_body(request, settings.collect.max_event_bytes)
        event = schema.decode_event(schema.without_nul(body))
        came = arrival(request, collector, entry, visitor_id, minted)
        accepted = await service.accept(collector=collector, arrival=came, event=event)
        response = Response(schema.encode(accepted), 202, media_type=JSON)
        if entry.source.kind == "browser" and settings.cookie.keeper:
            for value in kept_cookies(request, collector, event):
                response.headers.append("set-cookie", value)
    except Exception as exc:
        response = error_response(boundary.answer(exc, source=entry.source.name if entry else "-"))
    return finish(request, collector, response, entry, visitor_id)


_HEADERS = "firstparty.headers"  # the request's headers by name, kept in its scope


def header(request: Request, name: str) -> str | None:
    """A request header (`name` in lower case), as `request.headers.get` reads it (the first of
    repeated ones), from a dict built once per request: the hot path reads several."""
    scope = request.scope
    found: dict[str, str] | None = scope.get(_HEADERS)
    if found is None:
        pairs = reversed(scope["headers"])
        found = scope[_HEADERS] = {k.decode("latin-1"): v.decode("latin-1") for k, v in pairs}
    return found.get(name)


def visitor(
    request: Request, collector: service.Collector, entry: Entry
) -> tuple[str | None, bool]:
    """(visitor id, just minted) for browser sources, from the fp_id cookie; none for servers."""
    if entry.source.kind != "browser":
        return None, False
    settings = collector.runtime.settings
    value = request.cookies.get(settings.cookie.name)
    return cookie.visitor_for(settings.secret_key.get_secret_value(), value)


def arrival(
    request: Request,
    collector: service.Collector,
    entry: Entry,
    visitor_id: str | None,
    minted: bool,
) -> prepare.Arrival:
    """What this request says about its events beside their bodies."""
    return prepare.Arrival(
        source=entry.source,
        received_at=datetime.now(UTC),
        visitor_id=visitor_id,
        new_visitor=minted,
        client_ip=_client_ip(request, collector.runtime.settings.collect),
        user_agent=header(request, "user-agent"),
        referer=header(request, "referer"),
    )


def kept_cookies(
    request: Request, collector: service.Collector, event: schema.EventIn
) -> list[str]:
    """Cookie keeper: the platform cookies this answer re-sets, when configured."""
    pixels = msgspec.structs.asdict(event.context) if event.context else {}
    clicks, _ = touch.parse(event.url)
    return cookie_keeper.headers(
        collector.runtime.settings.cookie,
        context={k: v for k, v in pixels.items() if isinstance(v, str)},
        request_cookies=request.cookies,
        new_fbclid=clicks.get("fbclid"),
        now=datetime.now(UTC),
    )


async def batch(request: Request) -> Response:
    collector = _collector(request)
    settings = collector.runtime.settings
    entry, visitor_id = None, None
    try:
        entry = authorise(request, collector.sources)
        visitor_id, minted = visitor(request, collector, entry)
        body = await read_body(request, settings.collect.max_batch_bytes)
        raws = schema.decode_batch(schema.without_nul(body))
        if len(raws) > settings.collect.max_batch_events:
            limit = settings.collect.max_batch_events
            raise InputError(413, f"a batch holds at most {limit} events")
        parsed = [_parse(raw, settings.collect.max_event_bytes) for raw in raws]
        came = arrival(request, collector, entry, visitor_id, minted)
        outcomes = await service.accept_batch(collector=collector, arrival=came, events=parsed)
        results = [o if isinstance(o, schema.Accepted) else item_error(o) for o in outcomes]
        response = Response(schema.encode(schema.BatchOut(results)), 200, media_type=JSON)
    except Exception as exc:
        response = error_response(boundary.answer(exc, source=entry.source.name if entry else "-"))
    return finish(request, collector, response, entry, visitor_id)


def _parse(raw: bytes, limit: int) -> service.Submitted | InputError:
    """One event of a batch, or why it cannot be one."""
    if len(raw) > limit:
        return InputError(413, "event too large")
    try:
        return service.Submitted(schema.decode_event(raw))
    except InputError as exc:
        return exc


async def preflight(request: Request) -> Response:
    """CORS preflight: allowed for the origins of the key's source, or of any browser source."""
    collector = _collector(request)
    origin = header(request, "origin")
    key = request.query_params.get("key")
    entry = collector.sources.lookup(key) if key else None
    allowed = set(entry.source.origins) if entry else collector.sources.origins()
    seen = forwarded_for(request, collector)
    probe = {FORWARDED_HEADER: seen} if seen else {}
    if not origin or origin not in allowed:
        return Response(status_code=403, headers=probe)
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, X-Write-Key",
            "Access-Control-Max-Age": "86400",
            "Vary": "Origin",
            **probe,
        },
    )


def authorise(request: Request, book: SourceBook) -> Entry:
    key = header(request, "x-write-key") or request.query_params.get("key")
    if not key:
        raise InputError(401, "missing write key (X-Write-Key header or ?key=)")
    return admit(request, book, key)


def admit(request: Request, book: SourceBook, key: str) -> Entry:
    """The source of this key, if it exists, the request's origin is allowed and its rate holds."""
    entry = book.lookup(key)
    if entry is None:
        raise InputError(401, "unknown write key")
    origin = header(request, "origin")
    # Browsers always send Origin on cross-site POSTs; its absence means a non-browser client.
    if origin and entry.source.kind == "browser" and origin not in entry.source.origins:
        raise InputError(403, f"origin {origin} is not allowed for source {entry.source.name}")
    if entry.source.kind == "browser":  # a public key: each address gets a share of it
        address = _client_ip(request, book.collect)
        if address is not None:
            _limited(request, entry, book.addresses.take(sources.address_key(address)), "address")
    _limited(request, entry, entry.bucket.take(), "write key")
    return entry


_REFUSED = "firstparty.refused_source"  # a rate-limited request's source, for finish()'s CORS


def _limited(request: Request, entry: Entry, wait: float, whom: str) -> None:
    if wait:
        request.scope[_REFUSED] = entry  # the page's script must read the 429 and Retry-After
        retry_after = str(max(1, math.ceil(wait)))
        raise InputError(
            429,
            f"rate limited: too many requests from this {whom}",
            headers={"Retry-After": retry_after},
        )


async def read_body(request: Request, limit: int) -> bytes:
    declared = header(request, "content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise InputError(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InputError(413, f"body larger than {limit} bytes")
    return bytes(body)


_CLIENT_IP = "firstparty.client_ip"  # kept in the request's scope: admit and arrival share it


def _client_ip(request: Request, settings: CollectSettings) -> str | None:
    scope = request.scope
    if _CLIENT_IP in scope:
        known: str | None = scope[_CLIENT_IP]
        return known
    if header(request, "x-forwarded-for") and not settings.trust_forwarded_for:
        _warn_untrusted_proxy(request.client.host if request.client else None)
    scope[_CLIENT_IP] = address = client_address.client_ip(
        request,
        trust_forwarded_for=settings.trust_forwarded_for,
        trusted_hops=settings.trusted_hops,
    )
    return address


# Once per process: X-Forwarded-For arrived while `trust_forwarded_for` is off.
_proxy_warned: list[bool] = []


def _warn_untrusted_proxy(peer: str | None) -> None:
    """Behind a proxy the platforms would get its address as the visitor's (Meta, TikTok)."""
    if _proxy_warned:
        return
    _proxy_warned.append(True)
    log.warning(
        "collect: X-Forwarded-For arrived from %s but [collect] trust_forwarded_for is off: the "
        "proxy's address is taken as the visitor's and forwarded to the platforms; set "
        "trust_forwarded_for = true when firstparty runs behind your own proxy (the limit per "
        "client address would otherwise hold all visitors together)",
        peer,
    )


FORWARDED_HEADER = "X-Firstparty-Forwarded-For"


def forwarded_for(request: Request, collector: service.Collector) -> str | None:
    """What became of this request's X-Forwarded-For: "used", "ignored", or None (none came).

    Answered in a preflight's `X-Firstparty-Forwarded-For` header, for `firstparty doctor`.
    """
    if not header(request, "x-forwarded-for"):
        return None
    return "used" if collector.runtime.settings.collect.trust_forwarded_for else "ignored"


def error_response(exc: InputError | UnexpectedError) -> Response:
    if isinstance(exc, UnexpectedError):  # logged where it was caught; only its id is answered
        body = schema.InternalErrorBody(exc.error, [], exc.error_id)
        return Response(schema.encode(body), 500, media_type=JSON)
    return Response(schema.error_body(exc), exc.status, headers=exc.headers, media_type=JSON)


def item_error(exc: InputError | UnexpectedError) -> schema.BatchItemError:
    if isinstance(exc, UnexpectedError):
        return schema.BatchItemError(False, exc.error, error_id=exc.error_id or None)
    details = [schema.ErrorDetail(d.field, d.message) for d in exc.details]
    return schema.BatchItemError(False, exc.error, details)


def finish(
    request: Request,
    collector: service.Collector,
    response: Response,
    entry: Entry | None,
    visitor_id: str | None,
) -> Response:
    """CORS headers for allowed origins, and the visitor cookie on every browser answer."""
    if entry is None and response.status_code == 429:
        entry = request.scope.get(_REFUSED)
    _count(entry, response)
    cors(request, response, entry)
    if visitor_id is not None:
        settings = collector.runtime.settings
        secret = settings.secret_key.get_secret_value()
        response.headers.append("set-cookie", cookie.header(settings.cookie, secret, visitor_id))
    return response


def cors(request: Request, response: Response, entry: Entry | None) -> None:
    """CORS headers when the request's origin is one of its source's (the OTP answers too)."""
    if entry is None and response.status_code == 429:
        entry = request.scope.get(_REFUSED)
    origin = header(request, "origin")
    if entry is not None and origin and origin in entry.source.origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
        if response.status_code in (429, 503):  # fp.js retries after it
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"


_counters: dict[tuple[str, str], Counter] = {}


def _count(entry: Entry | None, response: Response) -> None:
    source = entry.source.name if entry else "-"
    if response.status_code >= 400:
        outcome = f"rejected_{response.status_code}"
    elif response.status_code == 202:
        outcome = "duplicate" if b'"duplicate":true' in response.body else "stored"
    else:
        return
    counter = _counters.get((source, outcome))
    if counter is None:  # labels() costs more than the increment: keep each child
        counter = _counters[(source, outcome)] = metrics.EVENTS.labels(source, outcome)
    counter.inc()


routes = [
    Route("/v1/events", events, methods=["POST"]),
    Route("/v1/events", preflight, methods=["OPTIONS"]),
    Route("/v1/batch", batch, methods=["POST"]),
    Route("/v1/batch", preflight, methods=["OPTIONS"]),
]
