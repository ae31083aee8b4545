"""Issue 13: a first run with nothing left to guess, on any engine; later starts repeat the URLs
but never the secrets. Real `firstparty serve` processes on 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from firstparty.store import db, migrate
from tests.conftest import make_database
from tests.test_cli import free_port

BIN = [sys.executable, "-m", "firstparty.cli"]


def start_and_stop(
    cwd: Path, env: dict[str, str], check: Callable[[str], None] = lambda url: None
) -> tuple[str, str]:
    """Run `serve` until it answers, `check(url)` it, then stop it: (its URL, its banner)."""
    port = free_port()
    proc = subprocess.Popen(
        [*BIN, "serve", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start: " + proc.communicate(timeout=5)[0])
        check(url)
    finally:
        proc.terminate()
    return url, proc.communicate(timeout=20)[0]


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    env.update(extra)
    return env


def test_the_first_run_on_a_server_database_creates_sources_and_prints_everything(
    tmp_path: Path, database_url: str
) -> None:
    env = server_env(
        FIRSTPARTY_DATABASE_URL=database_url,
        FIRSTPARTY_SECRET_KEY="f" * 40,
        FIRSTPARTY_ADMIN_TOKEN="an-admin-token-of-the-operator",
    )
    url, banner = start_and_stop(tmp_path, env)
    key = re.search(r"X-Write-Key: (sk_[\w-]+)", banner)  # base64url: "-" too
    assert key, banner
    assert f"admin:   {url}/admin/" in banner
    assert "sign in with FIRSTPARTY_ADMIN_TOKEN" in banner
    assert "an-admin-token-of-the-operator" not in banner
    url, again = start_and_stop(tmp_path, env)
    assert key.group(1) not in again and "X-Write-Key" not in again
    assert f"admin:   {url}/admin/" in again


def test_the_embedded_default_generates_an_admin_token_shown_once_that_signs_in(
    tmp_path: Path,
) -> None:
    url, banner = start_and_stop(tmp_path, server_env())
    kept = tmp_path / "firstparty.db.admin-token"
    token = kept.read_text().strip()
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    assert len(token) >= 32 and token in banner
    assert f"admin:   {url}/admin/" in banner and f"{url}/demo/?key=wk_" in banner

    def signs_in(url: str) -> None:
        admin = f"{url}/v1/admin/events"
        assert httpx.get(admin, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(admin, headers={"Authorization": "Bearer wrong"}).status_code == 401

    url, again = start_and_stop(tmp_path, server_env(), signs_in)
    assert token not in again and "wk_" not in again and "sk_" not in again
    assert f"admin:   {url}/admin/" in again and f"demo:    {url}/demo/" in again
    assert "admin token: in firstparty.db.admin-token" in again


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_server_database_without_a_token_gets_one_printed_once(tmp_path: Path, kind: str) -> None:
    for database_url in make_database(kind, tmp_path):
        engine = db.create_engine(database_url, poolclass=sa.NullPool)
        migrate.upgrade(engine)
        engine.dispose()
        env = server_env(FIRSTPARTY_DATABASE_URL=database_url, FIRSTPARTY_SECRET_KEY="g" * 40)
        _, banner = start_and_stop(tmp_path, env)
        found = re.search(
            r"admin token \(generated; shown once, only its hash is kept\):\n\s+(\S+)", banner
        )
        assert found, banner
        token = found.group(1)

        def signs_in(url: str, token: str = token) -> None:
            admin = f"{url}/v1/admin/events"
            ok = httpx.get(admin, headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
            wrong = httpx.get(admin, headers={"Authorization": "Bearer " + "x" * 32})
            assert wrong.status_code == 401

        _, again = start_and_stop(tmp_path, env, signs_in)
        assert token not in again
        assert "sign in with the admin token printed at the first start" in again
