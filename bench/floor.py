"""The floor for bench/ingest: a bare endpoint of the same stack, answering 202 with a cookie."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def floor(request: Request) -> Response:
    await request.body()
    response = Response(b'{"ok":true}', 202, media_type="application/json")
    response.headers["set-cookie"] = "fp_id=x; Max-Age=34560000; Path=/; HttpOnly; SameSite=Lax"
    return response


app = Starlette(routes=[Route("/floor", floor, methods=["POST"]), Route("/healthz", floor)])

if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
        log_level="warning",
    )  # fmt: skip
