"""Benchmark of the ingest path: `python bench/ingest.py` prints events/s, latency and RSS.

For each database (SQLite, PostgreSQL) it runs `firstparty serve` (one process, pinned to core
0) and drives `POST /v1/events` from core 1 on 127.0.0.1: wrk at saturation (64 connections),
then an open-loop 1,000 events/s for p50/p99. Two floors are measured in the same run, on the
same uvicorn (uvloop + httptools): the raw ASGI floor (a bare ASGI callable that decodes the
body with msgspec and answers 202 with a cookie: ../shared/bench/raw_floor.py, else the copy in
bench/raw_floor.py) and Starlette's (bench/floor.py). The commit is done before each 202 (group
commit), as in production. Every request carries a browser's User-Agent (the server judges
robots by it). Target: durable ingest >= 50 % of the raw floor, p99 <= 20 ms at 1,000 events/s,
RSS <= 150 MB. Bounded: about a minute per target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
KEY = "wk_bench_browser_key"
ORIGIN = "https://www.example.test"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
RAW_FLOOR = (ROOT.parent / "shared" / "bench" / "raw_floor.py", ROOT / "bench" / "raw_floor.py")
TARGET_RATIO, TARGET_P99_MS, TARGET_RSS_MB = 0.50, 20.0, 150.0
BODY = json.dumps(
    {
        "type": "track",
        "name": "Lead",
        "url": "https://www.example.test/apply?gclid=Cj0KCQ123&utm_source=google",
        "referrer": "https://www.google.com/",
        "properties": {"value": 49.0, "currency": "USD", "plan": "pro"},
        "consent": {"ad_user_data": "granted", "ad_personalization": "granted"},
        "context": {"fbp": "fb.1.1700000000000.123456789"},
    }
)
CONFIG = f"""
[cookie]
domain = "example.test"

[collect]
# One load generator on 127.0.0.1 plays every visitor: the limit is checked, never reached.
per_address_per_second = 1000000
per_address_burst = 1000000

[[sources]]
name = "www"
kind = "browser"
write_key = "{KEY}"
origins = ["{ORIGIN}"]
rate_limit_per_second = 1000000
rate_limit_burst = 1000000
"""
LUA = f"""
wrk.method = "POST"
wrk.body = [[{BODY}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Write-Key"] = "{KEY}"
wrk.headers["Origin"] = "{ORIGIN}"
wrk.headers["User-Agent"] = "{USER_AGENT}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if shutil.which("taskset") else cmd


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    now = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return now / 1024, peak / 1024


def wait_up(url: str) -> None:
    import urllib.error
    import urllib.request

    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return
        except urllib.error.HTTPError:  # answering (the raw floor answers a GET with an error)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start")


def run_wrk(url: str, path: str, seconds: int, lua: Path) -> dict[str, float]:
    out = subprocess.run(
        pinned(1, ["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", "-s", str(lua), url + path]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rate,
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def fixed_rate(url: str, rate: int, seconds: int) -> dict[str, float]:
    """Open loop: requests start on schedule whatever the answers do; latency from schedule."""
    latencies: list[float] = []
    errors = 0
    headers = {
        "X-Write-Key": KEY,
        "Origin": ORIGIN,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(due: float) -> None:
            nonlocal errors
            async with session.post(url + "/v1/events", data=BODY, headers=headers) as r:
                await r.read()
                if r.status != 202:
                    errors += 1
            latencies.append((time.perf_counter() - due) * 1000)

        start = time.perf_counter()
        tasks = []
        for i in range(rate * seconds):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "errors": float(errors),
    }


def start(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        pinned(0, cmd), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def postgres_url() -> tuple[str, Any]:
    import sqlalchemy as sa

    from firstparty.store import db

    base = os.environ.get("FIRSTPARTY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    name = f"fp_bench_{os.getpid()}"
    admin = db.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    return f"{base}/{name}", drop


def raw_floor() -> Path:
    """The raw ASGI floor's script: the shared one beside the repository, else bench's copy."""
    return next(path for path in RAW_FLOOR if path.exists())


def floor_command(label: str, port: int) -> list[str]:
    script = raw_floor() if label == RAW else ROOT / "bench" / "floor.py"
    return [sys.executable, str(script), str(port)]


RAW, STARLETTE = "raw ASGI floor", "Starlette floor"


def bench_target(label: str, db_url: str | None, seconds: int, work: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    env.update(FIRSTPARTY_SECRET_KEY="b" * 48, FIRSTPARTY_CONFIG=str(work / "bench.toml"))
    if db_url is None:  # a floor: a bare endpoint of the same uvicorn
        cmd, path = floor_command(label, port), "/floor"
    else:
        env["FIRSTPARTY_DATABASE_URL"] = db_url
        if not db_url.startswith("sqlite"):
            subprocess.run(
                [sys.executable, "-m", "firstparty.cli", "migrate"], env=env, check=True,
                capture_output=True,
            )  # fmt: skip
        cmd = [sys.executable, "-m", "firstparty.cli", "serve", "--port", str(port)]
        path = "/v1/events"
    proc = start(cmd, env, work)
    try:
        wait_up(url)
        lua = work / "post.lua"
        saturation = run_wrk(url, path, seconds, lua)
        steady = asyncio.run(fixed_rate(url, 1000, seconds)) if db_url else None
        now, peak = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"label": label, "saturation": saturation, "steady": steady, "rss": now, "peak": peak}


def verdict(result: dict[str, Any], raw: float) -> str:
    """PASS when the target holds: >= 50 % of the raw floor, p99 at 1,000/s, peak RSS."""
    steady = result["steady"]
    misses = []
    if result["saturation"]["rps"] < TARGET_RATIO * raw:
        misses.append("rate")
    if steady["p99"] > TARGET_P99_MS:
        misses.append("p99")
    if result["peak"] > TARGET_RSS_MB:
        misses.append("RSS")
    return "PASS" if not misses else "FAIL (" + ", ".join(misses) + ")"


def report(results: list[dict[str, Any]], seconds: int) -> None:
    raw = results[0]["saturation"]["rps"]
    starlette = results[1]["saturation"]["rps"]
    print(
        "\nbench/ingest: POST /v1/events, 1 server process (core 0), load from core 1,",
        f"{seconds}s each; raw floor: {raw_floor()}",
    )
    print(
        f"{'target':<18}{'req/s':>8}{'% raw':>7}{'% Star':>7}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'@1000/s p50':>12}{'p99':>9}{'RSS MB':>8}{'peak':>6}{'errors':>7}  target"
    )
    for r in results:
        s, steady = r["saturation"], r["steady"]
        fixed = f"{steady['p50']:>12.1f} {steady['p99']:>8.1f}" if steady else f"{'-':>12}{'-':>9}"
        errors = s["errors"] + (steady["errors"] if steady else 0)
        print(
            f"{r['label']:<18}{s['rps']:>8.0f}{100 * s['rps'] / raw:>6.0f}%"
            f"{100 * s['rps'] / starlette:>6.0f}%{s['p50']:>8.1f}{s['p99']:>8.1f}{fixed}"
            f"{r['rss']:>8.0f}{r['peak']:>6.0f}{errors:>7.0f}  {verdict(r, raw) if steady else ''}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine skews it)")
    print(
        f"targets: >= {TARGET_RATIO:.0%} of the raw floor (same run), p99 <= {TARGET_P99_MS:.0f} ms"
        f" at 1000/s, peak RSS <= {TARGET_RSS_MB:.0f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/ingest needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    if not any(path.exists() for path in RAW_FLOOR):
        print(
            f"bench/ingest needs the raw floor at {RAW_FLOOR[0]} or {RAW_FLOOR[1]}", file=sys.stderr
        )
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "bench.toml").write_text(CONFIG)
        (work / "post.lua").write_text(LUA)
        results.append(bench_target(RAW, None, args.seconds, work))
        results.append(bench_target(STARLETTE, None, args.seconds, work))
        for engine in args.engines.split(","):
            if engine == "sqlite":
                results.append(
                    bench_target("sqlite", f"sqlite:///{work}/bench.db", args.seconds, work)
                )
            elif engine == "postgresql":
                url, drop = postgres_url()
                try:
                    results.append(bench_target("postgresql", url, args.seconds, work))
                finally:
                    drop()
    report(results, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
