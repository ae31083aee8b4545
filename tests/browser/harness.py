"""What the browser tests run against: a throwaway certificate, servers in threads, the site.

Both hosts are 127.0.0.1: Chromium maps www.example.test and t.example.test there, so the site
and the tracker are two names of one registrable domain, as in production.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.conftest import BROWSER_UA

if TYPE_CHECKING:
    from playwright.sync_api import Page

SITE_HOST = "www.example.test"
TRACKER_HOST = "t.example.test"
STUB = (Path(__file__).parents[2] / "firstparty/web/demo/index.html").read_text()
STUB = STUB[STUB.index("<script>!function") : STUB.index("</script>") + len("</script>")]

# Debian's chromium (a test tool's own browser download does not work on these machines).
CHROMIUM = "/usr/bin/chromium"
# Headless, and quiet: without the background-networking flags Chromium calls out to Google.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # A real Chrome's User-Agent: headless Chromium says HeadlessChrome, which firstparty flags
    # as a robot and forwards nowhere (collect/bots.py); these tests are about people.
    f"--user-agent={BROWSER_UA}",
]


def browser_missing() -> str | None:
    """Why a real-browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip a real-browser test that cannot run here; on CI, fail it instead."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def admin_page(
    base: str, token: str = "", *, height: int = 720, account: tuple[str, str] | None = None
) -> Iterator[Page]:
    """A Chromium page signed in to the admin UI served at `base` (1280 pixels wide): with the
    break-glass admin `token`, or as the operator `account` (email, password)."""
    with admin_browser(height=height) as page:
        page.goto(f"{base}/admin/login")
        if account is not None:
            page.fill("input[name=email]", account[0])
            page.fill("input[name=password]", account[1])
            page.click("#account-form button[type=submit]")
        else:
            page.fill("input[name=token]", token)
            page.click("#token-form button[type=submit]")
        page.wait_for_url(f"{base}/admin/")
        yield page


@contextlib.contextmanager
def admin_browser(*, height: int = 720) -> Iterator[Page]:
    """A fresh Chromium page (1280 pixels wide, no cookies) for the admin UI."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = chromium.new_context(
            ignore_https_errors=True, viewport={"width": 1280, "height": height}
        )
        context.set_default_timeout(20_000)
        yield context.new_page()


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for both host names, valid for a day: (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(SITE_HOST), x509.DNSName(TRACKER_HOST)]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def bound_socket() -> socket.socket:
    """A socket bound to a free loopback port (not listening: connections to it are refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class ServerThread:
    """An ASGI app served over TLS by uvicorn in a thread, on a port of its own."""

    app: Any
    tls: tuple[Path, Path]

    def __post_init__(self) -> None:
        self.sock = bound_socket()
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            ssl_certfile=str(self.tls[0]),
            ssl_keyfile=str(self.tls[1]),
            log_level="warning",
            lifespan="on",
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started, "the server to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def wait_until(condition: Callable[[], Any], what: str, limit: float = 15.0) -> Any:
    """Poll until `condition()` is truthy and return it; fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
{stub}
<script>
  {setup}
</script>
<script async src="{src}" data-key="{key}" {host}></script>
</head>
<body>
<h1>{title}</h1>
<p id="alive">script still running?</p>
<a id="away" href="/away">away</a>
<script>
  {after}
  document.getElementById('alive').textContent = 'page works';
</script>
</body></html>
"""

PIXEL_COOKIES = """
  var far = '; domain=example.test; path=/; max-age=3600; samesite=lax; secure';
  document.cookie = '_fbp=fb.1.1700000000000.1234567890' + far;
  document.cookie = '_ga=GA1.1.123456789.1700000000' + far;
"""

# gtag's session cookies of two GA4 streams, in the current (GS2) and the older (GS1) format.
GA_SESSIONS = """
  var far = '; domain=example.test; path=/; max-age=3600; samesite=lax; secure';
  document.cookie = '_ga_ABC123XYZ=GS2.1.s1767225000$o3$g1$t1767225100$j60$l0$h0' + far;
  document.cookie = '_ga_OLD1=GS1.1.1767000000.9.1.1767000100.0.0.0' + far;
"""
# Every page records the `fp:page` events it hears, from before fp.js loads.
LISTEN = "window.heard = []; addEventListener('fp:page', function (e) { heard.push(e.detail); });"


def site_app(tracker: str, dead: str, key: str) -> Starlette:
    """The marketing site: every path is one page, shaped by its query string.

    stub=1 queues calls before fp.js loads; tracker=dead loads fp.js from a dead host;
    collector=dead loads it but posts to a dead host; nofetch=1 removes fetch (sendBeacon path);
    unload=ID tracks an event with that id on pagehide; pixels=1 sets pixel cookies first;
    ga=1 sets GA4 session cookies; early=ID calls track() through the stub before fp.js loads.
    """

    async def page(request: Request) -> HTMLResponse:
        q = request.query_params
        setup, after = [LISTEN], []
        if q.get("ga"):
            setup.append(GA_SESSIONS)
        if q.get("nofetch"):
            setup.append("window.fetch = undefined;")
        if q.get("pixels"):
            setup.append(PIXEL_COOKIES)
        if q.get("early"):
            after.append(
                f"window.earlyId = firstparty.track('Early', {{}}, {{event_id: '{q['early']}'}});"
            )
        if q.get("unload"):
            after.append(
                "addEventListener('pagehide', function () {"
                f" firstparty.track('Unload', {{}}, {{event_id: '{q['unload']}'}}); }});"
            )
        if q.get("tracker") == "dead":
            after.append("window.deadId = firstparty.track('Dead');")
        src = (dead if q.get("tracker") == "dead" else tracker) + "/fp.js"
        host = f'data-host="{dead}"' if q.get("collector") == "dead" else ""
        html = PAGE.format(
            title=f"Site {request.url.path}",
            stub=STUB if q.get("stub") or q.get("early") or q.get("tracker") else "",
            setup="\n".join(setup),
            src=src,
            key=key,
            host=host,
            after="\n".join(after),
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/{path:path}", page)])
