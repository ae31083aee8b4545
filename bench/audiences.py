"""Audience benchmark: membership and sync time and memory for a large audience.

    .venv/bin/python bench/audiences.py [--members 100000] [--database-url URL]

Writes `--members` lone visitors with three events each (a page view, a consented Lead, and for
one in ten a Purchase) through the store layer into a fresh database (SQLite in a temporary
directory unless `--database-url` names an empty PostgreSQL/MariaDB database), then times, in
this process: a first sync of the audience "Lead in the last
30 days, no Purchase in 90" to a Meta custom audience answered by a local receiver (another
process, 200 to every call), a second sync that has nothing to send, and an export in Meta's
file format (what `audiences export --format meta` writes, here to /dev/null). Each phase prints
its own peak RSS (the process's high-water mark, reset before the phase) against the RSS before
it: a sync streams the members and the acknowledgements, and an export reads them twice (its
columns, then its rows) without holding them, so no peak should follow the audience's size.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import growth  # noqa: E402  bench/growth.py: each phase's own peak RSS
import ingest as ingest_bench  # noqa: E402  bench/ingest.py: a process's RSS now and peak

from firstparty.audiences import preview, service  # noqa: E402
from firstparty.settings import Settings  # noqa: E402
from firstparty.store import db, migrate  # noqa: E402
from firstparty.store.models import events  # noqa: E402

SECRET = "bench-secret-" + "x" * 40
CHUNK = 5000


def receiver(port: int) -> None:
    """Meta's users endpoint, answering every call with its counts."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        rows = len(body["payload"]["data"])
        return web.json_response({"audience_id": "1", "num_received": rows})

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("*", "/{audience}/users", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill(url: str, members: int) -> int:
    engine = db.create_engine(url)
    migrate.upgrade(engine)
    now = datetime.now(UTC) - timedelta(hours=1)
    granted = {"ad_user_data": "granted", "ad_personalization": "granted"}
    written = 0
    rows: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for n in range(members):
            email = hashlib.sha256(f"person{n}@example.com".encode()).hexdigest()
            names = ["page", "Lead"] + (["Purchase"] if n % 10 == 0 else [])
            for i, name in enumerate(names):
                rows.append(
                    {
                        "id": f"B{n:016d}{i:09d}",
                        "source": "crm",
                        "event_id": f"bench-{n}-{i}",
                        "type": "page" if name == "page" else "track",
                        "name": name,
                        "occurred_at": now + timedelta(seconds=i),
                        "received_at": now,
                        "visitor_id": f"bench{n:012d}",
                        "user_id": None,
                        "request": {"type": "track", "name": name},
                        "response": {},
                        "user": {"em": email} if name == "Lead" else {},
                        "context": {},
                        "consent": granted,
                        "bot": None,
                    }
                )
            if len(rows) >= CHUNK:
                db.bulk_insert(conn, events, rows)
                written, rows = written + len(rows), []
        db.bulk_insert(conn, events, rows)
    engine.dispose()
    return written + len(rows)


async def run(url: str, port: int) -> None:
    settings = Settings.model_validate(
        {
            "database_url": url,
            "secret_key": SECRET,
            "destinations": [
                {
                    "name": "meta-bench",
                    "type": "meta_custom_audience",
                    "audience_id": "1",
                    "access_token": "bench-token",
                    "api_base": f"http://127.0.0.1:{port}",
                    "timeout_seconds": 120,
                }
            ],
            "audiences": [
                {
                    "name": "bench",
                    "destinations": ["meta-bench"],
                    "rules": [
                        {"did": "Lead", "within_days": 30},
                        {"did_not": "Purchase", "within_days": 90},
                    ],
                }
            ],
        }
    )
    engine = db.create_engine(url)
    pid = os.getpid()
    for label in ("first sync", "second sync"):
        growth.phase_peak(pid)  # a new peak begins
        before = ingest_bench.rss_mb(pid)[0]
        start = time.perf_counter()
        [result] = await service.sync_now(
            settings=settings, engine=engine, name="bench", trigger="command"
        )
        took = time.perf_counter() - start
        peak = growth.phase_peak(pid)
        print(
            f"{label}: {result.size:,} members, +{result.adds:,} -{result.removes:,} "
            f"errors {result.errors} in {took:.1f} s, peak RSS {peak:.0f} MB "
            f"(+{peak - before:.0f} over {before:.0f} before it)"
        )
    gc.collect()
    growth.phase_peak(pid)
    before = ingest_bench.rss_mb(pid)[0]
    start = time.perf_counter()
    with open(os.devnull, "w") as out:
        now = datetime.now(UTC)
        rows = preview.export(settings, engine, name="bench", fmt="meta", now=now, out=out)
    took = time.perf_counter() - start
    peak = growth.phase_peak(pid)
    print(
        f"export (as `audiences export --format meta`): {rows:,} rows in {took:.1f} s, "
        f"peak RSS {peak:.0f} MB (+{peak - before:.0f} over {before:.0f} before it)"
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database_url or f"sqlite:///{tmp}/bench.db"
            start = time.perf_counter()
            written = fill(url, args.members)
            took = time.perf_counter() - start
            print(f"wrote {written:,} events of {args.members:,} visitors in {took:.1f} s")
            print(f"RSS after writing: {ingest_bench.rss_mb(os.getpid())[1]:.0f} MB")
            asyncio.run(run(url, port))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--receiver":
        receiver(int(sys.argv[2]))
    else:
        main()
