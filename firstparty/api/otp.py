"""`POST /v1/otp/start` and `POST /v1/otp/verify`: phone verification by one-time code.

The client address is the request's peer address (behind a proxy, `collect.trust_forwarded_for`
makes it the first X-Forwarded-For entry, as for /v1/events). CORS is handled by the app.
The clock is `app.state.clock` when set (tests), else the system clock.
"""

from __future__ import annotations

import re
from typing import Annotated, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firstparty.collect import client_address, nonfinite
from firstparty.errors import FieldError, InputError
from firstparty.identity import cookie, otp, sms
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
    body = _decode(await _read(request), StartIn)
    try:
        started = await otp.start(
            engine=runtime.engine,
            settings=runtime.settings,
            provider=_provider(runtime),
            phone=body.phone,
            ip=_client_ip(request, runtime),
            now=_clock(request),
        )
    except sms.SmsError as exc:
        return _sms_failed(exc)
    answer = {"ok": True, "expires_in": started.expires_in, "resend_after": started.resend_after}
    visitor_id, _ = _visitor(request, runtime)
    return _with_cookie(JSONResponse(answer, 202), runtime, visitor_id)


async def verify(request: Request) -> Response:
    runtime = _runtime(request)
    body = _decode(await _read(request), VerifyIn)
    visitor_id, _ = _visitor(request, runtime)
    try:
        verified = await otp.verify(
            engine=runtime.engine,
            settings=runtime.settings,
            provider=_provider(runtime),
            phone=body.phone,
            code=body.code,
            ip=_client_ip(request, runtime),
            visitor_id=visitor_id,
            now=_clock(request),
        )
    except sms.SmsError as exc:
        return _sms_failed(exc)
    answer = {"ok": True, "user_id": verified.user_id}
    return _with_cookie(JSONResponse(answer, 200), runtime, verified.visitor_id)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _provider(runtime: Runtime) -> sms.Provider:
    return sms.provider_for(runtime.settings.otp)


def _clock(request: Request) -> otp.Clock:
    clock: otp.Clock = getattr(request.app.state, "clock", otp.utcnow)
    return clock


def _client_ip(request: Request, runtime: Runtime) -> str | None:
    collect = runtime.settings.collect
    return client_address.client_ip(
        request, trust_forwarded_for=collect.trust_forwarded_for, trusted_hops=collect.trusted_hops
    )


def _visitor(request: Request, runtime: Runtime) -> tuple[str, bool]:
    settings = runtime.settings
    value = request.cookies.get(settings.cookie.name)
    return cookie.visitor_for(settings.secret_key.get_secret_value(), value)


def _with_cookie(response: Response, runtime: Runtime, visitor_id: str) -> Response:
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
    Route("/v1/otp/verify", verify, methods=["POST"]),
]
