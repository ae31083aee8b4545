"""Bodies and headers are limited before anything else reads them (firstparty/api/limits.py)."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from firstparty.api import limits
from firstparty.app import route_modules
from tests.conftest import SECRET, SERVER_KEY, AppClient
from tests.test_cli import BIN, clean_env, free_port

CHUNK = 64 * 1024
HUGE = 800 * 1024 * 1024  # what a client offers; never read
POSTS = sorted(
    {r.path for m in route_modules() for r in m if isinstance(r, Route) and "POST" in r.methods}
)


class Offered:
    """A huge body handed out chunk by chunk, counting what the server pulled."""

    def __init__(self) -> None:
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled * CHUNK < HUGE:
            self.pulled += 1
            yield b"x" * CHUNK


def _limit(client: AppClient, path: str) -> int:
    return limits.table(client.settings.collect)(path).bytes


@pytest.mark.parametrize("path", POSTS)
async def test_a_huge_streamed_body_is_refused_at_the_limit(
    sqlite_client: AppClient, path: str
) -> None:
    """No Content-Length: the body is counted as it streams; reading stops at the limit."""
    offered = Offered()
    token = "Bearer admin-token-for-tests"
    headers = {"X-Write-Key": SERVER_KEY, "authorization": token, "content-type": "text/plain"}
    if path.startswith("/admin/"):
        headers["content-type"] = "application/x-www-form-urlencoded"
    r = await sqlite_client.http.post(path, content=offered, headers=headers)
    read = offered.pulled * CHUNK
    assert read <= _limit(sqlite_client, path) + CHUNK, (path, read)
    # Either refused at the limit, or turned away (not signed in) before reading.
    assert r.status_code in (413, 400, 303, 401, 403), (path, r.status_code, r.text)
    if r.status_code in (413, 400):
        assert "larger than" in r.text


@pytest.mark.parametrize("path", [*POSTS, "/healthz", "/nowhere"])
async def test_a_declared_length_above_the_limit_is_refused_unread(
    sqlite_client: AppClient, path: str
) -> None:
    offered = Offered()
    headers = {"content-length": str(HUGE), "X-Write-Key": SERVER_KEY}
    r = await sqlite_client.http.post(path, content=offered, headers=headers)
    assert offered.pulled == 0
    expected = 400 if path.startswith("/segment/") else 413
    assert r.status_code == expected and "larger than" in r.text, (path, r.text)
    assert r.headers["connection"] == "close"


async def test_admin_sign_in_form_is_refused_json(sqlite_client: AppClient) -> None:
    offered = Offered()
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = await sqlite_client.http.post("/admin/login", content=offered, headers=form)
    assert (
        r.status_code == 413 and r.json()["error"] == f"body larger than {limits.FORM_BYTES} bytes"
    )
    assert offered.pulled <= limits.FORM_BYTES // CHUNK + 1


async def test_a_body_within_the_limit_is_read_whole(sqlite_client: AppClient) -> None:
    body = b'{"events":[' + b",".join([b'{"type":"page"}'] * 400) + b"]}"
    r = await sqlite_client.http.post(
        "/v1/batch", content=body, headers={"X-Write-Key": SERVER_KEY}
    )
    assert r.status_code == 200 and len(r.json()["results"]) == 400


# --- the real server: `firstparty serve` (uvicorn + httptools) ---------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    (tmp_path / "firstparty.toml").write_text(
        f'secret_key = "{SECRET}"\n\n[[sources]]\nname = "crm"\nkind = "server"\n'
        f'write_key = "{SERVER_KEY}"\n'
    )
    proc = subprocess.Popen(
        [*BIN, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _exchange(port: int, head: bytes, body: Iterable[bytes] = ()) -> bytes:
    """Send a raw request (head, then body chunks until the server answers); its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(head)
            for chunk in body:
                if select.select([s], [], [], 0)[0]:
                    break  # the server answered before the body's end: stop sending
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: read what it said
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while data := s.recv(65536):
                answer += data
        return answer


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_serve_refuses_a_100_kb_header_and_stays_up(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = served
    big = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    answer = _exchange(port, big)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"request headers larger than" in answer
    ok = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200") and proc.poll() is None


def test_serve_reads_a_huge_chunked_sign_in_no_further_than_its_limit(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    """800 MB offered to /admin/login, chunked: a 413, and the server's memory does not grow."""
    port, proc = served
    before = _rss_kib(proc.pid)
    head = (
        b"POST /admin/login HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    piece = b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK)
    sent = []
    offered = (sent.append(1) or piece for _ in range(HUGE // CHUNK))
    answer = _exchange(port, head, offered)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert len(sent) * CHUNK < 16 * 1024 * 1024, "the server read on past its limit"
    assert b"body larger than" in answer
    assert _rss_kib(proc.pid) - before < 32 * 1024, "the server grew by more than 32 MiB"
    ok = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")


def test_serve_keeps_large_bodies_and_many_requests_on_one_connection(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    """The head cap counts heads only: a 400 KB body, sent in many reads, and the requests that
    follow it on the same connection are answered as usual."""
    port, _ = served
    events = b",".join(
        [b'{"type":"page","url":"https://www.example.test/' + b"p" * 900 + b'"}'] * 400
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        for _ in range(3):
            body = b'{"events":[' + events + b"]}"
            r = http.post("/v1/batch", content=body, headers={"X-Write-Key": SERVER_KEY})
            assert r.status_code == 200 and len(r.json()["results"]) == 400, r.text[:300]
            assert http.get("/healthz").status_code == 200
