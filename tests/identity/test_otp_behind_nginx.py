"""SMS pumping through a real proxy (issue 12): `firstparty serve` behind nginx, a client writing
its own X-Forwarded-For, changed on every request. The limits per address (codes, numbers,
tries) hold on the address nginx saw: spoofed entries are never taken, whether firstparty trusts
the proxy (`trust_forwarded_for = true`, `trusted_hops = 1`) or not (then every client is the
proxy). A second client on another loopback address is not held by the first one's limits.

nginx is Debian's (`/usr/sbin/nginx`, package nginx-light, installed by .ci/run), run as our own
process with its files in a temporary directory. Without it the test skips, except in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BROWSER_KEY, BROWSER_UA, SECRET, SERVER_KEY
from tests.processes import wait_answering
from tests.test_cli import BIN, clean_env, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SITE = "https://www.example.test"
PAGE = {"X-Write-Key": BROWSER_KEY, "Origin": SITE, "User-Agent": BROWSER_UA}
SPOOFED = [  # what a pumping script writes, a new value each time
    "203.0.113.{i}",
    "198.51.100.{i}, 192.0.2.{i}",
    "2001:db8::{i}",
    "10.0.0.{i}, 127.0.0.1",
    "unknown, 203.0.113.{i}",
]
LIMITS = {"sends_per_ip_per_hour": 4, "phones_per_ip_per_day": 2, "verifies_per_ip_per_hour": 3}

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def config(trust: bool) -> str:
    otp = "\n".join(f"{key} = {value}" for key, value in LIMITS.items())
    return f"""
secret_key = "{SECRET}"
admin_token = "admin-token-for-tests"

[collect]
trust_forwarded_for = {str(trust).lower()}
trusted_hops = 1

[otp]
provider = "console"
resend_interval_seconds = 0
{otp}

[[sources]]
name = "www"
kind = "browser"
write_key = "{BROWSER_KEY}"
origins = ["{SITE}"]

[[sources]]
name = "crm"
kind = "server"
write_key = "{SERVER_KEY}"
"""


@dataclass
class Proxied:
    url: str  # nginx, in front of firstparty
    trusted: bool  # [collect] trust_forwarded_for


def _nginx_or_skip() -> None:
    if os.access(NGINX, os.X_OK):
        return
    message = f"{NGINX} not found: install Debian's nginx-light (.ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(params=[True, False], ids=["trusted_hops=1", "proxy_not_trusted"])
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Proxied]:
    """`firstparty serve` (uvicorn) on a free port, nginx on another in front of it."""
    _nginx_or_skip()
    (tmp_path / "firstparty.toml").write_text(config(request.param))
    upstream, port = free_port(), free_port()
    nginx_conf = NGINX_CONF.format(home=tmp_path, port=port, upstream=upstream)
    (tmp_path / "nginx.conf").write_text(nginx_conf)
    app_log, nginx_log = tmp_path / "firstparty.log", tmp_path / "nginx.log"
    with app_log.open("wb") as out:
        app = subprocess.Popen(
            [*BIN, "serve", "--host", "127.0.0.1", "--port", str(upstream)],
            cwd=tmp_path,
            env=clean_env(),
            stdout=out,
            stderr=out,
        )
    try:
        wait_answering(f"http://127.0.0.1:{upstream}", app, partial(_text, app_log))
        with nginx_log.open("wb") as out:
            nginx = subprocess.Popen(
                [NGINX, "-p", str(tmp_path), "-c", "nginx.conf", "-e", "nginx-error.log"],
                stdout=out,
                stderr=out,
            )
        try:
            wait_answering(f"http://127.0.0.1:{port}", nginx, partial(_text, nginx_log))
            yield Proxied(f"http://127.0.0.1:{port}", request.param)
        finally:
            _stop(nginx)
    finally:
        _stop(app)


class Pumper:
    """A script posting through the proxy from one loopback address, with no cookies and a new
    X-Forwarded-For on every request."""

    def __init__(self, url: str, source: str) -> None:
        transport = httpx.HTTPTransport(local_address=source)
        self.http = httpx.Client(base_url=url, transport=transport, headers=PAGE, timeout=10)
        self.sent = 0

    def __enter__(self) -> Pumper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def post(self, path: str, body: dict[str, str]) -> httpx.Response:
        self.sent += 1
        spoofed = SPOOFED[self.sent % len(SPOOFED)].format(i=self.sent % 250 + 1)
        self.http.cookies.clear()
        return self.http.post(path, json=body, headers={"X-Forwarded-For": spoofed})

    def start(self, phone: str) -> httpx.Response:
        return self.post("/v1/otp/start", {"phone": phone})

    def verify(self, phone: str) -> httpx.Response:
        return self.post("/v1/otp/verify", {"phone": phone, "code": "000000"})


def statuses(answers: list[httpx.Response]) -> list[int]:
    return [answer.status_code for answer in answers]


def refused(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "firstparty_otp_refused_total"
    }


def test_spoofed_forwarded_for_does_not_escape_the_limits_per_address(proxied: Proxied) -> None:
    numbers = [f"+1617555{n:04d}" for n in range(500, 520)]
    with Pumper(proxied.url, "127.0.0.1") as pumper:
        two_numbers = [pumper.start(numbers[0]), pumper.start(numbers[1])]
        more_numbers = [pumper.start(n) for n in numbers[2:]]  # 18 numbers, 18 "addresses"
        same_numbers = [pumper.start(numbers[0]), pumper.start(numbers[1])]
        more_codes = [pumper.start(numbers[0]) for _ in range(10)]
        tries = [pumper.verify(numbers[0]) for _ in range(3)]
        more_tries = [pumper.verify(numbers[0]) for _ in range(10)]
    counted = refused(proxied.url)
    with Pumper(proxied.url, "127.0.0.2") as neighbour:  # another client of the same proxy
        theirs = [neighbour.start(numbers[5]), neighbour.verify(numbers[5])]

    assert statuses(two_numbers) == [202, 202]
    assert statuses(more_numbers) == [429] * 18  # phones_per_ip_per_day = 2
    assert statuses(same_numbers) == [202, 202]
    assert statuses(more_codes) == [429] * 10  # sends_per_ip_per_hour = 4
    assert statuses(tries) == [422] * 3
    assert statuses(more_tries) == [429] * 10  # verifies_per_ip_per_hour = 3
    assert (counted["phones_per_ip"], counted["per_ip"], counted["verifies_per_ip"]) == (18, 10, 10)
    for answer in (*more_numbers, *more_codes, *more_tries):  # the page can read each refusal
        assert 0 < int(answer.headers["Retry-After"]) <= 86400
        assert answer.headers["Access-Control-Allow-Origin"] == SITE
        assert answer.headers["Access-Control-Expose-Headers"] == "Retry-After"
    if proxied.trusted:
        assert statuses(theirs) == [202, 422]  # its own address, its own limits
    else:
        assert statuses(theirs) == [429, 429]  # without trust, the proxy is every client
