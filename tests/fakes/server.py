"""A real HTTP server on 127.0.0.1 (random port) standing in for an ad platform in tests.

Write a fake by subclassing `FakeServer` and overriding `handle(request) -> Reply`, which checks
the request against the platform's documented rules and answers with the platform's own bodies:

    class FakeThing(FakeServer):
        def handle(self, request: Received) -> Reply:
            if request.headers.get("authorization") != "Bearer good":
                return Reply(401, {"error": "bad token"})
            return Reply(200, {"ok": True})

    with FakeThing() as fake:                 # starts on a free port, stops on exit
        adapter = registry.adapter_for(settings_with(api_base=fake.url))
        response = send(adapter.build(events)[0])
        assert fake.requests[0].json()["..."] == ...

Every request is recorded in `fake.requests` (also the scripted ones). To make the platform fail,
queue replies with `fake.script(Reply(503), Reply(429, headers={"Retry-After": "30"}))`: each
following request gets the next scripted reply instead of `handle()`, until the queue is empty.
`send()` plays the worker's part: it sends an `OutgoingRequest` over real HTTP and returns the
`base.Response` that `interpret()` takes.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx

from firstparty.destinations import base


@dataclass(frozen=True)
class Received:
    """One request as the fake received it; header names lowercased."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """The fake's answer; a dict or list body is sent as JSON, bytes as they are."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        if self.body is None or isinstance(self.body, bytes):
            return self.body or b"", dict(self.headers)
        return json.dumps(self.body).encode(), {"Content-Type": "application/json", **self.headers}


class FakeServer:
    """Base of the platform fakes: serving, recording and scripted failures."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Base URL once started, e.g. http://127.0.0.1:54321 (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the fake is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle(self, request: Received) -> Reply:
        """The platform's answer to a request; subclasses implement the platform's rules."""
        raise NotImplementedError

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, instead of `handle()`."""
        with self._lock:
            self._script.extend(replies)

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1, serving from a background thread."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _answer(self, request: Received) -> Reply:
        with self._lock:
            self.requests.append(request)
            scripted = self._script.popleft() if self._script else None
        return scripted if scripted is not None else self.handle(request)


def _handler_for(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            parts = urlsplit(self.path)
            request = Received(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length),
            )
            try:
                reply = fake._answer(request)
            except Exception as exc:  # a bug in the fake: say so instead of hanging the test
                reply = Reply(599, f"fake failed: {exc!r}".encode())
            body, headers = reply.encoded()
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler


def send(request: base.OutgoingRequest) -> base.Response:
    """Send a built request over real HTTP, as the worker would, and return what came back."""
    content = json.dumps(request.json).encode() if request.json is not None else request.body
    with httpx.Client(timeout=10) as http:
        answer = http.request(
            request.method, request.url, headers=dict(request.headers), content=content
        )
    return base.Response(answer.status_code, dict(answer.headers), answer.content)
