"""The Grafana dashboard and the Prometheus rules in deploy/, checked with the real tools.

``promtool`` checks the rules and runs their unit tests (every alert fires on the series that
should fire it and stays quiet otherwise); then a real Prometheus, started here on loopback,
scrapes a real service under a short load (successes, failures, shed calls, sensor pokes, both
protocol generations) and evaluates every dashboard query, every recording rule and every
alert's signal through its HTTP API: each must parse and return data, so a renamed metric or
label fails here the day it happens. Prometheus and promtool come from Debian's ``prometheus``
package (``.ci/install-system-deps``); without them the tests skip, and fail under CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
import yaml
from flyteidl.admin import agent_pb2

from connector_service.testing import task_template
from tests.connectors.slurm_cluster import require
from tests.deploy.test_deploy import DEPLOY, _only, _render
from tests.utils import SAMPLES, Remote, create_task, free_port, serve_process

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rules.yaml"
DASHBOARD = MONITORING / "dashboard.json"
PROMETHEUS_RULE = ROOT / "deploy" / "overlays" / "production" / "prometheusrule.yaml"
RULE_TESTS = Path(__file__).parent / "monitoring" / "rules_test.yaml"
README = ROOT / "README.md"

_SIGNAL = re.compile(r"^(?P<signal>.+?)\s*(?:>=|<=|==|!=|>|<)\s*[-+0-9.eE]+$", re.S)
_ABSENT = re.compile(r"^absent\((?P<signal>.+)\)$", re.S)
_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")
# The target labels the Prometheus Operator gives a ServiceMonitor's targets (and the usual
# kubernetes_sd relabelling gives annotated pods), which the dashboard's variables select on.
TARGET_LABELS = {"namespace": "flyte", "pod": "flyteconnector-7d9f-x2x4q"}


def _tools() -> dict[str, str]:
    paths = require(("promtool", "prometheus"), "the monitoring checks")
    return paths


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def signal_of(expr: str) -> str:
    """What an alert watches: ``signal > threshold`` -> ``signal``; ``absent(x)`` -> ``x``."""
    text = " ".join(expr.split())
    for pattern in (_ABSENT, _SIGNAL):
        match = pattern.match(text)
        if match:
            return match.group("signal")
    raise AssertionError(f"not `signal <comparison> number` nor `absent(signal)`: {expr}")


def _grafana_to_promql(expr: str, values: dict[str, str] | None = None) -> str:
    """The query Grafana sends with a 30 s rate interval and each variable at ``values`` (else "All")."""
    expr = expr.replace("$__rate_interval", "30s")
    for name in ("namespace", "job", "pod"):
        # Grafana escapes a value's regex metacharacters, doubled for the PromQL string.
        value = re.sub(r"([.*+?^$()\[\]{}|\\])", r"\\\\\1", (values or {}).get(name, ""))
        expr = expr.replace(f"${name}", value or ".*")
    return expr


def _query_variables() -> list[tuple[str, str, str]]:
    """The dashboard's ``label_values(selector, label)`` variables, in order: (name, selector, label)."""
    found = []
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.fullmatch(variable["query"]["query"])
        assert match, f"{variable['name']}: not label_values(selector, label): {variable['query']['query']}"
        found.append((variable["name"], match.group("selector"), match.group("label")))
    return found


# -- promtool -----------------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    tools = _tools()
    result = subprocess.run([tools["promtool"], "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_every_alert_has_unit_tests_that_fire_it_and_pass() -> None:
    tools = _tools()
    result = subprocess.run(
        [tools["promtool"], "test", "rules", RULE_TESTS.name], capture_output=True, text=True, cwd=RULE_TESTS.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    names = {rule["alert"] for rule in _alerts()}
    assert fired == names, f"alerts no test fires: {names - fired}"
    # Quiet cases: every alert is checked before its "for:" elapses, and every test lists all
    # alerts it expects, so other series of the same test (low traffic, shed-only failures,
    # another exporter's restarts) show the alert stays quiet for them.
    assert quiet == names, f"alerts no test keeps quiet: {names - quiet}"


def test_every_alert_is_documented_and_has_a_runbook() -> None:
    readme = README.read_text()
    for rule in _alerts():
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        anchor = annotations["runbook_url"].rpartition("#")[2]
        assert anchor == rule["alert"].lower()
        assert f"#### {rule['alert']}" in readme, f"README has no runbook section for {rule['alert']}"
        signal_of(rule["expr"])  # the shape the live check below relies on


def test_the_prometheus_rule_carries_exactly_the_rules_file() -> None:
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
# The openAPIV3Schema of the Prometheus Operator's PrometheusRule CRD (monitoring.coreos.com/v1,
# operator v0.82), written out here with the unknown fields closed: the API server would prune
# an unknown (misspelt) field silently, so here it is an error. One of record/alert, as the
# operator's admission webhook requires.
PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "query_offset": _DURATION,
                            "limit": {"type": "integer"},
                            "labels": _STRINGS,
                            "partial_response_strategy": {"type": "string", "pattern": "(?i)^(abort|warn)?$"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
                                    "properties": {
                                        "record": {"type": "string"},
                                        "alert": {"type": "string"},
                                        "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                        "for": _DURATION,
                                        "keep_firing_for": {**_DURATION, "minLength": 1},
                                        "labels": _STRINGS,
                                        "annotations": _STRINGS,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


def test_the_rendered_prometheus_rule_validates_against_the_operators_schema() -> None:
    rule = _only(_render(DEPLOY / "overlays" / "production"), "PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names)), "x-kubernetes-list-map-keys: name"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], "kustomize changed the rules"
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, PROMETHEUS_RULE_SCHEMA)


def test_the_dashboard_is_parameterised_by_data_source_and_target() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "job", "pod"} <= variables.keys()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert any("flyteidl.service" in r for r in rows) and any("flyteidl2.connector" in r for r in rows)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'namespace=~"$namespace",job=~"$job",pod=~"$pod"' in target["expr"], panel["title"]


# -- a real Prometheus scraping a real service ------------------------------------------------


class Prometheus:
    def __init__(self, binary: str, workdir: Path, metrics_port: int) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "flyteconnector",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"], "labels": TARGET_LABELS}],
                        }
                    ],
                }
            )
        )
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:  # a bad query: 400 with the parse error
            return json.loads(exc.read())

    def wait_ready(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            time.sleep(0.1)
        raise AssertionError("prometheus did not become ready:\n" + self.log.read_text()[-2000:])

    def query(self, expr: str) -> list[Any]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", f"{expr}\n  -> {answer.get('error')}"
        result: list[Any] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def prometheus_binary() -> str:
    return _tools()["prometheus"]


async def _load(address: str, rounds: int) -> None:
    """Calls of every kind the dashboard shows, over both protocol generations."""
    async with grpc.aio.insecure_channel(address) as channel:
        stubs = Remote(channel)
        job = task_template("job")
        slow = task_template("slow", version=1, custom={"seconds": 1.0})
        sensor = task_template(
            "sensor",
            custom={"sensor_module": "tests.sample_connectors", "sensor_name": "SlowSensor"},
            inputs={"marker": str},
        )
        v2_get = channel.unary_unary(
            "/flyteidl2.connector.AsyncConnectorService/GetTask",
            request_serializer=agent_pb2.GetTaskRequest.SerializeToString,
            response_deserializer=agent_pb2.GetTaskResponse.FromString,
        )
        for _ in range(rounds):
            meta = await create_task(stubs, job)
            get = agent_pb2.GetTaskRequest(task_category=agent_pb2.TaskCategory(name="job"), resource_meta=meta)
            await asyncio.gather(*(stubs.async_stub.GetTask(get, timeout=5) for _ in range(20)))
            await asyncio.gather(*(v2_get(get, timeout=5) for _ in range(10)))
            await stubs.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)
            with contextlib.suppress(grpc.aio.AioRpcError):  # failures: the failing connector, an unknown type
                await create_task(stubs, task_template("failing"))
            with contextlib.suppress(grpc.aio.AioRpcError):
                await create_task(stubs, task_template("no_such_type"))
            sensor_meta = await create_task(stubs, sensor, {"marker": "/nonexistent"})
            sensor_get = agent_pb2.GetTaskRequest(
                task_category=agent_pb2.TaskCategory(name="sensor"), resource_meta=sensor_meta
            )
            await stubs.async_stub.GetTask(sensor_get, timeout=5)
            # Shed: the slow connector takes one call at a time (--limits), and nobody waits.
            slow_meta = await create_task(stubs, slow)
            slow_get = agent_pb2.GetTaskRequest(
                task_category=agent_pb2.TaskCategory(name="slow", version=1), resource_meta=slow_meta
            )
            outcomes = await asyncio.gather(
                *(stubs.async_stub.GetTask(slow_get, timeout=5) for _ in range(3)), return_exceptions=True
            )
            codes = {o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)}
            assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}, outcomes
            await asyncio.sleep(1.0)


_GROUPED_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def _no_data(name: str, expr: str, result: list[Any]) -> list[str]:
    """Why a query's answer shows nothing: no series, or a label it groups by on none of them.

    A label that no longer exists still "returns data" (`sum by (gone)` is one series without
    it), so each label a query groups by (but ``le``, which histogram_quantile consumes) must
    be on some series of the answer.
    """
    if not result:
        return [f"{name}: no data: {expr}"]
    grouped = {label.strip() for labels in _GROUPED_BY.findall(expr) for label in labels.split(",")} - {"le", ""}
    present = {label for series in result for label in series["metric"]}
    return [f"{name}: no series has {sorted(grouped - present)}: {expr}"] if grouped - present else []


@pytest.fixture
def scraped(prometheus_binary: str, tmp_path: Path) -> Iterator[tuple[Prometheus, str, int]]:
    metrics_port = free_port()
    prometheus = Prometheus(prometheus_binary, tmp_path, metrics_port)
    try:
        prometheus.wait_ready()
        yield prometheus, str(metrics_port), metrics_port
    finally:
        prometheus.stop()


async def test_every_dashboard_query_and_rule_returns_data_from_a_real_service(
    scraped: tuple[Prometheus, str, int],
) -> None:
    prometheus, metrics_port, _ = scraped
    args = (
        "--connector", SAMPLES, "--metrics-port", metrics_port, "--shutdown-delay", "0",
        "--limits", '{"slow": {"max_concurrency": 1}}', "--max-queue-wait", "0",
    )  # fmt: skip
    async with serve_process(*args) as served:
        # Load until Prometheus has seen the counters grow (its first scrapes of a new target may
        # come a few seconds late) and every recording rule has data.
        records = [rule["record"] for rule in _rules() if "record" in rule]
        deadline = time.monotonic() + 60
        missing: list[str] = records
        while time.monotonic() < deadline:
            await _load(served.address, rounds=2)
            rate = await asyncio.to_thread(prometheus.query, 'flyte_connector:requests:rate5m{task_type="job"} > 0')
            missing = [name for name in records if not await asyncio.to_thread(prometheus.query, name)]
            if rate and not missing:
                break
        assert not missing, f"recording rules without data: {missing}"

        # The variables as Grafana fills them (each from the one before), then every panel with
        # the first value of each selected, and again with every variable at "All".
        values: dict[str, str] = {}
        for name, selector, label in _query_variables():
            answer = await asyncio.to_thread(
                prometheus.get, f"/api/v1/label/{label}/values", **{"match[]": _grafana_to_promql(selector, values)}
            )
            assert answer["status"] == "success" and answer["data"], f"variable {name}: {answer}"
            values[name] = sorted(answer["data"])[0]
        assert values == {**TARGET_LABELS, "job": "flyteconnector"}
        empty = []
        for title, expr in _dashboard_queries():
            for chosen in (values, None):
                result = await asyncio.to_thread(prometheus.query, _grafana_to_promql(expr, chosen))
                empty += _no_data(f"{title} ({'selected' if chosen else 'All'})", expr, result)
        for rule in _rules():
            expr = signal_of(rule["expr"]) if "alert" in rule else rule["record"]
            result = await asyncio.to_thread(prometheus.query, expr)
            empty += _no_data(rule.get("alert") or rule["record"], rule["expr"], result)
        rates = await asyncio.to_thread(prometheus.query, "flyte_connector:requests:rate5m")
        assert not empty, (
            "queries that returned no data or lost a label:\n  " + "\n  ".join(empty) + f"\n(call rates: {rates})"
        )

        rules = prometheus.get("/api/v1/rules")["data"]["groups"]
        states = {(r.get("name")): (r["health"], r.get("lastError", "")) for g in rules for r in g["rules"]}
        assert len(states) == len(_rules())
        assert all(health == "ok" for health, _ in states.values()), states
        # This load is meant to fire nothing but the error ratio's signal; the alerts' "for" keeps them pending.
        ratio = await asyncio.to_thread(prometheus.query, 'flyte_connector:error_ratio:rate5m{task_type="failing"}')
        assert ratio and float(ratio[0]["value"][1]) == 1.0
        shed = await asyncio.to_thread(prometheus.query, 'flyte_connector:requests_shed:rate5m{task_type="slow"}')
        assert shed and float(shed[0]["value"][1]) > 0
        up = await asyncio.to_thread(prometheus.query, "flyte_connector_up")
        assert {(s["metric"]["task_type"], s["value"][1]) for s in up} >= {("job", "1"), ("sensor", "1")}
