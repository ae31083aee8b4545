"""A fake ad platform / webhook receiver: a real aiohttp server on 127.0.0.1, scriptable."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers from a script: queued failures first, then 200 (minus per-event rejections)."""

    failures: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    delay: float = 0.0
    hold: asyncio.Event | None = None  # while set to an unset Event, requests wait
    hold_from: int = 0  # ...those after the first `hold_from` requests (earlier ones answer)
    reject: dict[str, str] = field(default_factory=dict)  # event_id -> reason
    seen: list[Seen] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)  # events answered 200
    token_requests: int = 0
    url: str = ""
    held: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._events)
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def fail(self, times: int, status: int, headers: dict[str, str] | None = None) -> None:
        for _ in range(times):
            self.failures.append((status, headers or {}))

    def event_ids(self) -> list[str]:
        return [e["event_id"] for e in self.accepted]

    async def _answer_script(self, request: web.Request) -> web.Response | None:
        body = await request.read()
        self.seen.append(Seen(request.path, request.query_string, dict(request.headers), body))
        if self.hold is not None and not self.hold.is_set() and len(self.seen) > self.hold_from:
            self.held += 1
            await self.hold.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            status, headers = self.failures.popleft()
            return web.json_response(
                {"error": f"scripted {status}"}, status=status, headers=headers
            )
        return None

    async def _events(self, request: web.Request) -> web.Response:
        failed = await self._answer_script(request)
        if failed is not None:
            return failed
        events = json.loads(self.seen[-1].body)["events"]
        rejected = {
            e["event_id"]: self.reject[e["event_id"]]
            for e in events
            if e["event_id"] in self.reject
        }
        self.accepted += [e for e in events if e["event_id"] not in rejected]
        return web.json_response({"ok": True, "rejected": rejected})

    async def _hook(self, request: web.Request) -> web.Response:
        failed = await self._answer_script(request)
        if failed is not None:
            return failed
        self.accepted.append(json.loads(self.seen[-1].body))
        return web.json_response({"ok": True})

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        body = await request.json()
        if body.get("client_secret") != "fake-api-key-0123456789":
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response(
            {"access_token": f"tok-{self.token_requests}-secret", "expires_in": 3600}
        )
