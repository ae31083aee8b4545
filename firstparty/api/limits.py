"""Size limits met before any handler reads: bodies counted as they stream, heads at the server.

`BodyLimits` (ASGI middleware) gives every path a body limit (`table`): a `Content-Length`
above it is refused before a byte is read; a body sent without one is counted as the handler
pulls it, and the pull that passes the limit raises `BodyTooLarge` (a 413 `InputError`) instead
of handing the bytes over, so no handler ever buffers more than its limit plus one chunk.

`BoundedHttpTools` is uvicorn's httptools protocol with a cap on the request line and headers
(llhttp has none of its own; uvicorn applies `h11_max_incomplete_event_size` to h11 only): a head
that passes the cap is answered `431` and the connection closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from firstparty.api import otp, segment
from firstparty.collect import segment as mapping
from firstparty.errors import InputError
from firstparty.settings import CollectSettings

FORM_BYTES = 16 * 1024  # the admin UI's forms, and any path not named in the table
ADMIN_API_BYTES = 64 * 1024  # /v1/admin/*: a few filters as JSON
HEAD_BYTES = 64 * 1024  # request line + headers: the site's own cookies come to the collect host


class BodyTooLarge(InputError):
    """The body passed its path's limit while streaming."""


def too_large(limit: int) -> Response:
    """The answer of the JSON APIs: the error body every other 4xx has."""
    return JSONResponse({"error": f"body larger than {limit} bytes", "details": []}, 413)


def segment_too_large(limit: int) -> Response:
    """Segment's shape and status (a 400 `invalid_request`), as its SDKs expect."""
    return segment.error_response(InputError(400, f"body larger than {limit} bytes"))


@dataclass(frozen=True)
class Limit:
    bytes: int
    refuse: Callable[[int], Response] = too_large


def table(collect: CollectSettings) -> Callable[[str], Limit]:
    """The body limit of each path: collect keeps its [collect] limits, forms are small."""
    exact = {
        "/v1/events": Limit(collect.max_event_bytes),
        "/v1/batch": Limit(collect.max_batch_bytes),
        "/v1/otp/start": Limit(otp.MAX_BODY),
        "/v1/otp/verify": Limit(otp.MAX_BODY),
        f"{segment.PREFIX}/batch": Limit(mapping.MAX_BATCH_BYTES, segment_too_large),
        f"{segment.PREFIX}/b": Limit(mapping.MAX_BATCH_BYTES, segment_too_large),
    }
    one_message = Limit(mapping.MAX_EVENT_BYTES, segment_too_large)
    admin_api, form = Limit(ADMIN_API_BYTES), Limit(FORM_BYTES)

    def limit_for(path: str) -> Limit:
        if path in exact:
            return exact[path]
        if path.startswith(f"{segment.PREFIX}/"):
            return one_message
        return admin_api if path.startswith("/v1/admin/") else form

    return limit_for


class BodyLimits:
    """Counts each request body as it streams; refuses it at its path's limit (module doc)."""

    def __init__(self, app: ASGIApp, *, limits: Callable[[str], Limit]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits(scope["path"])
        if _declared(scope) > limit.bytes:
            await limit.refuse(limit.bytes)(scope, receive, _closing(send))
            return
        body = _Counted(receive, limit.bytes)
        await self.app(scope, body.receive, body.send(send))


def _declared(scope: Scope) -> int:
    """The Content-Length the client announced (0 when absent or not a number)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


class _Counted:
    """One request's body, counted as the app pulls it."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.seen = 0

    async def receive(self) -> Message:
        if self.seen > self.limit:
            raise BodyTooLarge(413, f"body larger than {self.limit} bytes")
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise BodyTooLarge(413, f"body larger than {self.limit} bytes")
        return message

    def send(self, send: Send) -> Send:
        """Once past the limit, the answer closes the connection (module doc)."""
        closing = _closing(send)

        async def sending(message: Message) -> None:
            await (closing if self.seen > self.limit else send)(message)

        return sending


def _closing(send: Send) -> Send:
    """The refusal closes the connection: the rest of an unread body is not waited for."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
        await send(message)

    return sending


_HEAD_REFUSED = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class HeadTooLarge(Exception):
    """Raised inside the parser's callback; answered by `send_400_response` as a 431."""


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head longer than
    `config.h11_max_incomplete_event_size` (`HEAD_BYTES` when unset) with a 431.

    The head is measured twice: exactly, as the parser hands over the URL and each header; and
    by the chunks received while a head is still incomplete (a header sent a byte at a time is
    buffered by httptools until it ends), so neither kind of head grows past the cap.
    """

    _head_bytes = 0  # URL and headers of the request being read, as parsed
    _unparsed_bytes = 0  # received since the head began, while it is incomplete
    _in_head = False
    _refusing = False

    @property
    def _cap(self) -> int:
        return self.config.h11_max_incomplete_event_size or HEAD_BYTES

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._unparsed_bytes += len(data)
            if self._unparsed_bytes > self._cap:
                self._refuse()

    def on_message_begin(self) -> None:
        self._in_head, self._head_bytes, self._unparsed_bytes = True, 0, 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self._cap:
            self._refusing = True
            raise HeadTooLarge  # httptools stops parsing; uvicorn calls send_400_response

    def send_400_response(self, msg: str) -> None:
        if self._refusing:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        body = b'{"error":"request headers larger than %d bytes","details":[]}' % self._cap
        self.transport.write(_HEAD_REFUSED % (len(body), body))
        self.transport.close()
