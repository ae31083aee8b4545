"""The C heap of long-running processes: arenas capped, large blocks mapped apart, free pages
returned (glibc)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from firstparty import heap

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="glibc only")


def test_arenas_capped_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert heap.limit_arenas()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert heap.limit_arenas()  # the mmap threshold is still ours to set
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert not heap.limit_arenas()


def test_a_large_block_freed_leaves_nothing_resident(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 19 MiB block (one argon2id sign-in) allocated and freed three times: with glibc's own
    threshold the second one comes from an arena and stays resident; with ours it never does."""
    code = (
        "import re, sys; from firstparty import heap\n"
        "if sys.argv[1] == 'tuned': heap.limit_arenas()\n"
        "def rss():\n"
        "    return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
        "before = rss()\n"
        "for _ in range(3):\n"
        "    block = bytearray(19 * 1024 * 1024); del block\n"
        "print((rss() - before) // 1024)\n"
    )

    def grown_mb(mode: str) -> int:
        run = [sys.executable, "-c", code, mode]
        return int(subprocess.run(run, capture_output=True, text=True, check=True).stdout)

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert grown_mb("glibc") >= 15  # the case this guards against, as glibc behaves here
    assert grown_mb("tuned") <= 2


def test_trim_returns_freed_pages() -> None:
    held = [bytearray(100_000) for _ in range(300)]  # 30 MB of the heap, then freed
    del held
    assert isinstance(heap.trim(), bool)  # whether pages were left to return depends on the run


async def test_trimming_runs_until_cancelled() -> None:
    task = asyncio.create_task(heap.trimming(0.01))
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_sqlite_server_loads_no_other_driver_nor_alembic() -> None:
    """psycopg, PyMySQL, redis and Alembic are loaded only where used (about 30 MB of RSS)."""
    code = (
        "import sys, firstparty.cli, firstparty.app, firstparty.delivery.worker;"
        "print(sorted(m for m in ('psycopg', 'pymysql', 'redis', 'alembic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
