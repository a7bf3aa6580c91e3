"""What an operator relies on: set-up failures, limits, caps, logs, connection churn, config files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from flyteidl.service import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from connector_service import Settings
from connector_service.testing import task_template
from tests.utils import ENV, SAMPLES, run_service, serve_process

LIFECYCLE = "tests.sample_connectors:lifecycle"


def _get_request(meta: bytes, name: str, version: int = 0) -> agent_pb2.GetTaskRequest:
    return agent_pb2.GetTaskRequest(
        task_category=agent_pb2.TaskCategory(name=name, version=version), resource_meta=meta
    )


# -- set-up failures --------------------------------------------------------------------------


def test_failing_set_up_stops_start_up_naming_the_connector(tmp_path: Path) -> None:
    env = {**ENV, "FLYTE_SECRETS_DEFAULT_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "connector_service", "serve", "--port", "0", "--metrics-port", "0",
         "--connector", LIFECYCLE],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "set-up of 'Lifecycle Connector' failed" in result.stderr
    assert "lifecycle_token" in result.stderr


async def test_skip_broken_connectors_starts_without_it_and_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_SECRETS_DEFAULT_DIR", str(tmp_path))
    async with run_service((SAMPLES, LIFECYCLE), skip_broken_connectors=True) as running:
        health = running.health_stub
        broken = await health.Check(health_pb2.HealthCheckRequest(service="connector/lifecycle_v0"), timeout=5)
        assert broken.status == health_pb2.HealthCheckResponse.NOT_SERVING
        ok = await health.Check(health_pb2.HealthCheckRequest(service="connector/job_v0"), timeout=5)
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        # Still listed, so propeller does not silently run its tasks elsewhere; calls fail visibly.
        agents = await running.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)
        assert "Lifecycle Connector" in {a.name for a in agents.agents}
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.async_stub.GetTask(_get_request(b"{}", "lifecycle"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "set-up failed" in (err.value.details() or "")
        assert running.service.unavailable.keys() == {"connector/lifecycle_v0"}
        # The same as a metric: what dashboards show per pod and the ConnectorDown alert reads.
        up = running.service.metrics_registry.get_sample_value
        assert up("flyte_connector_up", {"task_type": "lifecycle", "connector": "Lifecycle Connector"}) == 0
        assert up("flyte_connector_up", {"task_type": "job", "connector": "Job Connector"}) == 1


async def test_connectors_close_their_clients_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "lifecycle_token").write_text("t0ken")
    marker = tmp_path / "closed"
    env = {**ENV, "FLYTE_SECRETS_DEFAULT_DIR": str(tmp_path), "LIFECYCLE_CLOSED_MARKER": str(marker)}
    async with serve_process("--connector", LIFECYCLE, "--shutdown-delay", "0", env=env) as served:
        assert not marker.exists()
        served.proc.send_signal(signal.SIGTERM)
        stderr = await served.finish()
        assert served.proc.returncode == 0, stderr
        assert marker.read_text() == "closed"
        assert "t0ken" not in stderr


async def test_stop_is_safe_to_call_twice_and_concurrently() -> None:
    async with run_service() as running:
        await asyncio.gather(running.service.stop(), running.service.stop())
        await running.service.stop()


# -- limits ---------------------------------------------------------------------------------------


async def test_beyond_max_concurrent_calls_callers_get_resource_exhausted() -> None:
    # The slow connector may hold the whole server here (by default one connector gets half).
    async with run_service(max_concurrent_rpcs=2, limits={"slow": {"max_concurrency": 2}}) as running:
        stub = running.async_stub
        created = await stub.CreateTask(
            agent_pb2.CreateTaskRequest(template=task_template("slow", version=1, custom={"seconds": 1})), timeout=5
        )
        busy = [asyncio.ensure_future(stub.GetTask(_get_request(created.resource_meta, "slow", 1), timeout=10))]
        busy.append(asyncio.ensure_future(stub.GetTask(_get_request(created.resource_meta, "slow", 1), timeout=10)))
        await asyncio.sleep(0.3)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details()
        for call in busy:
            assert (await call).resource.phase == execution_pb2.TaskExecution.SUCCEEDED
        # Once the load is gone, calls are accepted again.
        assert (await running.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)).agents


async def test_server_side_cap_bounds_a_call_whatever_the_deadline() -> None:
    async with run_service(operation_timeouts={"get": 0.3}) as running:
        stub = running.async_stub
        created = await stub.CreateTask(
            agent_pb2.CreateTaskRequest(template=task_template("slow", version=1, custom={"seconds": 30})), timeout=5
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetTask(_get_request(created.resource_meta, "slow", 1), timeout=20)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "did not finish" in (err.value.details() or "")
        assert loop.time() - started < 10


async def test_messages_beyond_the_size_limit_are_refused_without_harm() -> None:
    async with run_service(max_message_size=64 * 1024) as running:
        big = task_template("job", custom={"blob": "x" * (128 * 1024)})
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.async_stub.CreateTask(agent_pb2.CreateTaskRequest(template=big), timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await running.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)).agents


# -- connection churn -----------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_propellers_discovery_churn_leaks_no_connections() -> None:
    async with run_service() as running:

        async def discover() -> None:
            async with grpc.aio.insecure_channel(running.address) as channel:
                stub = agent_pb2_grpc.AgentMetadataServiceStub(channel)
                await stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)

        for _ in range(20):  # warm up: grpc allocates some fds lazily
            await discover()
        before = _open_fds()
        for _ in range(300):
            await discover()
        await asyncio.sleep(0.5)
        after = _open_fds()
        # Client and server live in this process: a leak would show as ~2 fds per connection.
        assert after - before < 20, (before, after)


# -- logs -----------------------------------------------------------------------------------------


async def test_json_access_log_has_call_fields_and_no_payloads() -> None:
    args = ("--connector", SAMPLES, "--shutdown-delay", "0", "--log-format", "json", "--log-level", "debug")
    env = {**ENV, "CONNECTOR_RESOURCE_META_KEY": "very-secret-signing-key"}
    async with serve_process(*args, env=env) as served:
        from connector_service._literals import python_to_literal_map

        request = agent_pb2.CreateTaskRequest(
            template=task_template("job", inputs={"x": int}, custom={"note": "payload-marker-in-template"}),
            inputs=python_to_literal_map({"x": 987654321}),
        )
        tid = request.task_execution_metadata.task_execution_id
        tid.node_execution_id.execution_id.project = "flytesnacks"
        tid.node_execution_id.execution_id.domain = "development"
        tid.node_execution_id.execution_id.name = "exec1"
        tid.node_execution_id.node_id = "n0"
        tid.task_id.name = "wf.job_task"
        tid.retry_attempt = 2
        async with grpc.aio.insecure_channel(served.address) as channel:
            await agent_pb2_grpc.AsyncAgentServiceStub(channel).CreateTask(request, timeout=5)
        served.proc.send_signal(signal.SIGTERM)
        stderr = await served.finish()
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert records and len(records) == len(stderr.splitlines()), "every line is one JSON object"
    create = next(r for r in records if r.get("operation") == "create")
    assert create["task_type"] == "job"
    assert create["grpc_code"] == "OK"
    assert create["task_execution_id"] == "flytesnacks/development/exec1/n0/wf.job_task/2"
    assert isinstance(create["duration_ms"], float)
    assert create["input_bytes"] > 0  # at debug level: sizes, never contents
    for secret_or_payload in ("987654321", "payload-marker-in-template", "very-secret-signing-key"):
        assert secret_or_payload not in stderr


# -- settings file ---------------------------------------------------------------------------------


def test_yaml_file_is_below_env_and_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "port: 7001\nmetrics_port: 7002\nlog_level: debug\noperation_timeouts: {get: 5}\n"
        "tls: {}\nconnectors: [connectors.echo:echo_connector]\n"
    )
    settings = Settings.load(["--config-file", str(config)])
    assert (settings.port, settings.metrics_port, settings.log_level) == (7001, 7002, "debug")
    assert settings.operation_timeout("get") == 5 and settings.operation_timeout("create") == 60
    assert settings.connectors == ["connectors.echo:echo_connector"]
    monkeypatch.setenv("CONNECTOR_PORT", "7003")
    monkeypatch.setenv("CONNECTOR_CONFIG_FILE", str(config))
    settings = Settings.load(["--metrics-port", "7004"])
    assert (settings.port, settings.metrics_port, settings.log_level) == (7003, 7004, "debug")


def test_bad_yaml_values_are_reported_by_name(tmp_path: Path) -> None:
    from connector_service.config import SettingsError

    config = tmp_path / "bad.yaml"
    config.write_text("port: many\noperation_timeouts: {fetch: 1}\n")
    with pytest.raises(SettingsError) as err:
        Settings.load(["--config-file", str(config)])
    assert "port" in str(err.value) and "operation-timeouts" in str(err.value)
    with pytest.raises(SettingsError, match="not a readable file"):
        Settings.load(["--config-file", str(tmp_path / "missing.yaml")])


async def test_health_turns_not_serving_at_once_on_sigterm() -> None:
    async with serve_process("--shutdown-delay", "3") as served:
        async with grpc.aio.insecure_channel(served.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            served.proc.send_signal(signal.SIGTERM)
            # Within the shutdown delay the server still answers, and says it is going away.
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert served.proc.poll() is None
            check = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stderr = await served.finish()
        assert served.proc.returncode == 0, stderr
