"""Issue 13: every code block of the README and docs/ is tested as written.

Each fenced block is found by its language: TOML loads as a config, JSON parses (and an event
body is accepted by the server), JavaScript and inline scripts pass `node --check`, the nginx
block passes `nginx -t`, the haproxy block `haproxy -c`, and each command line runs (except the
few listed in `NOT_RUN`, with the reason). A block in a language nobody checks fails the test,
so a new block cannot slip by.
Links: no document points outside the repository.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from firstparty import settings as settings_mod
from tests.conftest import SERVER_KEY, running_app, settings_for

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^ *```", re.S | re.M)
CHECKED = {"toml", "json", "js", "html", "nginx", "caddy", "haproxy", "sh", "console"}
# Command lines not run here, and why (each is run elsewhere or needs what a test cannot have).
NOT_RUN = {
    "./run": "tests/test_quickstart.py runs it on a fresh copy of the repository",
    "./test": "this is ./test",
    "curl": "tests/test_quickstart.py runs the curl line the first run prints",
    ".venv/bin/pytest": "this is pytest",
    ".venv/bin/python": "benchmarks are run by hand (bench/)",
    "createdb": "tests/test_cli_errors.py shows the message that names it",
    "export": "a deployment's environment",
    "firstparty doctor": "resolves real DNS names",
    "firstparty audiences": "tests/audiences/test_cli.py runs them on a config with audiences",
    "firstparty destinations test": "tests/destinations/test_probe.py runs it on the fakes",
    "firstparty sources show demo": "tests/test_quickstart.py runs it once the first run made demo",
    "firstparty serve": "tests/test_cli.py and tests/test_first_run.py run the server",
    "firstparty operators create": "asks a password on a terminal: tests/operators runs it with "
    "--password-stdin",
    "firstparty operators set-role": "needs the account just made: tests/operators runs it",
    "firstparty operators reset-password": "asks a password: tests/operators runs it",
    "firstparty operators disable": "needs the account just made: tests/operators runs it",
    "firstparty worker": "tests/test_cli.py runs the worker",
    "docker": "no container engine here: tests/ops/test_deployment_files.py lints the Dockerfile "
    "and compose.yaml and runs the image's commands as processes",
    "kubectl": "no cluster here: tests/ops/test_deployment_files.py validates deploy/kubernetes",
    "pg_dump": "tests/ops/test_deployment_files.py runs the backup lines of docs/deployment.md",
    "pg_restore": "tests/ops/test_deployment_files.py runs the backup lines of docs/deployment.md",
    "sqlite3": "tests/ops/test_deployment_files.py runs the backup lines of docs/deployment.md",
}


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.document}:{self.line} [{self.language}]"


def blocks() -> list[Block]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            body = textwrap.dedent(match.group(3)) if match.group(1) else match.group(3)
            found.append(Block(path.name, line, match.group(2), body))
    return found


def of(language: str) -> list[Block]:
    return [b for b in blocks() if b.language == language]


def test_every_block_names_a_language_that_is_checked() -> None:
    assert blocks(), "no code blocks found"
    unchecked = [str(b) for b in blocks() if b.language not in CHECKED]
    assert not unchecked


@pytest.mark.parametrize("block", of("toml"), ids=str)
def test_each_toml_block_loads_as_a_config(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "firstparty.toml"
    path.write_text(block.text)
    names = set(re.findall(r'"env:([A-Z0-9_]+)"', block.text))
    env = {name: f"{name.lower()}-value-0123456789" for name in names}
    env["FIRSTPARTY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'fp.db'}"
    # Secrets of destinations may stay unset (reported, not fatal): a JSON one would need JSON.
    env = {k: v for k, v in env.items() if "JSON" not in k}
    settings_mod.load(env, config_path=str(path))


@pytest.mark.parametrize("block", of("json"), ids=str)
async def test_each_json_block_parses_and_an_event_is_accepted(
    block: Block, sqlite_url: str
) -> None:
    body = json.loads(block.text.replace("…", ""))
    if body.get("type") not in {"track", "page", "identify"}:
        return
    async with running_app(settings_for(sqlite_url)) as app:
        r = await app.http.post("/v1/events", headers={"X-Write-Key": SERVER_KEY}, json=body)
        assert r.status_code == 202, r.text


def scripts(block: Block) -> list[str]:
    if block.language == "js":
        return [block.text]
    return re.findall(r"<script>(.*?)</script>", block.text, re.S)


@pytest.mark.parametrize("block", of("js") + of("html"), ids=str)
def test_each_script_is_valid_javascript(block: Block, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    for number, script in enumerate(scripts(block)):
        path = tmp_path / f"block{number}.mjs"
        path.write_text(script)
        result = subprocess.run([node, "--check", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    for tag in re.findall(r"<script [^>]*src=[^>]*>", block.text):
        assert "data-key=" in tag and ("async" in tag or "defer" in tag), tag


@pytest.mark.parametrize("block", of("nginx"), ids=str)
def test_the_nginx_block_is_accepted_by_nginx(block: Block, tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed (.ci/run installs it)")
        pytest.skip("nginx is not installed")
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:1; server_name www.example.com;\n"
        f"{block.text}\n}} }}\n"
    )
    result = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("block", of("haproxy"), ids=str)
def test_the_haproxy_block_is_accepted_by_haproxy(block: Block, tmp_path: Path) -> None:
    """As written: the addresses come from the environment (tests/ops/test_many_nodes.py)."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed")
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(block.text)
    env = dict(os.environ, FP_LISTEN="127.0.0.1:1", FP_API1="127.0.0.1:2", FP_API2="127.0.0.1:3")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(conf)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("block", of("caddy"), ids=str)
def test_each_caddyfile_is_accepted_by_caddy(block: Block, tmp_path: Path) -> None:
    caddy = shutil.which("caddy") or "/usr/bin/caddy"
    if not Path(caddy).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("caddy is not installed (.ci/run installs it)")
        pytest.skip("caddy is not installed")
    path = tmp_path / "Caddyfile"
    path.write_text(block.text)
    home = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run(
        [caddy, "validate", "--config", str(path), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env={**os.environ, **home},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def command_lines(block: Block) -> list[str]:
    """The commands of a sh/console block, without prompts, output lines and comments."""
    lines: list[str] = []
    continued = False
    for raw in block.text.splitlines():
        if block.language == "console" and not raw.startswith("$ ") and not continued:
            continue
        line = raw.removeprefix("$ ").split("  #")[0].strip()
        if continued:
            lines[-1] = lines[-1].removesuffix("\\").rstrip() + " " + line
        elif line and not line.startswith("#"):
            lines.append(line)
        continued = line.endswith("\\")
    return lines


def reason_not_run(line: str) -> str | None:
    for prefix, reason in NOT_RUN.items():
        if line == prefix or line.startswith(prefix + " "):
            return reason
    return None


COMMANDS = [(b, line) for b in of("sh") + of("console") for line in command_lines(b)]


@pytest.mark.parametrize(("block", "line"), COMMANDS, ids=[f"{b}:{c}" for b, c in COMMANDS])
def test_each_command_runs_as_written(block: Block, line: str, tmp_path: Path) -> None:
    if reason_not_run(line):
        return
    words = shlex.split(line)
    assert words[0] == "firstparty", f"{block}: {line!r} is not a firstparty command"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    (tmp_path / "firstparty.toml").write_text(
        '[[destinations]]\nname = "meta"\ntype = "meta_capi"\npixel_id = "1234567890"\n'
        'access_token = "env:META_ACCESS_TOKEN"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "firstparty.cli", *words[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{block}: {line}\n{result.stdout}\n{result.stderr}"


def test_every_reason_not_to_run_is_used() -> None:
    used = {p for _, line in COMMANDS for p in NOT_RUN if reason_not_run(line) == NOT_RUN[p]}
    assert set(NOT_RUN) - used == set()


LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)|`(\.\./[^`]+)`|`(shared/[^`]+)`")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_documents_link_only_inside_the_repository(path: Path) -> None:
    for match in LINK.finditer(path.read_text()):
        target = next(g for g in match.groups() if g)
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{path.name} links outside: {target}"
        assert resolved.exists(), f"{path.name} links to a missing file: {target}"
