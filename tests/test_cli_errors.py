"""Issue 13: CLI and start-up errors are one or two lines naming the cause and the fix, with an
exit code; the traceback only with --debug. Each runs the real command against the real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = [sys.executable, "-m", "firstparty.cli"]
SECRET = "s" * 40


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    clean["FIRSTPARTY_SECRET_KEY"] = SECRET
    clean.update(env)
    return subprocess.run(
        [*BIN, *args], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["migrate"], ["serve", "--port", "1"], ["sources"]])
def test_a_postgresql_database_that_does_not_exist_is_named_with_the_fix(
    tmp_path: Path, command: list[str]
) -> None:
    url = "postgresql://127.0.0.1:5432/fp_missing_db"
    result = run(tmp_path, *command, FIRSTPARTY_DATABASE_URL=url)
    assert result.returncode == 3
    assert one_line(result) == (
        'firstparty: database "fp_missing_db" does not exist: create it with '
        "`createdb fp_missing_db` (or CREATE DATABASE fp_missing_db), then run `firstparty migrate`"
    )


def test_a_mysql_database_that_does_not_exist_is_named_with_the_fix(tmp_path: Path) -> None:
    url = "mysql://root@127.0.0.1:3306/fp_missing_db"
    result = run(tmp_path, "migrate", FIRSTPARTY_DATABASE_URL=url)
    assert result.returncode == 3
    assert "database 'fp_missing_db' does not exist: create it with" in one_line(result)


def test_a_database_that_is_down_is_one_line(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", FIRSTPARTY_DATABASE_URL="postgresql://127.0.0.1:9/fp")
    assert result.returncode == 3
    assert one_line(result) == (
        "firstparty: cannot reach the database (127.0.0.1:9): is it running, and is "
        "database_url right?"
    )


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    url = "postgresql://127.0.0.1:5432/fp_missing_db"
    result = run(tmp_path, "--debug", "migrate", FIRSTPARTY_DATABASE_URL=url)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert 'database "fp_missing_db" does not exist' in result.stderr


def test_an_invalid_config_file_is_one_line_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "fp.toml").write_text("[cookie]\nmax_age_days = 900\n")
    result = run(tmp_path, "--config", "fp.toml", "migrate")
    assert result.returncode == 2
    assert one_line(result).startswith("firstparty: invalid settings: cookie.max_age_days:")


def test_a_different_secret_key_is_refused_at_start_naming_the_fix(
    tmp_path: Path, database_url: str, engine_kind: str
) -> None:
    first = run(tmp_path, "sources", FIRSTPARTY_DATABASE_URL=database_url)
    assert first.returncode == 0, first.stderr
    again = run(tmp_path, "sources", FIRSTPARTY_DATABASE_URL=database_url)
    assert again.returncode == 0, again.stderr
    other = "o" * 40
    commands = [["sources"], ["serve", "--port", "1"], ["worker"], ["prune"]]
    # The fingerprint is kept and compared by the same two statements on every engine
    # (store/instance.py); each command's refusal is proved on SQLite, the engines by one.
    for command in commands if engine_kind == "sqlite" else commands[:1]:
        result = run(
            tmp_path, *command, FIRSTPARTY_DATABASE_URL=database_url, FIRSTPARTY_SECRET_KEY=other
        )
        assert result.returncode == 2, (command, result.stderr)
        line = one_line(result)
        assert line.startswith("firstparty: secret_key: FIRSTPARTY_SECRET_KEY (fingerprint ")
        assert "is not the key this database was set up with" in line
        assert SECRET not in result.stderr and other not in result.stderr


def test_commands_start_without_a_destinations_secret(tmp_path: Path) -> None:
    (tmp_path / "fp.toml").write_text(
        '[[destinations]]\nname = "meta"\ntype = "meta_capi"\npixel_id = "123"\n'
        'access_token = "env:META_TOKEN_NOT_SET"\n'
    )
    for command in (["sources"], ["migrate"], ["replay", "--dry-run"]):
        result = run(tmp_path, "--config", "fp.toml", *command)
        assert result.returncode == 0, (command, result.stderr)
    strict = (
        (tmp_path / "fp.toml")
        .read_text()
        .replace("[[destinations]]", "strict_start = true\n[[destinations]]", 1)
    )
    (tmp_path / "strict.toml").write_text(strict)
    result = run(tmp_path, "--config", "strict.toml", "sources")
    assert result.returncode == 2
    assert one_line(result) == (
        "firstparty: destinations[0]: environment variable META_TOKEN_NOT_SET is not set"
    )
