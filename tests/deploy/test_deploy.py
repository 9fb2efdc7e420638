"""Deployment files: compose validates, manifests validate against Kubernetes schemas (KEDA's custom
resources against the small schema below), they refer to each other consistently, every variable they
set is a setting the service reads, and every command they run is a real `show1` command."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from app.settings import ENV_PREFIX, Settings
from worker.cli import main

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SETTINGS = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
# Variables read by libraries, other images, the models package (SHOW1_CACHE_DIR: where the tiny
# preset is made) or one command (SHOW1_DATA_DIR: `show1 up --data-dir`), not by the service's settings.
OTHER_VARIABLES = {
    "HF_TOKEN",
    "HF_HOME",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "PYTHONUNBUFFERED",
    "PATH",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "SHOW1_CACHE_DIR",
    "SHOW1_DATA_DIR",
    "REDIS_PASSWORD",  # the Redis server's password (deploy/secret.yaml), and KEDA's
    "REDISCLI_AUTH",  # redis-cli's password, for the Redis probes
}
KUBERNETES_VERSION = "1.33.0"
SHOW1_COMMANDS = {"serve", "worker", "download-weights"}


def kustomization() -> dict:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


def manifests() -> list[dict]:
    documents = []
    for resource in kustomization()["resources"]:
        documents += [doc for doc in yaml.safe_load_all((DEPLOY / resource).read_text()) if doc]
    return documents


def find(kind: str, name: str | None = None) -> list[dict]:
    return [doc for doc in manifests() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def config_map() -> dict[str, str]:
    (config,) = find("ConfigMap", "show1-config")
    return config["data"]


def secret_data(name: str) -> dict[str, str]:
    (secret,) = find("Secret", name)
    return {**secret.get("data", {}), **secret.get("stringData", {})}


def pod_spec(doc: dict) -> dict:
    spec = doc.get("spec", {})
    return spec.get("template", {}).get("spec", {}) or spec.get("jobTemplate", {}).get("spec", {})


def containers(doc: dict) -> list[dict]:
    pod = pod_spec(doc)
    return [*pod.get("initContainers", []), *pod.get("containers", [])] if isinstance(pod, dict) else []


def show1_containers() -> list[tuple[dict, dict]]:
    return [(doc, c) for doc in manifests() for c in containers(doc) if "show1" in c["image"]]


def worker_deployment() -> dict:
    (worker,) = [doc for doc, c in show1_containers() if c["args"][0] == "worker"]
    return worker


# --- docker compose ---------------------------------------------------------------------------------


def compose_command() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if (
            shutil.which(command[0])
            and subprocess.run([*command, "version"], capture_output=True).returncode == 0
        ):
            return command
    return None


def test_compose_file_validates():
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (.ci/run installs one)")
    result = subprocess.run(
        [*command, "-f", REPO / "docker-compose.yml", "--env-file", REPO / ".env.example", "config"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"api", "worker", "weights", "redis", "minio", "minio-init"}
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert services["worker"]["depends_on"]["weights"]["condition"] == "service_completed_successfully"
    assert services["api"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "--appendonly" in services["redis"]["command"]
    # The settings reach the containers with the values .env.example gives.
    for name, value in env_example().items():
        if name in services["api"]["environment"]:
            assert services["api"]["environment"][name] == value, name


def seconds(duration: str | int) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    if isinstance(duration, int):
        return duration
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", duration))


def test_compose_worker_may_finish_its_longest_job_on_stop():
    worker = compose()["services"]["worker"]
    timeout = int(env_example().get("SHOW1_JOB_TIMEOUT_SECONDS", DEFAULTS["job_timeout_seconds"]))
    assert seconds(worker["stop_grace_period"]) > timeout


# --- Kubernetes -------------------------------------------------------------------------------------

# KEDA's custom resources: the fields this project uses, typed as KEDA's CRDs (v2) type them. Unknown
# fields fail, as they would against the installed CRD.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_NAME_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "kind": {"type": "string"}, "apiVersion": {"type": "string"}},
    "additionalProperties": False,
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": _STRING_MAP, "annotations": _STRING_MAP},
    "additionalProperties": False,
}
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": _NAME_REF,
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "advanced": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "horizontalPodAutoscalerConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                # `behavior` is an autoscaling/v2 HorizontalPodAutoscalerBehavior: the
                                # test below validates it with the Kubernetes schema.
                                "properties": {"behavior": {"type": "object"}, "name": {"type": "string"}},
                            }
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "metadata": _STRING_MAP,
                                "authenticationRef": _NAME_REF,
                            },
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "additionalProperties": False,
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    }
                },
            },
        },
    },
}
# The redis (lists) scaler's metadata keys, as KEDA documents them.
REDIS_TRIGGER_KEYS = {
    "address", "host", "port", "databaseIndex", "listName", "listLength", "activationListLength",
    "enableTLS", "unsafeSsl", "usernameFromEnv", "passwordFromEnv", "addressFromEnv",
}  # fmt: skip

BUILT_IN = [doc for doc in manifests() if not doc["apiVersion"].startswith("keda.sh/")]
CUSTOM = [doc for doc in manifests() if doc["apiVersion"].startswith("keda.sh/")]


def _id(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("document", BUILT_IN, ids=_id)
def test_manifest_validates_against_kubernetes_schemas(document: dict):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("document", CUSTOM, ids=_id)
def test_keda_resource_validates_against_its_schema(document: dict):
    assert document["kind"] in KEDA_SCHEMAS, f"no schema kept for {document['kind']}"
    jsonschema.validate(document, KEDA_SCHEMAS[document["kind"]])
    if document["kind"] == "ScaledObject":
        for trigger in document["spec"]["triggers"]:
            if trigger["type"] == "redis":
                assert set(trigger["metadata"]) <= REDIS_TRIGGER_KEYS
        behavior = document["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
        if "behavior" in behavior:
            hpa = {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "keda-hpa"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                    "maxReplicas": 1,
                    "behavior": behavior["behavior"],
                },
            }
            kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_keda_scales_the_worker_on_the_queue_it_consumes():
    (scaled,) = find("ScaledObject")
    (redis_service,) = find("Service", "redis")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker_deployment()["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 0
    assert "replicas" not in worker_deployment()["spec"], "KEDA owns the worker count"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    # RQ keeps a queue's waiting jobs in the list rq:queue:<name>.
    queue = config_map().get("SHOW1_QUEUE_NAME", DEFAULTS["queue_name"])
    assert meta["listName"] == f"rq:queue:{queue}"
    assert int(meta["listLength"]) >= 1
    # The trigger reads the Redis the service uses: the same host, port, database and password.
    url = urlsplit(secret_data("show1-secrets")["SHOW1_REDIS_URL"])
    host, port = meta["address"].rsplit(":", 1)
    namespace = kustomization()["namespace"]
    assert url.hostname == redis_service["metadata"]["name"]
    assert host == f"{url.hostname}.{namespace}.svc.cluster.local"  # KEDA runs in another namespace
    assert int(port) == (url.port or 6379) == redis_service["spec"]["ports"][0]["port"]
    assert meta.get("databaseIndex", "0") == (url.path.strip("/") or "0")
    (auth,) = find("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (password_ref,) = [ref for ref in auth["spec"]["secretTargetRef"] if ref["parameter"] == "password"]
    assert secret_data(password_ref["name"])[password_ref["key"]] == url.password


def test_redis_requires_the_password_the_service_uses():
    (redis,) = find("StatefulSet", "redis")
    (container,) = containers(redis)
    assert "--appendonly" in container["args"] and "$(REDIS_PASSWORD)" in container["args"]
    env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"]}
    url = urlsplit(secret_data("show1-secrets")["SHOW1_REDIS_URL"])
    for name in ("REDIS_PASSWORD", "REDISCLI_AUTH"):
        assert secret_data(env[name]["name"])[env[name]["key"]] == url.password
    assert redis["spec"]["volumeClaimTemplates"], "AOF on a persistent volume"


def test_worker_may_finish_its_longest_job_when_scaled_in():
    pod = pod_spec(worker_deployment())
    timeout = int(config_map().get("SHOW1_JOB_TIMEOUT_SECONDS", DEFAULTS["job_timeout_seconds"]))
    assert pod["terminationGracePeriodSeconds"] > timeout
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["tolerations"] and pod["nodeSelector"]


def test_probes_check_what_the_service_provides():
    (api,) = [c for _, c in show1_containers() if c["args"][0] == "serve"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The worker's probes read the age of the file its janitor thread touches every heartbeat.
    alive = str(DEFAULTS["worker_alive_file"])
    (worker,) = containers(worker_deployment())
    for probe in ("startupProbe", "livenessProbe"):
        assert alive in " ".join(worker[probe]["exec"]["command"]), probe
    assert alive in " ".join(compose()["services"]["worker"]["healthcheck"]["test"])


def test_references_resolve():
    """Every ConfigMap, Secret (and key) and claim a pod or KEDA names is in the base."""
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in manifests()}
    claims = {("PersistentVolumeClaim", t["metadata"]["name"]) for doc in find("StatefulSet")
              for t in doc["spec"].get("volumeClaimTemplates", [])}  # fmt: skip
    for doc in manifests():
        for container in containers(doc):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in names
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secret_data(ref["name"]), ref
        for volume in pod_spec(doc).get("volumes", []) if isinstance(pod_spec(doc), dict) else []:
            if "persistentVolumeClaim" in volume:
                claim = ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
                assert claim in names | claims
    for auth in find("TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secret_data(ref["name"])


def test_only_the_weights_job_sees_the_hub_token():
    for doc, container in show1_containers():
        sees_token = any(item["name"] == "HF_TOKEN" for item in container.get("env", [])) or any(
            "HF_TOKEN" in secret_data(source["secretRef"]["name"])
            for source in container.get("envFrom", [])
            if "secretRef" in source
        )
        assert sees_token == (container["args"][0] == "download-weights"), _id(doc)


# --- variables --------------------------------------------------------------------------------------


def _manifest_variables() -> set[str]:
    names = set()
    for doc in manifests():
        if doc["kind"] in ("ConfigMap", "Secret"):
            names |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
        for container in containers(doc):
            names |= {item["name"] for item in container.get("env", [])}
    return names


def _compose_variables() -> set[str]:
    names = set()
    for service in compose()["services"].values():
        names |= set(service.get("environment", {}))
    text = (REPO / "docker-compose.yml").read_text()
    names |= set(re.findall(r"\$\{(\w+)", text))
    return names


def _dockerfile_variables() -> set[str]:
    text = (REPO / "Dockerfile").read_text()
    env_blocks = re.findall(r"^ENV ((?:.*\\\n)*.*)$", text, re.M)
    return {name for block in env_blocks for name in re.findall(r"(\w+)=", block)}


@pytest.mark.parametrize("source", ["compose", "env-example", "manifests", "dockerfile"])
def test_every_variable_is_a_setting(source: str):
    names = {
        "compose": _compose_variables,
        "env-example": lambda: set(env_example()),
        "manifests": _manifest_variables,
        "dockerfile": _dockerfile_variables,
    }[source]()
    unknown = {name for name in names if name not in SETTINGS and name not in OTHER_VARIABLES}
    assert not unknown, f"{source} sets variables the service does not read: {sorted(unknown)}"
    assert any(name.startswith(ENV_PREFIX) for name in names)


# --- the image --------------------------------------------------------------------------------------


def _instruction(name: str) -> str:
    """The last `name` instruction, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.findall(rf"^{name} (.+)$", text, re.M)
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def test_image_is_pinned_non_root_and_without_weights():
    dockerfile = (REPO / "Dockerfile").read_text()
    (torch_pin,) = re.findall(r'"torch==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert f"ARG TORCH_VERSION={torch_pin}" in dockerfile
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in dockerfile
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2, "multi-stage"
    assert re.findall(r"^USER (\S+)", dockerfile, re.M)[-1] not in ("root", "0")
    assert "HEALTHCHECK" in dockerfile
    # One check for every role (worker/health.py): the API's /healthz, a worker's alive file; each is
    # tried against live processes in tests/service/test_public_urls.py.
    assert yaml.safe_load(_instruction("HEALTHCHECK").split(" CMD ", 1)[1]) == ["show1", "healthcheck"]
    assert "/healthz" in (REPO / "worker" / "health.py").read_text()
    # Weights come from a volume: nothing under the models folder is copied in or downloaded.
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"download-weights|snapshot_download|huggingface-cli|COPY .*models/", instructions)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests", "bench/results", ".env"} <= set(ignored)


def _commands() -> list[list[str]]:
    commands = [yaml.safe_load(_instruction("CMD"))]
    assert yaml.safe_load(_instruction("ENTRYPOINT")) == ["show1"]
    for service in compose()["services"].values():
        if service.get("image", "").startswith("show1") or "build" in service:
            commands.append(service["command"])
    commands += [container["args"] for _, container in show1_containers()]
    return commands


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_image_commands_are_real_show1_commands(command: list[str]):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert command[0] in SHOW1_COMMANDS


def test_every_role_is_deployed():
    roles = {command[0] for command in _commands()}
    assert roles == SHOW1_COMMANDS
