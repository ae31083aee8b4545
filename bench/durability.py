"""What `synchronous=FULL` costs the embedded SQLite default: `python bench/durability.py`.

Runs `firstparty serve` on SQLite (one process, core 0) and drives `POST /v1/events` from this
process on 127.0.0.1: closed loop at 64 connections (saturation), then an open-loop 1,000
events/s for p50/p99. `--code DIR` runs another checkout (e.g. one with synchronous=NORMAL) for
the comparison. Needs no wrk. Bounded: about 2 x `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from ingest import BODY, CONFIG, KEY, ORIGIN, fixed_rate, free_port, start, wait_up


async def saturation(url: str, seconds: int, connections: int = 64) -> dict[str, float]:
    """Closed loop: each connection sends its next event when the last is answered."""
    latencies: list[float] = []
    errors = 0
    headers = {"X-Write-Key": KEY, "Origin": ORIGIN, "Content-Type": "application/json"}
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                began = time.perf_counter()
                async with s.post(url + "/v1/events", data=BODY, headers=headers) as r:
                    await r.read()
                    errors += r.status != 202
                latencies.append((time.perf_counter() - began) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "errors": float(errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--code", help="run the firstparty package of this checkout")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    if args.code:
        env["PYTHONPATH"] = str(Path(args.code).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "bench.toml").write_text(CONFIG)
        env["FIRSTPARTY_CONFIG"] = str(work / "bench.toml")
        env["FIRSTPARTY_DATABASE_URL"] = f"sqlite:///{work}/bench.db"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start(
            [sys.executable, "-m", "firstparty.cli", "serve", "--port", str(port)], env, work
        )
        try:
            wait_up(url)
            closed = asyncio.run(saturation(url, args.seconds))
            steady = asyncio.run(fixed_rate(url, 1000, args.seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"bench/durability ({args.code or 'this checkout'}), SQLite, {args.seconds}s each")
    for label, r in (("saturation (64 conn)", closed), ("open loop 1000/s", steady)):
        print(
            f"{label:<22}{r['rps']:>8.0f} events/s  p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms"
            f"  errors {r['errors']:.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
