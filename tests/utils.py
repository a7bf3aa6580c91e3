"""Shared test helpers: a real service on a loopback port and flyteidl stubs to call it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2, tasks_pb2
from flyteidl.service import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from connector_service import ConnectorRegistry, ConnectorService, Settings
from connector_service._literals import python_to_literal_map, variable_types

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = "tests.sample_connectors:ALL"


class Stubs:
    """flyteidl stubs over ``self.channel``, as propeller would call them."""

    channel: grpc.aio.Channel

    @property
    def async_stub(self) -> agent_pb2_grpc.AsyncAgentServiceStub:
        return agent_pb2_grpc.AsyncAgentServiceStub(self.channel)

    @property
    def sync_stub(self) -> agent_pb2_grpc.SyncAgentServiceStub:
        return agent_pb2_grpc.SyncAgentServiceStub(self.channel)

    @property
    def metadata_stub(self) -> agent_pb2_grpc.AgentMetadataServiceStub:
        return agent_pb2_grpc.AgentMetadataServiceStub(self.channel)

    @property
    def health_stub(self) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel)


@dataclass
class Running(Stubs):
    service: ConnectorService
    channel: grpc.aio.Channel
    address: str


@dataclass
class Remote(Stubs):
    """Stubs for a service running in its own process (``serve_process``)."""

    channel: grpc.aio.Channel


async def create_task(
    svc: Stubs,
    template: tasks_pb2.TaskTemplate,
    inputs: Mapping[str, Any] | literals_pb2.LiteralMap | None = None,
    timeout: float = 10,
    task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
) -> bytes:
    """CreateTask as propeller sends it; dict inputs are typed by the template's interface."""
    if not isinstance(inputs, literals_pb2.LiteralMap):
        inputs = python_to_literal_map(inputs or {}, variable_types(template.interface.inputs))
    request = agent_pb2.CreateTaskRequest(template=template, inputs=inputs, output_prefix="s3://bucket/prefix")
    if task_execution_metadata is not None:
        request.task_execution_metadata.CopyFrom(task_execution_metadata)
    response = await svc.async_stub.CreateTask(request, timeout=timeout)
    return bytes(response.resource_meta)


def task_execution_metadata(
    project: str = "ml", domain: str = "prod", name: str = "a1b2", node: str = "n0", retry: int = 0
) -> agent_pb2.TaskExecutionMetadata:
    """What propeller sends about a task execution: its id (project, domain, execution, node, attempt)."""
    meta = agent_pb2.TaskExecutionMetadata()
    tid = meta.task_execution_id
    tid.retry_attempt = retry
    tid.task_id.name = "wf.t"
    tid.node_execution_id.node_id = node
    tid.node_execution_id.execution_id.project = project
    tid.node_execution_id.execution_id.domain = domain
    tid.node_execution_id.execution_id.name = name
    return meta


async def get_task(svc: Stubs, meta: bytes, name: str, version: int = 0, timeout: float = 10) -> agent_pb2.Resource:
    """GetTask by task_category, replaying the resource_meta verbatim as propeller does."""
    category = agent_pb2.TaskCategory(name=name, version=version)
    response = await svc.async_stub.GetTask(
        agent_pb2.GetTaskRequest(task_category=category, resource_meta=meta, output_prefix="s3://bucket/prefix"),
        timeout=timeout,
    )
    return response.resource


async def delete_task(svc: Stubs, meta: bytes, name: str, version: int = 0, timeout: float = 5) -> None:
    category = agent_pb2.TaskCategory(name=name, version=version)
    await svc.async_stub.DeleteTask(
        agent_pb2.DeleteTaskRequest(task_category=category, resource_meta=meta), timeout=timeout
    )


def test_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "shutdown_delay": 0,
        "grace_period": 2,
        "thread_pool_size": 8,
    }
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def run_service(connectors: tuple[str, ...] = (SAMPLES,), **overrides: Any) -> AsyncIterator[Running]:
    settings = test_settings(**overrides)
    registry = ConnectorRegistry.from_settings(settings.model_copy(update={"connectors": list(connectors)}))
    service = ConnectorService(settings, registry)
    await service.start()
    address = f"127.0.0.1:{service.port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Running(service=service, channel=channel, address=address)
    finally:
        await channel.close()
        await service.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sync_requests(
    template: tasks_pb2.TaskTemplate, inputs: literals_pb2.LiteralMap, output_prefix: str = "s3://bucket/out"
) -> list[agent_pb2.ExecuteTaskSyncRequest]:
    """Propeller's sequence: header, then inputs, then half-close."""
    return [
        agent_pb2.ExecuteTaskSyncRequest(
            header=agent_pb2.CreateRequestHeader(template=template, output_prefix=output_prefix)
        ),
        agent_pb2.ExecuteTaskSyncRequest(inputs=inputs),
    ]


ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``connector-service ARGS`` as a real process to completion, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "connector_service", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env or ENV),
    )


async def wait_serving(address: str, proc: subprocess.Popen[str], seconds: float = 30) -> None:
    """Poll grpc.health.v1 until the server says SERVING, failing early if the process died."""
    deadline = time.monotonic() + seconds
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


@dataclass
class Served:
    proc: subprocess.Popen[str]
    address: str

    async def finish(self, timeout: float = 30) -> str:
        """Wait for the process to exit; return its stderr (the log)."""
        _, stderr = await asyncio.to_thread(self.proc.communicate, timeout=timeout)
        return str(stderr)


@contextlib.asynccontextmanager
async def serve_process(
    *args: str, env: dict[str, str] | None = None, command: list[str] | None = None
) -> AsyncIterator[Served]:
    """``connector-service serve`` as a real subprocess on a free loopback port, killed on exit."""
    port = free_port()
    cmd = command or [sys.executable, "-m", "connector_service"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env or ENV,
    )
    try:
        address = f"127.0.0.1:{port}"
        await wait_serving(address, proc)
        yield Served(proc=proc, address=address)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
