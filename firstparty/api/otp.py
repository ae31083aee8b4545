"""`POST /v1/otp/start` and `POST /v1/otp/verify`: phone verification by one-time code.

The browser rules of /v1/events hold here too (api/collect.py): a write key (`X-Write-Key` or
`?key=`) of a configured source; a browser source's requests carry one of its origins or none
(403 otherwise); answers to an allowed origin carry the CORS headers, and `OPTIONS` answers the
preflight. So the site's own pages read the answers and no other site can make its visitors ask
for codes. A server source (a backend verifying phones) is trusted with its secret key: its
address is not a visitor's, so the limits per address do not apply to it, and it names a visitor
only by forwarding the visitor's fp_id cookie (its answers set none).

The client address is taken as for /v1/events (`[collect] trust_forwarded_for`, `trusted_hops`:
X-Forwarded-For read from the right). The clock is `app.state.clock` when set (tests), else the
system clock.
"""

from __future__ import annotations

import re
from typing import Annotated, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firstparty.api import collect
from firstparty.collect import client_address, nonfinite
from firstparty.collect.service import Collector
from firstparty.collect.sources import Entry
from firstparty.errors import FieldError, InputError
from firstparty.identity import cookie, otp, otp_limits, sms
from firstparty.runtime import Runtime

MAX_BODY = 4096
T = TypeVar("T")
Phone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
_AT_FIELD = re.compile(r"at `\$\.([A-Za-z_]+)")
_MISSING = re.compile(r"missing required field `([A-Za-z_]+)`")


class StartIn(msgspec.Struct):
    phone: Phone


class VerifyIn(msgspec.Struct):
    phone: Phone
    code: Code


async def start(request: Request) -> Response:
    runtime = _runtime(request)
    entry, visitor_id = None, None
    try:
        entry = _authorise(request)
        visitor_id = _visitor(request, runtime, entry)
        body = _decode(await _read(request), StartIn)
        started = await otp.start(
            engine=runtime.engine,
            settings=runtime.settings,
            provider=_provider(runtime),
            phone=body.phone,
            ip=_client_ip(request, runtime, entry),
            visitor_id=visitor_id,
            now=_clock(request),
        )
        answer = {"ok": True, "expires_in": started.expires_in}
        answer["resend_after"] = started.resend_after
        response: Response = JSONResponse(answer, 202)
    except InputError as exc:
        response = collect.error_response(exc)
    except sms.SmsError as exc:
        response = _sms_failed(exc)
    return _finish(request, runtime, response, entry, visitor_id)


async def verify(request: Request) -> Response:
    runtime = _runtime(request)
    entry, visitor_id = None, None
    try:
        entry = _authorise(request)
        visitor_id = _visitor(request, runtime, entry)
        body = _decode(await _read(request), VerifyIn)
        verified = await otp.verify(
            engine=runtime.engine,
            settings=runtime.settings,
            provider=_provider(runtime),
            phone=body.phone,
            code=body.code,
            ip=_client_ip(request, runtime, entry),
            visitor_id=visitor_id,
            now=_clock(request),
        )
        response: Response = JSONResponse({"ok": True, "user_id": verified.user_id}, 200)
    except InputError as exc:
        response = collect.error_response(exc)
    except sms.SmsError as exc:
        response = _sms_failed(exc)
    return _finish(request, runtime, response, entry, visitor_id)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _authorise(request: Request) -> Entry:
    """The source of the request's write key, as for /v1/events; its rate limits counted."""
    collector: Collector = request.app.state.collector
    try:
        return collect.authorise(request, collector.sources)
    except InputError as exc:
        if exc.status == 429:
            otp_limits.count(otp_limits.Refusal.RATE_LIMIT)
        raise


def _provider(runtime: Runtime) -> sms.Provider:
    return sms.provider_for(runtime.settings.otp)


def _clock(request: Request) -> otp.Clock:
    clock: otp.Clock = getattr(request.app.state, "clock", otp.utcnow)
    return clock


def _client_ip(request: Request, runtime: Runtime, entry: Entry) -> str | None:
    """The visitor's address; none for a server source (its backend's address is no one's)."""
    if entry.source.kind != "browser":
        return None
    proxies = runtime.settings.collect
    return client_address.client_ip(
        request, trust_forwarded_for=proxies.trust_forwarded_for, trusted_hops=proxies.trusted_hops
    )


def _visitor(request: Request, runtime: Runtime, entry: Entry) -> str | None:
    """A browser's visitor (its fp_id, minted if absent); a server's only if it forwards one."""
    secret = runtime.settings.secret_key.get_secret_value()
    value = request.cookies.get(runtime.settings.cookie.name)
    if entry.source.kind != "browser":
        return cookie.read(secret, value)
    visitor_id, _ = cookie.visitor_for(secret, value)
    return visitor_id


def _finish(
    request: Request,
    runtime: Runtime,
    response: Response,
    entry: Entry | None,
    visitor_id: str | None,
) -> Response:
    """CORS for an allowed origin, and the visitor cookie on every answer to a browser."""
    collect.cors(request, response, entry)
    if visitor_id is not None and entry is not None and entry.source.kind == "browser":
        settings = runtime.settings
        secret = settings.secret_key.get_secret_value()
        response.headers.append("set-cookie", cookie.header(settings.cookie, secret, visitor_id))
    return response


async def _read(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise InputError(413, f"body larger than {MAX_BODY} bytes")
    return bytes(body)


def _decode(body: bytes, kind: type[T]) -> T:
    """The body as `kind`: 400 when it is not JSON, 422 naming the field when it does not fit."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = _AT_FIELD.search(text) or _MISSING.search(text)
        name = found.group(1) if found else "body"
        raise InputError(422, "validation failed", [FieldError(name, text)]) from None
    except msgspec.DecodeError as exc:
        raise nonfinite.malformed(body, exc) from None
    except UnicodeDecodeError:
        raise InputError(400, "malformed JSON") from None


def _sms_failed(exc: sms.SmsError) -> Response:
    """502/503 when the provider failed: the code was not sent (or not checked)."""
    headers = {"Retry-After": "30"} if exc.status == 503 else {}
    return JSONResponse({"error": str(exc), "details": []}, exc.status, headers=headers)


routes = [
    Route("/v1/otp/start", start, methods=["POST"]),
    Route("/v1/otp/start", collect.preflight, methods=["OPTIONS"]),
    Route("/v1/otp/verify", verify, methods=["POST"]),
    Route("/v1/otp/verify", collect.preflight, methods=["OPTIONS"]),
]
