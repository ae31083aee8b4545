"""`GET /fp.js` and `GET /fp.<hash>.js`: the tracker, minified once per process, gzipped if asked.

Caching: `/fp.js` is the URL in every snippet, so it is cached for five minutes and revalidated
by ETag (a fix reaches all sites within minutes; a revalidation costs a 304). `/fp.<hash>.js`
never changes, so it is cached for a year as immutable; an old hash gets today's script with
the short policy, so a page naming it keeps working after an upgrade.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import rjsmin  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SOURCE = Path(__file__).with_name("fp.js")
LIMIT_GZIPPED = 2048
SHORT = "public, max-age=300"
IMMUTABLE = "public, max-age=31536000, immutable"
MEDIA_TYPE = "text/javascript; charset=utf-8"


@dataclass(frozen=True)
class Bundle:
    """The tracker as served: raw source size, minified bytes, their gzip, and a content hash."""

    raw_size: int
    minified: bytes
    gzipped: bytes
    digest: str

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'

    @property
    def path(self) -> str:
        """The immutable URL path of this version."""
        return f"/fp.{self.digest}.js"


def build(source: Path = SOURCE) -> Bundle:
    """Minify and gzip the tracker source (mtime 0, so the gzip is the same on every start)."""
    raw = source.read_bytes()
    minified = str(rjsmin.jsmin(raw.decode("utf-8"))).encode("utf-8")
    digest = hashlib.sha256(minified).hexdigest()[:12]
    return Bundle(len(raw), minified, gzip.compress(minified, 9, mtime=0), digest)


@functools.cache
def bundle() -> Bundle:
    """The packaged tracker, built on first use and kept for the life of the process."""
    return build()


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (with a q-value above zero)."""
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() == "gzip":
            _, _, q = params.partition("q=")
            try:
                return float(q.strip() or 1) > 0
            except ValueError:
                return False
    return False


def respond(request: Request, current: Bundle, cache_control: str) -> Response:
    """The script (or 304) with its caching headers."""
    headers = {
        "Cache-Control": cache_control,
        "ETag": current.etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if current.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = current.minified
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        body = current.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, 200, headers=headers, media_type=MEDIA_TYPE)


async def script(request: Request) -> Response:
    return respond(request, bundle(), SHORT)


async def versioned(request: Request) -> Response:
    current = bundle()
    fresh = request.path_params["digest"] == current.digest
    return respond(request, current, IMMUTABLE if fresh else SHORT)


routes: list[Route] = [
    Route("/fp.js", script, methods=["GET", "HEAD"]),
    Route("/fp.{digest}.js", versioned, methods=["GET", "HEAD"]),
]
