"""The raw ASGI floor that durable ingest is measured against: `python raw_floor.py PORT`.

A bare ASGI callable on uvicorn (uvloop, httptools) that reads the body, decodes it with
msgspec into a small struct and answers 202 with a cookie. Run it pinned to one core and
drive it with wrk from the other, in the same run as the project's own endpoint.

The same program as ../shared/bench/raw_floor.py (bench/ingest.py prefers that one when it is
there), formatted to this repository's lint rules.
"""

import sys
from typing import Any

import msgspec
import uvicorn


class Ev(msgspec.Struct):
    type: str
    name: str | None = None
    url: str | None = None
    referrer: str | None = None
    properties: dict[str, Any] = {}
    consent: dict[str, Any] = {}
    context: dict[str, Any] = {}


dec = msgspec.json.Decoder(Ev)
HDR = [
    (b"content-type", b"application/json"),
    (b"set-cookie", b"fp_id=x; Max-Age=34560000; Path=/; HttpOnly; SameSite=Lax"),
]


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        m = await receive()
        body += m.get("body", b"")
        more = m.get("more_body", False)
    try:
        dec.decode(body)
        status = 202
    except msgspec.ValidationError:
        status = 422
    await send({"type": "http.response.start", "status": status, "headers": HDR})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
