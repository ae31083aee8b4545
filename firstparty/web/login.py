"""Signing in to the admin UI and out of it.

One page, two forms: an operator's email and password (`operators.accounts`), and the
break-glass admin token (FIRSTPARTY_ADMIN_TOKEN), which acts as an operator. A password try
waits out the growing delays of both its client address and its account (`signin`); an unknown
email is answered with the same words, status and (an argon2 verification) time as a wrong
password. Every sign-in, failed sign-in and sign-out is written to the audit log.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from firstparty.operators import accounts, audit
from firstparty.runtime import Runtime
from firstparty.web import admin, sessions, signin

WRONG_PASSWORD = "Wrong email or password."
OFF = "The admin UI is off: set FIRSTPARTY_ADMIN_TOKEN to use it."


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def login_page(request: Request) -> Response:
    runtime = _runtime(request)
    if not runtime.settings.admin_on:
        return admin._error(request, 403, OFF)
    if await sessions.principal(runtime, request.cookies.get(admin.SESSION_COOKIE)):
        return RedirectResponse("/admin/", 303)
    return _login_form(request, "", 200)


def _login_form(
    request: Request,
    error: str,
    status: int,
    headers: dict[str, str] | None = None,
    email: str = "",
) -> Response:
    seed = request.cookies.get(admin.LOGIN_COOKIE) or ""
    if len(seed) != 22:
        seed = secrets.token_urlsafe(16)
    settings = _runtime(request).settings
    context = {"login_csrf": sessions.csrf_token(settings, seed), "error": error, "email": email}
    response = admin._render(request, "admin_login.html", context, status)
    response.headers.update(headers or {})
    admin._set_cookie(request, response, admin.LOGIN_COOKIE, seed, admin.LOGIN_SECONDS)
    return response


def _wait_words(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


def _paused(request: Request, what: str, wait: int, email: str = "") -> Response:
    message = f"Too many {what}: sign-in is paused. Try again in {_wait_words(wait)}."
    return _login_form(request, message, 429, {"Retry-After": str(wait)}, email)


async def login(request: Request) -> Response:
    runtime = _runtime(request)
    if not runtime.settings.admin_on:
        return admin._error(request, 403, OFF)
    form = await admin._form(request)
    if not admin._csrf_ok(
        runtime.settings, request.cookies.get(admin.LOGIN_COOKIE), form.get("csrf")
    ):
        return _login_form(request, "The form expired; please sign in again.", 403)
    if "token" in form:
        return await _token_login(request, runtime, form.get("token", ""))
    return await _account_login(request, runtime, form.get("email", ""), form.get("password", ""))


async def _account_login(request: Request, runtime: Runtime, email: str, password: str) -> Response:
    email = email.strip()[: accounts.MAX_EMAIL]
    by_address = await signin.begin_request(request, runtime, signin.Surface.UI)
    if by_address.refused:
        return _paused(request, "wrong sign-ins from your address", by_address.retry_after, email)
    by_account = await signin.begin_account(runtime, email)
    if by_account.refused:
        return _paused(request, "wrong passwords for this account", by_account.retry_after, email)
    now = datetime.now(UTC)
    found = await asyncio.to_thread(
        accounts.authenticate, runtime.engine, email=email, password=password, now=now
    )
    if found is None:
        await _audit(runtime, email.lower() or "(no email)", audit.Action.SIGN_IN_FAILED)
        return _login_form(request, WRONG_PASSWORD, 401, email=email)
    for attempt in (by_address, by_account):
        await asyncio.to_thread(signin.succeeded, runtime.engine, attempt)
    await _audit(runtime, found.email, audit.Action.SIGN_IN, role=found.role.value)
    value = sessions.issue_operator_session(runtime.settings, found, time.time())
    return _signed_in(request, value)


async def _token_login(request: Request, runtime: Runtime, token: str) -> Response:
    attempt = await signin.begin_request(request, runtime, signin.Surface.UI)
    if attempt.refused:
        return _paused(request, "wrong tokens from your address", attempt.retry_after)
    if not runtime.settings.admin_token_matches(token):
        await _audit(runtime, audit.ADMIN_TOKEN, audit.Action.SIGN_IN_FAILED)
        return _login_form(request, "Wrong admin token.", 401)
    await asyncio.to_thread(signin.succeeded, runtime.engine, attempt)
    await _audit(runtime, audit.ADMIN_TOKEN, audit.Action.SIGN_IN, role="operator")
    return _signed_in(request, sessions.issue_session(runtime.settings, time.time()))


async def _audit(runtime: Runtime, actor: str, action: audit.Action, **detail: str) -> None:
    await asyncio.to_thread(
        audit.write, runtime.engine, actor=actor, action=action, detail={"surface": "ui", **detail}
    )


def _signed_in(request: Request, value: str) -> Response:
    response = RedirectResponse("/admin/", 303)
    admin._set_cookie(request, response, admin.SESSION_COOKIE, value, sessions.SESSION_SECONDS)
    admin._delete_cookie(request, response, admin.LOGIN_COOKIE)
    return response


async def logout(request: Request) -> Response:
    """Ends the session here and in every process: its nonce is revoked until its expiry."""
    runtime = _runtime(request)
    parts = request.cookies[admin.SESSION_COOKIE].split(".")
    expires_at = datetime.fromtimestamp(int(parts[1]), UTC)
    await asyncio.to_thread(signin.revoke, runtime.engine, nonce=parts[0], expires_at=expires_at)
    await _audit(runtime, admin.principal(request).actor, audit.Action.SIGN_OUT)
    response = admin._to_login()
    admin._delete_cookie(request, response, admin.SESSION_COOKIE)
    return response


routes = [
    Route("/admin/login", login_page, methods=["GET"]),
    Route("/admin/login", login, methods=["POST"]),
    Route("/admin/logout", admin._signed_in(logout), methods=["POST"]),
]
