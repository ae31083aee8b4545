"""The `firstparty` command as a user runs it: a real process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

BIN = [sys.executable, "-m", "firstparty.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    port = free_port()
    proc = subprocess.Popen(
        [*BIN, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        yield url, proc, tmp_path
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_serve_with_no_settings_runs_the_embedded_default(
    server: tuple[str, subprocess.Popen[str], Path],
) -> None:
    url, proc, cwd = server
    assert (cwd / "firstparty.db").exists() and (cwd / "firstparty.db.secret").exists()
    r = httpx.post(url + "/v1/events", json={"type": "track", "name": "Lead"})
    assert r.status_code == 401
    assert httpx.get(url + "/fp.js").status_code == 200
    proc.terminate()
    banner = proc.communicate(timeout=20)[0]
    assert f"running at {url}" in banner
    assert str(cwd / "firstparty.db") in banner
    # The banner names the command as this shell can run it (here: `python -m firstparty.cli`).
    assert f"{sys.executable} -m firstparty.cli sources create www" in banner
    key = re.search(r"shown once\):\s+(\S+)", banner)
    assert key, banner
    demo = re.search(r"(http://\S+/demo/\?key=\S+)", banner)
    assert demo, banner


@contextlib.contextmanager
def first_run(tmp_path: Path, until: str) -> Iterator[tuple[str, str]]:
    """`firstparty serve` in an empty folder: (its URL, the banner up to the line with `until`)."""
    port = free_port()
    proc = subprocess.Popen(
        [*BIN, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if until in line:
                break
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(url + "/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, "".join(lines)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_first_run_key_works_with_curl(tmp_path: Path) -> None:
    with first_run(tmp_path, "X-Write-Key") as (url, banner):
        key = re.search(r"X-Write-Key: (\S+)'", banner)
        assert key, banner
        body = {"type": "track", "name": "Lead", "properties": {"value": 49}}
        r = httpx.post(f"{url}/v1/events", json=body, headers={"X-Write-Key": key.group(1)})
        assert r.status_code == 202, r.text
    with sqlite3.connect(tmp_path / "firstparty.db") as db:
        assert db.execute("SELECT name FROM events").fetchall() == [("Lead",)]


def test_sources_create_and_list(tmp_path: Path) -> None:
    run = [*BIN, "sources", "create", "www", "--kind", "browser", "--origin", "https://www.a.test"]
    created = subprocess.run(run, cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("wk_")
    again = subprocess.run(run, cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert again.returncode == 1 and "exists already" in again.stderr
    listed = subprocess.run(
        [*BIN, "sources"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert "www" in listed.stdout and "https://www.a.test" in listed.stdout
    assert key not in listed.stdout


def test_migrate_and_bad_config(tmp_path: Path) -> None:
    env = {**clean_env(), "FIRSTPARTY_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    done = subprocess.run([*BIN, "migrate"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "newest schema" in done.stdout
    (tmp_path / "bad.toml").write_text("[cookie]\nflavour = 1\n")
    env["FIRSTPARTY_CONFIG"] = str(tmp_path / "bad.toml")
    bad = subprocess.run([*BIN, "serve"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "cookie.flavour: unknown key" in bad.stderr and "Traceback" not in bad.stderr


def test_first_run_demo_source_serves_the_demo(tmp_path: Path) -> None:
    with first_run(tmp_path, "/demo/?key=") as (url, banner):
        demo_url = banner.strip().splitlines()[-1].strip()
        key = demo_url.split("key=")[1]
        page = httpx.get(demo_url)
        assert page.status_code == 200 and f'data-key="{key}"' in page.text
        r = httpx.post(f"{url}/v1/events?key={key}", json={"type": "page"}, headers={"Origin": url})
        assert r.status_code == 202 and "fp_id=" in r.headers["set-cookie"]


def test_worker_command_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        **clean_env(),
        "FIRSTPARTY_DATABASE_URL": f"sqlite:///{tmp_path}/w.db",
        "FIRSTPARTY_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    subprocess.run([*BIN, "migrate"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*BIN, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "firstparty worker" in first
    for line in proc.stdout:  # signals are handled once the worker says it is delivering
        if "worker: delivering" in line:
            break
    proc.terminate()
    rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest


def test_replay_command_reports_and_refuses_unknown_destination(tmp_path: Path) -> None:
    env = {**clean_env(), "FIRSTPARTY_DATABASE_URL": f"sqlite:///{tmp_path}/r.db"}
    subprocess.run([*BIN, "migrate"], env=env, check=True, capture_output=True)
    done = subprocess.run([*BIN, "replay", "--dry-run"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "matched 0 failed deliveries" in done.stdout
    bad = subprocess.run(
        [*BIN, "replay", "--destination", "nope"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no destination named 'nope'" in bad.stderr
    when = subprocess.run(
        [*BIN, "replay", "--since", "last week"], env=env, capture_output=True, text=True
    )
    assert when.returncode == 2 and "--since" in when.stderr


def _children(pid: int) -> list[int]:
    """The server processes uvicorn spawned (not multiprocessing's resource tracker)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            found.append(int(child))
    return found


def _has_open(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    return any(os.path.realpath(fd) == str(path) for fd in fds.iterdir())


def _wait_listening(url: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=5)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_serve_workers_children_use_the_config_file(tmp_path: Path) -> None:
    """`--config X serve --workers 2`: both children load X, not just the environment."""
    database = tmp_path / "elsewhere.db"
    config = tmp_path / "conf" / "custom.toml"
    config.parent.mkdir()
    key = "wk_only_in_the_config_file"
    config.write_text(
        f'database_url = "sqlite:///{database}"\n\n'
        f'[[sources]]\nname = "crm-x"\nkind = "server"\nwrite_key = "{key}"\n'
    )
    cwd = tmp_path / "run"
    cwd.mkdir()
    port = free_port()
    relative = os.path.relpath(config, cwd)
    proc = subprocess.Popen(
        [*BIN, "--config", relative, "serve", "--port", str(port), "--workers", "2"],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            children = _children(proc.pid)
            if len(children) == 2 and all(_has_open(c, database) for c in children):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"children {_children(proc.pid)} did not open {database}")
        _wait_listening(url)  # a child opens the database before it takes connections
        for i in range(40):  # a new connection each: both children answer some
            body = {"type": "track", "name": "Lead", "event_id": f"w-{i}"}
            r = httpx.post(f"{url}/v1/events", json=body, headers={"X-Write-Key": key})
            assert r.status_code == 202, r.text
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "Traceback" not in output, output
    assert not (cwd / "firstparty.db").exists()  # nobody fell back to the default database
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT source, count(*) FROM events GROUP BY source").fetchall()
    assert rows == [("crm-x", 40)]
