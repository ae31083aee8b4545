"""A running `firstparty serve` for the real-SDK tests, with a fake destination and a flaky proxy.

The config has a server source, a browser source and a `fake` destination whose `api_base` is
a local receiver, so each test can see events arrive through the whole pipeline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.server import FakeServer, Received, Reply
from tests.test_cli import clean_env, free_port

SERVER_KEY = "sk_segment_sdk_test_key"
BROWSER_KEY = "wk_segment_browser_key"
SITE_HOST = "www.example.test"
TRACKER_HOST = "t.example.test"
NODE_DIR = Path(__file__).with_name("node")


class Receiver(FakeServer):
    """The fake destination's platform: accepts every batch."""

    def handle(self, request: Received) -> Reply:
        return Reply(200, {})

    def event_ids(self) -> list[str]:
        """Every event id delivered so far (repeats included)."""
        return [e["event_id"] for r in list(self.requests) for e in r.json()["events"]]


class FlakyProxy(FakeServer):
    """Forwards to firstparty, but answers the first `failures` requests 503 after forwarding.

    That is a lost answer: the SDK retries a batch firstparty has already stored.
    """

    def __init__(self, target: str, failures: int) -> None:
        super().__init__()
        self.target = target
        self.failures = failures
        self._count_lock = threading.Lock()

    def handle(self, request: Received) -> Reply:
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        answer = httpx.request(
            request.method, self.target + request.path, content=request.body, headers=headers
        )
        with self._count_lock:
            failing = self.failures > 0
            self.failures -= 1 if failing else 0
        if failing:
            return Reply(503, {"success": False, "code": "unavailable", "message": "proxy"})
        return Reply(answer.status_code, answer.content, {"Content-Type": "application/json"})


@dataclass
class Stack:
    url: str
    db: Path
    receiver: Receiver
    site_port: int

    def events(self) -> list[dict[str, Any]]:
        """Stored events (event_id, type, name, source, visitor_id, user_id)."""
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            conn.row_factory = sqlite3.Row
            query = "SELECT event_id, type, name, source, visitor_id, user_id FROM events"
            return [dict(row) for row in conn.execute(query)]

    def event_ids(self, source: str = "crm") -> list[str]:
        return sorted(e["event_id"] for e in self.events() if e["source"] == source)


def wait_until(condition: Callable[[], Any], what: str, limit: float = 60.0) -> Any:
    """Poll until `condition()` is truthy and return it; fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)
    return value


def require(what: str, missing: str | None) -> None:
    """Skip with the reason when a tool is missing; under CI=true that is a failure."""
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} cannot run: {missing}", pytrace=False)
    pytest.skip(missing)


def node_modules() -> Path:
    """tests/segment/node/node_modules, installed from package-lock.json on first use."""
    require("the Node.js SDK tests", _missing_node())
    modules = NODE_DIR / "node_modules"
    if not (modules / "@segment" / "analytics-node").exists():
        npm = [shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        done = subprocess.run(npm, cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            require("the Node.js SDK tests", f"npm ci failed in {NODE_DIR}: {done.stderr[-500:]}")
    return modules


def _missing_node() -> str | None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Node.js 18+ with npm)"
    return None


def _config(tmp: Path, receiver: str, site_port: int) -> Path:
    origin = f"http://{SITE_HOST}:{site_port}"
    text = f"""
database_url = "sqlite:///{tmp / "firstparty.db"}"

[cookie]
domain = "example.test"
secure = false

[[sources]]
name = "crm"
kind = "server"
write_key = "env:SEG_SERVER_KEY"

[[sources]]
name = "www"
kind = "browser"
write_key = "env:SEG_BROWSER_KEY"
origins = ["{origin}"]

[[destinations]]
name = "fake"
type = "fake"
api_base = "{receiver}"
"""
    path = tmp / "firstparty.toml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def running(tmp: Path, site_port: int = 0) -> Iterator[Stack]:
    """`firstparty serve` on a free port of 127.0.0.1, with its receiver; stopped afterwards.

    The browser source allows the origin http://www.example.test:<site_port>.
    """
    with Receiver() as receiver:
        port = free_port()
        env = {
            **clean_env(),
            "FIRSTPARTY_CONFIG": str(_config(tmp, receiver.url, site_port)),
            "SEG_SERVER_KEY": SERVER_KEY,
            "SEG_BROWSER_KEY": BROWSER_KEY,
        }
        command = [sys.executable, "-m", "firstparty.cli", "serve", "--port", str(port)]
        log = (tmp / "serve.log").open("w")
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _healthy(url, proc), "firstparty serve to start", 30)
            yield Stack(url, tmp / "firstparty.db", receiver, site_port)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()


def _healthy(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"firstparty serve exited with {proc.returncode}")
    try:
        return httpx.get(url + "/healthz").status_code == 200
    except httpx.TransportError:
        return False
