"""The command line, as an operator runs it: real subprocesses, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from flyteidl.service import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from connector_service.testing import task_template
from tests.utils import SAMPLES, free_port

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector_service", *args], capture_output=True, text=True, timeout=60, env=ENV
    )


def test_list_prints_connectors_and_sensors() -> None:
    result = cli("list", "--connector", SAMPLES)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^Echo Connector +echo +0 +true", result.stdout, re.M)
    assert "Upper Connector" in result.stdout and "upper" in result.stdout
    assert "FileSensor" in result.stdout and "SlowSensor" in result.stdout


def test_bad_connector_fails_start_up_with_a_clear_message() -> None:
    result = cli("serve", "--connector", "connectors.echo:nope", "--port", "0", "--metrics-port", "0")
    assert result.returncode == 2
    assert "has no attribute 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_fails_with_its_name() -> None:
    result = cli("serve", "--port", "not-a-port")
    assert result.returncode == 2
    assert "port" in result.stderr


def test_serve_help_lists_settings() -> None:
    result = cli("serve", "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--metrics-port", "--connector", "--log-level", "--thread-pool-size"):
        assert flag in result.stdout


async def _wait_serving(address: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("service did not become SERVING")


@pytest.mark.parametrize("module", [True, False], ids=["python-m", "console-script"])
async def test_serve_answers_then_sigterm_lets_in_flight_calls_finish(module: bool) -> None:
    port = free_port()
    cmd = (
        [sys.executable, "-m", "connector_service"]
        if module
        else [os.path.join(os.path.dirname(sys.executable), "connector-service")]
    )
    proc = subprocess.Popen(
        [*cmd, "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
         "--connector", SAMPLES, "--shutdown-delay", "0.2", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        await _wait_serving(address, proc)
        async with grpc.aio.insecure_channel(address) as channel:
            agents = await agent_pb2_grpc.AgentMetadataServiceStub(channel).ListAgents(
                agent_pb2.ListAgentsRequest(), timeout=5
            )
            assert "Echo Connector" in {a.name for a in agents.agents}
            stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
            meta = (
                await stub.CreateTask(
                    agent_pb2.CreateTaskRequest(template=task_template("slow", version=1, custom={"seconds": 1.5})),
                    timeout=5,
                )
            ).resource_meta
            in_flight = asyncio.ensure_future(
                stub.GetTask(
                    agent_pb2.GetTaskRequest(
                        task_category=agent_pb2.TaskCategory(name="slow", version=1), resource_meta=meta
                    ),
                    timeout=10,
                )
            )
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            response = await in_flight
            assert response.resource.phase == execution_pb2.TaskExecution.SUCCEEDED
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
        rc = proc.returncode
        assert rc == 0, stderr
        assert '"message": "SIGTERM: shutting down"' in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


async def test_a_second_signal_forces_exit_while_draining() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector_service", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", "0", "--connector", SAMPLES, "--shutdown-delay", "0", "--grace-period", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        await _wait_serving(address, proc)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
            template = task_template("slow", version=1, custom={"seconds": 60})
            created = await stub.CreateTask(agent_pb2.CreateTaskRequest(template=template), timeout=5)
            category = agent_pb2.TaskCategory(name="slow", version=1)
            request = agent_pb2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta)
            in_flight = asyncio.ensure_future(stub.GetTask(request, timeout=90))
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            await asyncio.sleep(1.0)
            assert proc.poll() is None  # still draining the 60 s call
            proc.send_signal(signal.SIGINT)
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=15)
            assert proc.returncode == 1
            assert "second SIGINT: exiting now" in stderr
            with pytest.raises(grpc.aio.AioRpcError):
                await in_flight
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
