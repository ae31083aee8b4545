"""Issue 13: the README's quick start, run on a fresh copy of the repository as a new user would:
the first of the two commands (`./run`, which makes its own venv), the curl line it prints, the
admin URL with the printed token, the demo link, and the quick start's commands as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.test_cli import free_port
from tests.test_docs import ROOT, blocks

SETUP_SECONDS = 300  # a new venv and `pip install -e .`: about 50 s here


def fresh_copy(dest: Path) -> Path:
    """The repository's files as a clone would have them (tracked and new, never ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def new_user_env(bin_dir: Path | None = None) -> dict[str, str]:
    """A shell with no firstparty settings and no venv of ours on the PATH; `./run` links the
    command into `bin_dir` (standing in for ~/.local/bin, which is not this test's to touch)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIRSTPARTY_", "VIRTUAL_ENV"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p]
    env["PATH"] = os.pathsep.join(path)
    if bin_dir is not None:
        env["FIRSTPARTY_BIN_DIR"] = str(bin_dir)
    return env


def on_path(env: dict[str, str], bin_dir: Path) -> dict[str, str]:
    """The same shell once the user added `bin_dir` to the PATH, as ./run advised."""
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}


def readme_block(after_heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(after_heading)
    line = text[:start].count("\n") + 1
    return next(b.text for b in blocks() if b.document == "README.md" and b.line > line)


class Output:
    """A process's output, read as it comes (the server runs on while the test reads it)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self.stream = proc.stdout
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        self.lines.extend(iter(self.stream.readline, ""))

    def close(self) -> None:
        self.reader.join(timeout=10)
        self.stream.close()

    @property
    def text(self) -> str:
        return "".join(self.lines)


def wait_until_up(url: str, proc: subprocess.Popen[str], output: Output) -> None:
    deadline = time.monotonic() + SETUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"./run ended with {proc.returncode}:\n{output.text[-3000:]}")
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.5)
    pytest.fail("./run did not answer in time:\n" + output.text[-3000:])


def sign_in(admin_url: str, token: str) -> httpx.Response:
    with httpx.Client(follow_redirects=True) as browser:
        form = browser.get(admin_url + "login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text
        return browser.post(admin_url + "login", data={"token": token, "csrf": csrf.group(1)})


def test_the_readme_quick_start_on_a_fresh_copy(tmp_path: Path) -> None:
    copy = fresh_copy(tmp_path / "firstparty")
    two_commands = readme_block("## The two commands")
    run_line = next(line for line in two_commands.splitlines() if line.startswith("./run"))
    port = free_port()
    bin_dir = tmp_path / "home" / ".local" / "bin"  # not on the PATH yet
    command = run_line.split("#")[0].strip() + f" --port {port}"
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=copy,
        env=new_user_env(bin_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    output = Output(proc)
    try:
        wait_until_up(url, proc, output)
        for _ in range(50):  # the banner is printed just before the server answers
            if "Add a website source" in output.text:
                break
            time.sleep(0.1)
        banner = output.text
        # The command is linked where the README says, and ./run says how to reach it.
        assert (bin_dir / "firstparty").resolve() == (copy / ".venv/bin/firstparty").resolve()
        assert f'export PATH="{bin_dir}:$PATH"' in banner, banner

        curl = re.search(r"Try it:\n\s+(curl .*?\\)\n\s+(-d .*)\n", banner)
        assert curl, banner
        line = curl.group(1).removesuffix("\\") + curl.group(2)
        sent = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30)
        assert sent.stdout.startswith("HTTP/1.1 202"), sent.stdout + sent.stderr

        admin = re.search(r"admin:\s+(\S+)\n.*admin token.*:\n\s+(\S+)\n", banner)
        assert admin, banner
        page = sign_in(admin.group(1), admin.group(2))
        assert page.status_code == 200 and "Lead" in page.text  # the curl line's event

        demo = re.search(r"(http://\S+/demo/\?key=wk_\S+)", banner)
        assert demo, banner
        assert httpx.get(demo.group(1)).status_code == 200

        quick_start = readme_block("## Quick start on a website")
        ran = subprocess.run(
            ["bash", "-c", "set -e\n" + quick_start],
            cwd=copy,
            env=on_path(new_user_env(), bin_dir),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "created browser source 'www'" in ran.stdout
        # `sources show demo`: the demo source the first run made, with its key's first characters
        assert re.search(r"^name:\s+demo$", ran.stdout, re.M), ran.stdout
        assert re.search(r"^kind:\s+browser$", ran.stdout, re.M), ran.stdout
        key_start = demo.group(1).split("key=")[1][:7]
        assert re.search(rf"^key:\s+{re.escape(key_start)}", ran.stdout, re.M), ran.stdout
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        output.close()
