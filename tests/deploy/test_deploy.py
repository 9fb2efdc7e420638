"""Deployment files: compose validates, manifests validate against Kubernetes schemas, every variable
they set is a setting the service reads, and every command they run is a real `show1` command."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from app.cli import main
from app.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SETTINGS = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
# Variables read by libraries, other images, or the models package (SHOW1_CACHE_DIR: where the tiny
# preset is made), not by the service's settings.
OTHER_VARIABLES = {
    "HF_TOKEN",
    "HF_HOME",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "PYTHONUNBUFFERED",
    "PATH",
    "SHOW1_CACHE_DIR",
}
KUBERNETES_VERSION = "1.33.0"


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((DEPLOY / resource).read_text()) if doc]
    return documents


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def compose_command() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if (
            shutil.which(command[0])
            and subprocess.run([*command, "version"], capture_output=True).returncode == 0
        ):
            return command
    return None


def test_compose_file_validates(tmp_path: Path):
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (.ci/run installs one)")
    result = subprocess.run(
        [
            *command,
            "-f",
            str(REPO / "docker-compose.yml"),
            "--env-file",
            str(REPO / ".env.example"),
            "config",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == {"api", "worker", "weights", "redis", "minio", "minio-init"}
    gpu = config["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


# KEDA's ScaledObject is a custom resource: test_keda_scales_on_the_worker_queue checks it.
BUILT_IN = [doc for doc in manifests() if not doc["apiVersion"].startswith("keda.sh/")]


@pytest.mark.parametrize("document", BUILT_IN, ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_manifest_validates_against_kubernetes_schemas(document: dict):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_keda_scales_on_the_worker_queue():
    (scaled,) = [doc for doc in manifests() if doc["kind"] == "ScaledObject"]
    config = next(doc for doc in manifests() if doc["kind"] == "ConfigMap")["data"]
    workers = {doc["metadata"]["name"] for doc in manifests() if doc["kind"] == "Deployment"}
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] in workers
    assert scaled["spec"]["minReplicaCount"] == 0
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    # RQ keeps a queue's waiting jobs in the list rq:queue:<name>.
    assert trigger["metadata"]["listName"] == f"rq:queue:{config['SHOW1_QUEUE_NAME']}"
    assert trigger["metadata"]["address"].split(".")[0] + ":6379" == "redis:6379"
    assert config["SHOW1_REDIS_URL"].startswith("redis://redis:6379")


def _manifest_variables() -> set[str]:
    names = set()
    for doc in manifests():
        if doc["kind"] in ("ConfigMap", "Secret"):
            names |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
        for container in _containers(doc):
            names |= {item["name"] for item in container.get("env", [])}
    return names


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) or spec.get("jobTemplate", {}).get("spec", {})
    return pod.get("containers", []) if isinstance(pod, dict) else []


def _compose_variables() -> set[str]:
    names = set()
    for service in compose()["services"].values():
        names |= set(service.get("environment", {}))
    text = (REPO / "docker-compose.yml").read_text()
    names |= set(re.findall(r"\$\{(\w+)", text))
    return names


def _env_example_variables() -> set[str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("source", ["compose", "env-example", "manifests", "dockerfile"])
def test_every_variable_is_a_setting(source: str):
    names = {
        "compose": _compose_variables,
        "env-example": _env_example_variables,
        "manifests": _manifest_variables,
        "dockerfile": lambda: set(re.findall(r"\b(SHOW1_\w+)=", (REPO / "Dockerfile").read_text())),
    }[source]()
    unknown = {name for name in names if name not in SETTINGS and name not in OTHER_VARIABLES}
    assert not unknown, f"{source} sets variables the service does not read: {sorted(unknown)}"
    assert any(name.startswith(ENV_PREFIX) for name in names)


def _commands() -> list[list[str]]:
    dockerfile = (REPO / "Dockerfile").read_text()
    commands = [yaml.safe_load(re.search(r"^CMD (.+)$", dockerfile, re.M)[1])]
    assert yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M)[1]) == ["show1"]
    for service in compose()["services"].values():
        if service.get("image", "").startswith("show1") or "build" in service:
            commands.append(service["command"])
    for doc in manifests():
        for container in _containers(doc):
            if "show1" in container["image"]:
                commands.append(container["args"])
    return commands


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_image_commands_are_real_show1_commands(command: list[str]):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert command[0] in {"serve", "worker", "download-weights"}
