"""`/fp.js` and `/fp.<hash>.js`: minified, gzipped on request, cached by content hash."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from firstparty.tracker import serve


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=Starlette(routes=serve.routes))
    async with httpx.AsyncClient(transport=transport, base_url="https://t.example.test") as c:
        yield c


async def test_fp_js_is_minified_short_cached_and_tagged(client: httpx.AsyncClient) -> None:
    bundle = serve.bundle()
    response = await client.get("/fp.js", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == bundle.minified
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["etag"] == f'"{bundle.digest}"'
    assert "content-encoding" not in response.headers
    assert "firstparty.track" not in response.text  # comments are gone
    assert len(bundle.minified) < bundle.raw_size


async def test_gzip_when_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get("/fp.js", headers={"Accept-Encoding": "gzip, br"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.content == serve.bundle().minified  # the client decoded it


async def test_revalidation_answers_304(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/fp.js")).headers["etag"]
    response = await client.get("/fp.js", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""


async def test_versioned_url_is_immutable(client: httpx.AsyncClient) -> None:
    bundle = serve.bundle()
    response = await client.get(bundle.path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.content == bundle.minified


async def test_an_old_hash_gets_the_current_script_briefly_cached(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/fp.0123456789ab.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.content == serve.bundle().minified


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("br, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("deflate, br", False),
        ("", False),
        ("gzip;q=x", False),
    ],
)
def test_accept_encoding(header: str, expected: bool) -> None:
    assert serve.accepts_gzip(header) is expected


def test_build_is_deterministic_and_within_budget(tmp_path: Path) -> None:
    source = tmp_path / "fp.js"
    source.write_text("/* comment */\nconst a = 1;\n")
    first, second = serve.build(source), serve.build(source)
    assert first == second
    assert first.minified == b"const a=1;"
    assert gzip.decompress(first.gzipped) == first.minified
    assert len(serve.bundle().gzipped) < serve.LIMIT_GZIPPED
