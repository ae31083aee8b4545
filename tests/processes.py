"""Waiting for a server process the test started (firstparty serve, nginx, HAProxy)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest


def wait_answering(
    url: str, proc: subprocess.Popen[Any], log: Callable[[], str], *, path: str = "/healthz"
) -> None:
    """Until `url + path` answers 200 (up to ~30 s); fail with the process's log if it exits."""
    for _ in range(300):
        if proc.poll() is not None:
            pytest.fail(f"{url} exited {proc.returncode}: {log()}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer: {log()}")
