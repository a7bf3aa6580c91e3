"""gRPC server metrics: the interceptor on a real grpc.aio server, plus the pool and poke helpers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2
from flyteidl.service import agent_pb2_grpc
from prometheus_client import CollectorRegistry

from connector_service._grpc_metrics import GrpcServerMetrics, InstrumentedServer, InstrumentedThreadPoolExecutor
from connector_service._literals import python_to_literal_map
from connector_service.metrics import ConnectorMetrics
from connector_service.registry import ConnectorRegistry
from connector_service.servicer import AgentMetadataServicer, AsyncAgentServicer, SyncAgentServicer
from connector_service.testing import task_template
from tests.utils import SAMPLES, Stubs, sync_requests, test_settings

ASYNC = "flyteidl.service.AsyncAgentService"
SYNC = "flyteidl.service.SyncAgentService"
META = "flyteidl.service.AgentMetadataService"
TEST = "test.Raw"


@dataclass
class Server(Stubs):
    registry: CollectorRegistry
    channel: grpc.aio.Channel
    release: asyncio.Event

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def handled(self, grpc_type: str, service: str, method: str, code: str) -> float:
        return self.value(
            "grpc_server_handled_total", grpc_type=grpc_type, grpc_service=service, grpc_method=method, grpc_code=code
        )

    def started(self, grpc_type: str, service: str, method: str) -> float:
        return self.value("grpc_server_started_total", grpc_type=grpc_type, grpc_service=service, grpc_method=method)

    def inflight(self, service: str, method: str) -> float:
        return self.value("flyte_connector_inflight_requests", grpc_service=service, grpc_method=method)

    async def settle(self, service: str, method: str) -> None:
        """Wait for the server side of finished calls: ``abort`` sends the status before the
        handler (and its measurement) finishes, so a client can see the error first."""
        for _ in range(200):
            if self.inflight(service, method) == 0:
                return
            await asyncio.sleep(0.005)


def _raw_handlers(release: asyncio.Event) -> grpc.GenericRpcHandler:
    """Handler shapes the flyteidl servicers do not use: set_code, raise, writer API, client stream."""

    async def set_code(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        return b""

    async def boom(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("boom")

    async def write(request: bytes, context: grpc.aio.ServicerContext) -> None:
        for _ in range(2):
            await context.write(b"x")

    async def block(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await release.wait()
        return b""

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b"first"
        await release.wait()
        yield b"second"

    async def count(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        return str(len([r async for r in requests])).encode()

    return grpc.method_handlers_generic_handler(
        TEST,
        {
            "SetCode": grpc.unary_unary_rpc_method_handler(set_code),
            "Boom": grpc.unary_unary_rpc_method_handler(boom),
            "Write": grpc.unary_stream_rpc_method_handler(write),
            "Block": grpc.unary_unary_rpc_method_handler(block),
            "Count": grpc.stream_unary_rpc_method_handler(count),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    metrics_registry = CollectorRegistry()
    connectors = ConnectorRegistry.build((SAMPLES,))
    metrics = ConnectorMetrics(metrics_registry)
    settings = test_settings()
    release = asyncio.Event()
    srv = grpc.aio.server()
    measured = InstrumentedServer(srv, GrpcServerMetrics(metrics_registry))
    agent_pb2_grpc.add_AsyncAgentServiceServicer_to_server(AsyncAgentServicer(connectors, metrics, settings), measured)
    agent_pb2_grpc.add_SyncAgentServiceServicer_to_server(SyncAgentServicer(connectors, metrics, settings), measured)
    agent_pb2_grpc.add_AgentMetadataServiceServicer_to_server(
        AgentMetadataServicer(connectors, metrics, settings), measured
    )
    measured.add_generic_rpc_handlers((_raw_handlers(release),))
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Server(metrics_registry, channel, release)
    finally:
        release.set()
        await channel.close()
        await srv.stop(None)


async def test_unary_ok_counts_started_handled_latency_and_inflight(server: Server) -> None:
    for _ in range(3):
        await server.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)
    assert server.started("unary", META, "ListAgents") == 3
    assert server.handled("unary", META, "ListAgents", "OK") == 3
    labels = {"grpc_type": "unary", "grpc_service": META, "grpc_method": "ListAgents"}
    assert server.value("grpc_server_handling_seconds_count", **labels) == 3
    assert server.value("grpc_server_handling_seconds_bucket", le="30.0", **labels) == 3
    assert server.inflight(META, "ListAgents") == 0


async def test_abort_is_counted_with_its_code(server: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.metadata_stub.GetAgent(agent_pb2.GetAgentRequest(name="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await server.settle(META, "GetAgent")
    assert server.handled("unary", META, "GetAgent", "NOT_FOUND") == 1
    assert server.handled("unary", META, "GetAgent", "OK") == 0
    assert server.inflight(META, "GetAgent") == 0


async def test_bidi_invalid_argument_and_ok(server: Server) -> None:
    bad = [agent_pb2.ExecuteTaskSyncRequest(inputs=literals_pb2.LiteralMap())]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        _ = [r async for r in server.sync_stub.ExecuteTaskSync(iter(bad), timeout=5)]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await server.settle(SYNC, "ExecuteTaskSync")
    assert server.handled("bidi_stream", SYNC, "ExecuteTaskSync", "INVALID_ARGUMENT") == 1

    template = task_template("echo", inputs={"a": int}, outputs={"a": int})
    inputs = python_to_literal_map({"a": 3}, {"a": template.interface.inputs.variables["a"].type})
    responses = [r async for r in server.sync_stub.ExecuteTaskSync(iter(sync_requests(template, inputs)), timeout=5)]
    assert responses[0].header.resource.outputs == inputs
    assert server.started("bidi_stream", SYNC, "ExecuteTaskSync") == 2
    assert server.handled("bidi_stream", SYNC, "ExecuteTaskSync", "OK") == 1
    assert server.inflight(SYNC, "ExecuteTaskSync") == 0


async def test_server_stream_reyields_every_message(server: Server) -> None:
    template = task_template("job", inputs={"x": int})
    created = await server.async_stub.CreateTask(
        agent_pb2.CreateTaskRequest(
            template=template, inputs=python_to_literal_map({"x": 1}), output_prefix="s3://b/p"
        ),
        timeout=5,
    )
    request = agent_pb2.GetTaskLogsRequest(
        task_category=agent_pb2.TaskCategory(name="job", version=0), resource_meta=created.resource_meta
    )
    messages = [m async for m in server.async_stub.GetTaskLogs(request, timeout=5)]
    lines = [line for m in messages for line in m.body.results]
    assert len(lines) == 3 and lines[0].endswith("line 0")
    assert server.handled("unary", ASYNC, "CreateTask", "OK") == 1
    assert server.handled("server_stream", ASYNC, "GetTaskLogs", "OK") == 1
    assert server.inflight(ASYNC, "GetTaskLogs") == 0


async def test_deadline_is_a_non_ok_code_and_inflight_returns_to_zero(server: Server) -> None:
    template = task_template("slow", version=1, custom={"seconds": 30})
    created = await server.async_stub.CreateTask(
        agent_pb2.CreateTaskRequest(template=template, output_prefix="s3://b/p"), timeout=5
    )
    request = agent_pb2.GetTaskRequest(
        task_category=agent_pb2.TaskCategory(name="slow", version=1), resource_meta=created.resource_meta
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.async_stub.GetTask(request, timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):
        if server.inflight(ASYNC, "GetTask") == 0:
            break
        await asyncio.sleep(0.02)
    assert server.inflight(ASYNC, "GetTask") == 0
    assert server.started("unary", ASYNC, "GetTask") == 1
    handled = {
        s.labels["grpc_code"]: s.value
        for metric in server.registry.collect()
        if metric.name == "grpc_server_handled"
        for s in metric.samples
        if s.name == "grpc_server_handled_total" and s.labels["grpc_method"] == "GetTask"
    }
    # One non-OK outcome: DEADLINE_EXCEEDED whether the servicer gave up first (abort) or grpc
    # cancelled the handler at the deadline (CancelledError with time_remaining() == 0).
    assert handled == {"OK": 0.0, "DEADLINE_EXCEEDED": 1.0}


async def test_client_cancel_is_cancelled_and_inflight_is_live(server: Server) -> None:
    call = server.channel.unary_unary(f"/{TEST}/Block")(b"", timeout=5)
    for _ in range(100):
        if server.inflight(TEST, "Block") == 1:
            break
        await asyncio.sleep(0.01)
    assert server.inflight(TEST, "Block") == 1
    call.cancel()
    for _ in range(100):
        if server.inflight(TEST, "Block") == 0:
            break
        await asyncio.sleep(0.01)
    assert server.inflight(TEST, "Block") == 0
    assert server.handled("unary", TEST, "Block", "CANCELLED") == 1


async def test_stream_cancelled_mid_way_is_cancelled(server: Server) -> None:
    call = server.channel.unary_stream(f"/{TEST}/Stream")(b"", timeout=5)
    assert await call.read() == b"first"
    assert server.inflight(TEST, "Stream") == 1
    call.cancel()
    for _ in range(100):
        if server.inflight(TEST, "Stream") == 0:
            break
        await asyncio.sleep(0.01)
    assert server.inflight(TEST, "Stream") == 0
    assert server.handled("server_stream", TEST, "Stream", "CANCELLED") == 1
    assert server.handled("server_stream", TEST, "Stream", "OK") == 0


async def test_handler_cancelled_at_its_deadline_is_deadline_exceeded(server: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.channel.unary_unary(f"/{TEST}/Block")(b"", timeout=0.2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):
        if server.inflight(TEST, "Block") == 0:
            break
        await asyncio.sleep(0.01)
    assert server.handled("unary", TEST, "Block", "DEADLINE_EXCEEDED") == 1
    assert server.inflight(TEST, "Block") == 0


async def test_set_code_raise_writer_api_and_client_stream(server: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.channel.unary_unary(f"/{TEST}/SetCode")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert server.handled("unary", TEST, "SetCode", "FAILED_PRECONDITION") == 1

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.channel.unary_unary(f"/{TEST}/Boom")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    assert server.handled("unary", TEST, "Boom", "UNKNOWN") == 1

    assert [m async for m in server.channel.unary_stream(f"/{TEST}/Write")(b"", timeout=5)] == [b"x", b"x"]
    assert server.handled("server_stream", TEST, "Write", "OK") == 1

    reply = await server.channel.stream_unary(f"/{TEST}/Count")(iter([b"a", b"b", b"c"]), timeout=5)
    assert reply == b"3"
    assert server.handled("client_stream", TEST, "Count", "OK") == 1


async def test_unknown_method_is_unimplemented_and_not_recorded(server: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.channel.unary_unary("/no.Such/Method")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert server.started("unary", "no.Such", "Method") == 0


async def test_wrapped_handler_is_cached_per_method_and_unknown_methods_are_not() -> None:
    async def behaviour(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.unary_unary_rpc_method_handler(behaviour)
    registered: list[Any] = []

    class FakeServer:  # only what registration touches
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            registered.extend(handlers)

    measured = InstrumentedServer(FakeServer(), GrpcServerMetrics(CollectorRegistry()))
    measured.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("a.B", {"C": handler}),))

    @dataclass
    class Details:
        method: str

    (generic,) = registered
    first = generic.service(Details("/a.B/C"))
    second = generic.service(Details("/a.B/C"))
    assert first is second and first is not handler
    assert generic.service(Details("/x.Y/Z")) is None
    assert list(generic._cache) == ["/a.B/C"]


async def test_pool_executor_tracks_busy_threads_and_size() -> None:
    metrics = GrpcServerMetrics(CollectorRegistry())
    pool = InstrumentedThreadPoolExecutor(3, metrics, thread_name_prefix="t")
    value = metrics.registry.get_sample_value
    assert value("flyte_connector_thread_pool_size") == 3
    gate, entered = threading.Event(), threading.Barrier(3)

    def work(n: int) -> int:
        entered.wait(5)
        gate.wait(5)
        return n * 2

    loop = asyncio.get_running_loop()
    futures = [loop.run_in_executor(pool, work, 1), asyncio.wrap_future(pool.submit(work, n=2))]
    await asyncio.to_thread(entered.wait, 5)  # both workers are inside work()
    assert value("flyte_connector_thread_pool_busy") == 2
    gate.set()
    assert await asyncio.gather(*futures) == [2, 4]
    assert value("flyte_connector_thread_pool_busy") == 0
    pool.shutdown(wait=True)

    metrics.pool_busy.inc()  # the plain inc/dec pair works too
    metrics.pool_busy.dec()
    assert value("flyte_connector_thread_pool_busy") == 0


def test_observe_poke() -> None:
    metrics = GrpcServerMetrics(CollectorRegistry())
    metrics.observe_poke("file", "true", 0.002)
    metrics.observe_poke("file", "false", 0.004)
    metrics.observe_poke("file", "false", 0.004)
    metrics.observe_poke("time", "timeout", 31.0)
    value = metrics.registry.get_sample_value
    assert value("flyte_connector_sensor_pokes_total", {"sensor": "file", "outcome": "false"}) == 2
    assert value("flyte_connector_sensor_pokes_total", {"sensor": "file", "outcome": "error"}) == 0
    assert value("flyte_connector_sensor_pokes_total", {"sensor": "time", "outcome": "timeout"}) == 1
    assert value("flyte_connector_sensor_poke_seconds_count", {"sensor": "file"}) == 3
    assert value("flyte_connector_sensor_poke_seconds_bucket", {"sensor": "time", "le": "30.0"}) == 0
    with pytest.raises(ValueError, match="outcome"):
        metrics.observe_poke("file", "maybe", 0.1)
