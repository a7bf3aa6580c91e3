"""Health, reflection and metrics of a running service."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from flyteidl.admin import agent_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from connector_service.server import SERVICE_NAMES
from connector_service.testing import task_template
from tests.utils import Running, free_port, run_service

SERVING = health_pb2.HealthCheckResponse.SERVING


async def test_health_is_serving_for_the_server_and_each_service(svc: Running) -> None:
    for name in ("", *SERVICE_NAMES):
        response = await svc.health_stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert response.status == SERVING, name
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.health_stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_turns_not_serving_on_stop() -> None:
    async with run_service() as running:
        watch = running.health_stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        first = await watch.read()
        assert first.status == SERVING
        stopping = asyncio.ensure_future(running.service.stop())
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def test_reflection_lists_the_services(svc: Running) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(svc.channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = set()
    async for response in call:
        names |= {s.name for s in response.list_services_response.service}
    assert set(SERVICE_NAMES) <= names
    assert "grpc.health.v1.Health" in names


async def test_metrics_endpoint_counts_requests_with_flytekit_names() -> None:
    port = free_port()
    async with run_service(metrics_port=port, metrics_host="127.0.0.1") as running:
        await running.async_stub.CreateTask(
            agent_pb2.CreateTaskRequest(template=task_template("job", inputs={"x": int})), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await running.async_stub.CreateTask(agent_pb2.CreateTaskRequest(template=task_template("nope")), timeout=5)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'flyte_connector_requests_success_total{operation="create",task_type="job"} 1.0' in body
    assert 'flyte_connector_requests_failure_total{error_code="404",operation="create",task_type="unknown"} 1.0' in body
    assert 'flyte_connector_request_latency_seconds_bucket{le="0.005",operation="create",task_type="job"}' in body
    assert "process_resident_memory_bytes" in body


async def test_metrics_endpoint_has_grpc_server_pool_and_sensor_metrics(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flyteidl.admin import agent_pb2 as pb

    port = free_port()
    async with run_service(metrics_port=port, metrics_host="127.0.0.1") as running:
        await running.metadata_stub.ListAgents(pb.ListAgentsRequest(), timeout=5)
        template = task_template("sensor", custom={"sensor_name": "FileSensor"}, inputs={"path": str})
        from connector_service._literals import python_to_literal_map

        created = await running.async_stub.CreateTask(
            pb.CreateTaskRequest(template=template, inputs=python_to_literal_map({"path": str(tmp_path / "nope")})),
            timeout=5,
        )
        category = pb.TaskCategory(name="sensor", version=0)
        await running.async_stub.GetTask(
            pb.GetTaskRequest(task_category=category, resource_meta=created.resource_meta), timeout=5
        )
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="ListAgents",'
        'grpc_service="flyteidl.service.AgentMetadataService",grpc_type="unary"} 1.0'
    ) in body
    assert 'grpc_server_started_total{grpc_method="GetTask"' in body
    assert "grpc_server_handling_seconds_bucket" in body
    assert "flyte_connector_thread_pool_size 8.0" in body
    assert 'flyte_connector_sensor_pokes_total{outcome="false",sensor="FileSensor"} 1.0' in body
    assert "flyte_connector_inflight_requests" in body


def _reflect_and_call(address: str) -> dict[str, object]:
    """What grpcurl does: learn every service from reflection alone, then call through it.

    A fresh DescriptorPool backed only by the server's reflection answers, so nothing this
    test process happens to have imported can fill in a descriptor the server did not send.
    """
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    found: dict[str, object] = {}
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        found["services"] = sorted(database.get_services())
        for name in found["services"]:  # type: ignore[attr-defined]
            service = pool.FindServiceByName(name)
            found[name] = sorted(m.name for m in service.methods)
        found["agent.proto"] = pool.FindFileByName("flyteidl/service/agent.proto").name

        def call(service_name: str, method: str, **fields: object) -> object:
            descriptor = pool.FindServiceByName(service_name).methods_by_name[method]
            request_cls = message_factory.GetMessageClass(descriptor.input_type)
            response_cls = message_factory.GetMessageClass(descriptor.output_type)
            rpc = channel.unary_unary(
                f"/{service_name}/{method}",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            return rpc(request_cls(**fields), timeout=5)

        listed = call("flyteidl.service.AgentMetadataService", "ListAgents")
        found["agents"] = sorted(agent.name for agent in listed.agents)  # type: ignore[attr-defined]
        got = call("flyteidl.service.AgentMetadataService", "GetAgent", name="Echo Connector")
        found["get_agent"] = got.agent.name  # type: ignore[attr-defined]
        health = call("grpc.health.v1.Health", "Check", service="flyteidl.service.AsyncAgentService")
        found["health"] = health.status  # type: ignore[attr-defined]
    return found


async def test_reflection_describes_every_service_and_calls_work_through_it() -> None:
    from tests.utils import serve_process

    async with serve_process() as served:
        found = await asyncio.to_thread(_reflect_and_call, served.address)
        served.proc.terminate()
        log = await served.finish()
    assert set(SERVICE_NAMES) | {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        found["services"]  # type: ignore[arg-type]
    )
    assert found["flyteidl.service.AsyncAgentService"] == [
        "CreateTask", "DeleteTask", "GetTask", "GetTaskLogs", "GetTaskMetrics",
    ]  # fmt: skip
    assert found["flyteidl.service.SyncAgentService"] == ["ExecuteTaskSync"]
    assert found["flyteidl.service.AgentMetadataService"] == ["GetAgent", "ListAgents"]
    assert found["agent.proto"] == "flyteidl/service/agent.proto"
    assert "Echo Connector" in found["agents"]  # type: ignore[operator]
    assert found["get_agent"] == "Echo Connector"
    assert found["health"] == SERVING
    assert "Traceback" not in log


async def test_reflection_calls_are_measured() -> None:
    port = free_port()
    async with run_service(metrics_port=port, metrics_host="127.0.0.1") as running:
        stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        assert [r async for r in call]
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="ServerReflectionInfo",'
        'grpc_service="grpc.reflection.v1alpha.ServerReflection",grpc_type="bidi_stream"} 1.0'
    ) in body


async def test_health_list_answers_every_entry(svc: Running, caplog: pytest.LogCaptureFixture) -> None:
    response = await svc.health_stub.List(health_pb2.HealthListRequest(), timeout=5)
    statuses = {name: value.status for name, value in response.statuses.items()}
    for name in ("", *SERVICE_NAMES, "connector/echo_v0", "sensor/FileSensor"):
        assert statuses.get(name) == SERVING, name
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_start_up_imports_no_client_library_and_no_tool() -> None:
    """The whole catalogue registered, the service serving: client libraries (each connector's
    own), reflection and protobuf's JSON support are imported on first use, never at start-up,
    so start-up time and idle memory do not grow with the catalogue."""
    import subprocess
    import sys

    lazy = (
        "httpx", "asyncpg", "asyncssh", "fsspec", "s3fs", "yaml", "flyteidl2", "grpc_reflection.v1alpha", "difflib",
        "google.protobuf.json_format", "google.auth", "google.cloud", "snowflake", "botocore", "aiobotocore",
        "openai", "databricks", "duckdb",
    )  # fmt: skip
    script = f"""
import asyncio, sys
from connector_service import ConnectorRegistry, ConnectorService, Settings

async def main():
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0, shutdown_delay=0)
    registry = ConnectorRegistry.from_settings(settings)
    service = ConnectorService(settings, registry)
    await service.start()
    print(len(registry.connectors()))
    print(sorted(n for n in sys.modules if n in {lazy!r} or n.startswith(tuple(m + "." for m in {lazy!r}))))
    await service.stop()

asyncio.run(main())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    registered, imported = result.stdout.strip().splitlines()
    assert int(registered) >= 5  # the bundled catalogue, from the entry points
    assert imported == "[]"
