"""The fuzz runs' server (`firstparty serve` on SQLite, with known keys) and their tally.

Both fuzzers send to one real server process for the whole session; the terminal summary
prints how many requests they sent and how many were answered with a 5xx (the target is 0).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import BROWSER_KEY, SECRET, SERVER_KEY
from tests.test_cli import BIN, clean_env, free_port

ADMIN_TOKEN = "admin-token-for-the-fuzz-runs-" + "f" * 16
HEADERS = {"X-Write-Key": SERVER_KEY, "Authorization": f"Bearer {ADMIN_TOKEN}"}
CONFIG = f"""
secret_key = "{SECRET}"
admin_token = "{ADMIN_TOKEN}"
demo = true

[collect]
rate_limit_per_second = 100000
rate_limit_burst = 100000
per_address_per_second = 100000
per_address_burst = 100000

[[sources]]
name = "www"
kind = "browser"
write_key = "{BROWSER_KEY}"
origins = ["https://www.example.test"]

[[sources]]
name = "crm"
kind = "server"
write_key = "{SERVER_KEY}"
"""

TALLY: Counter[str] = Counter()  # "requests", "5xx", per fuzzer: "<name> requests"


def count(fuzzer: str, status: int) -> None:
    TALLY["requests"] += 1
    TALLY[f"{fuzzer} requests"] += 1
    if status >= 500:
        TALLY["5xx"] += 1


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def crashes(self) -> str:
        """The server's own lines about failures (one per 500, with its error id)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "error" in line.lower())[-4000:]


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("fuzz")
    (home / "firstparty.toml").write_text(CONFIG)
    port, log = free_port(), home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*BIN, "serve", "--port", str(port)], cwd=home, env=clean_env(), stdout=out, stderr=out
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        for _ in range(300):
            try:
                if httpx.get(server.url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(f"the fuzz server did not start:\n{log.read_text()}")
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY["requests"]:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(TALLY.items()) if " " in k)
        terminalreporter.write_line(
            f"fuzz: {TALLY['requests']} requests sent, {TALLY['5xx']} answered 5xx ({parts})"
        )
