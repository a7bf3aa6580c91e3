"""Propeller's call sequences, over the wire, against the real server."""

from __future__ import annotations

import asyncio
import functools
import pickle
import time
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2

from connector_service import File
from connector_service._literals import literal_map_to_python, python_to_literal_map
from connector_service.testing import task_template
from tests.sample_connectors import BlockingConnector, SlowConnector
from tests.utils import Running, create_task, get_task, run_service, sync_requests

Phase = execution_pb2.TaskExecution


create = create_task
get = functools.partial(get_task, name="job")


def cat(name: str, version: int = 0) -> agent_pb2.TaskCategory:
    return agent_pb2.TaskCategory(name=name, version=version)


# -- discovery -----------------------------------------------------------------------------------


async def test_list_agents_on_fresh_connections_describes_every_connector(svc: Running) -> None:
    for _ in range(3):  # propeller re-dials every 10 s
        async with grpc.aio.insecure_channel(svc.address) as channel:
            from flyteidl.service import agent_pb2_grpc

            response = await agent_pb2_grpc.AgentMetadataServiceStub(channel).ListAgents(
                agent_pb2.ListAgentsRequest(), timeout=5
            )
    agents = {a.name: a for a in response.agents}
    assert {"Echo Connector", "Sensor", "Job Connector", "Upper Connector", "Slow Connector"} <= set(agents)
    echo = agents["Echo Connector"]
    assert echo.is_sync is True
    assert [(c.name, c.version) for c in echo.supported_task_categories] == [("echo", 0)]
    assert list(echo.supported_task_types) == ["echo"]
    assert agents["Sensor"].is_sync is False
    assert [(c.name, c.version) for c in agents["Slow Connector"].supported_task_categories] == [("slow", 1)]
    assert [(c.name, c.version) for c in agents["Upper Connector"].supported_task_categories] == [("upper", 2)]


async def test_get_agent_known_and_unknown(svc: Running) -> None:
    response = await svc.metadata_stub.GetAgent(agent_pb2.GetAgentRequest(name="Job Connector"), timeout=5)
    assert response.agent.name == "Job Connector"
    assert not response.agent.is_sync
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.metadata_stub.GetAgent(agent_pb2.GetAgentRequest(name="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (err.value.details() or "")


# -- async tasks ---------------------------------------------------------------------------------


async def test_create_get_until_succeeded_converts_outputs_with_declared_types(svc: Running) -> None:
    template = task_template("job", custom={"seconds": 0.3}, inputs={"x": int}, outputs={"y": float})
    meta = await create(svc, template, {"x": 21})
    first = await get(svc, meta)
    assert first.phase == Phase.RUNNING
    assert first.log_links[0].uri.startswith("https://jobs.example/job-")
    while (resource := await get(svc, meta)).phase == Phase.RUNNING:
        await asyncio.sleep(0.05)
    assert resource.phase == Phase.SUCCEEDED
    # The connector returned the int 42; the interface declares a float, and GetTask had no
    # template: the declared type travelled in resource_meta.
    y = resource.outputs.literals["y"].scalar.primitive
    assert y.WhichOneof("value") == "float_value"
    assert y.float_value == 42.0
    assert resource.custom_info.fields["job"].string_value.startswith("job-")


async def test_any_replica_answers_for_a_task_created_on_another() -> None:
    async with run_service() as a, run_service() as b:
        template = task_template("job", custom={"seconds": 0}, inputs={"x": int}, outputs={"y": int})
        meta = await create(a, template, {"x": 5})
        await a.service.stop()
        resource = await get(b, meta)
        assert resource.phase == Phase.SUCCEEDED
        assert resource.outputs.literals["y"].scalar.primitive.integer == 10


async def test_job_failure_is_a_phase_not_an_error(svc: Running) -> None:
    template = task_template("job", custom={"seconds": 0, "fail": "quota exceeded"}, inputs={"x": int})
    resource = await get(svc, await create(svc, template, {"x": 1}))
    assert resource.phase == Phase.FAILED
    assert resource.message == "quota exceeded"


async def test_delete_is_forwarded_and_idempotent(svc: Running, tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    template = task_template("job", custom={"seconds": 60, "cancel_marker": str(marker)}, inputs={"x": int})
    meta = await create(svc, template, {"x": 1})
    for _ in range(2):
        await svc.async_stub.DeleteTask(
            agent_pb2.DeleteTaskRequest(task_category=cat("job"), resource_meta=meta), timeout=5
        )
    assert marker.exists()
    assert (await get(svc, meta)).phase == Phase.ABORTED


async def test_deprecated_task_type_falls_back_to_version_zero(svc: Running) -> None:
    meta = await create(svc, task_template("job", inputs={"x": int}, outputs={"y": int}), {"x": 2})
    response = await svc.async_stub.GetTask(agent_pb2.GetTaskRequest(task_type="job", resource_meta=meta), timeout=5)
    assert response.resource.phase == Phase.SUCCEEDED
    # "slow" exists only at version 1: the deprecated field means version 0, and matching is exact.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.async_stub.GetTask(agent_pb2.GetTaskRequest(task_type="slow", resource_meta=meta), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "Cannot find connector for task type: slow (version 0)"


async def test_resource_meta_of_flytekit_shape_is_accepted(svc: Running) -> None:
    # What flytekit's service would have handed propeller: plain JSON of the dataclass.
    raw = b'{"job_id": "j1", "done_at": 0, "result": 7, "fail": null, "cancel_marker": null}'
    resource = await get(svc, raw)
    assert resource.phase == Phase.SUCCEEDED
    assert resource.outputs.literals["y"].scalar.primitive.integer == 7  # no declared type: int stays int


async def test_logs_stream_and_metrics(svc: Running) -> None:
    meta = await create(svc, task_template("job", inputs={"x": int}), {"x": 1})
    stream = svc.async_stub.GetTaskLogs(
        agent_pb2.GetTaskLogsRequest(task_category=cat("job"), resource_meta=meta), timeout=5
    )
    lines = [line async for message in stream for line in message.body.results]
    assert len(lines) == 3
    assert lines[2].endswith("line 2")
    metrics = await svc.async_stub.GetTaskMetrics(
        agent_pb2.GetTaskMetricsRequest(task_category=cat("job"), resource_meta=meta), timeout=5
    )
    assert isinstance(metrics, agent_pb2.GetTaskMetricsResponse)


async def test_connector_without_logs_or_metrics_is_unimplemented(svc: Running) -> None:
    meta = await create(svc, task_template("slow", version=1, custom={"seconds": 0}))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.async_stub.GetTaskMetrics(
            agent_pb2.GetTaskMetricsRequest(task_category=cat("slow", 1), resource_meta=meta), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    stream = svc.async_stub.GetTaskLogs(
        agent_pb2.GetTaskLogsRequest(task_category=cat("slow", 1), resource_meta=meta), timeout=5
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stream:
            pass
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rpc", "request_factory"),
    [
        ("CreateTask", lambda: agent_pb2.CreateTaskRequest(template=task_template("mytype", version=1))),
        ("GetTask", lambda: agent_pb2.GetTaskRequest(task_category=cat("mytype", 1), resource_meta=b"{}")),
        (
            "DeleteTask",
            lambda: agent_pb2.DeleteTaskRequest(task_category=cat("mytype", 1), resource_meta=b"{}"),
        ),
        (
            "GetTaskMetrics",
            lambda: agent_pb2.GetTaskMetricsRequest(task_category=cat("mytype", 1), resource_meta=b"{}"),
        ),
    ],
)
async def test_unknown_task_type_is_not_found(svc: Running, rpc: str, request_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(svc.async_stub, rpc)(request_factory(), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "Cannot find connector for task type: mytype (version 1)"


@pytest.mark.parametrize(
    "meta",
    [
        b"garbage",
        b"\x80\x05\x95" + pickle.dumps({"job_id": "x"})[3:],
        b"",
        b"\x00FCS\x00\xff\xff",
        b'["a list"]',
    ],
    ids=["not-json", "pickle", "empty", "truncated-envelope", "wrong-json-shape"],
)
async def test_undecodable_resource_meta_is_invalid_argument(svc: Running, meta: bytes) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get(svc, meta)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "resource_meta" in (err.value.details() or "")
    # The server is still there for the next caller.
    assert (await svc.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)).agents


async def test_connector_exception_is_internal_with_a_short_message(svc: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(svc, task_template("failing"))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    details = err.value.details() or ""
    assert "RuntimeError: the job API said no (request id 42)" in details
    assert "Traceback" not in details and ".py" not in details
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.async_stub.DeleteTask(
            agent_pb2.DeleteTaskRequest(task_category=cat("failing"), resource_meta=b'{"seconds": 1}'),
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.INTERNAL


async def test_outputs_that_break_the_interface_fail_the_task(svc: Running) -> None:
    template = task_template("failing", outputs={"y": int})
    # The failing connector's get returns y="not a number" for an INTEGER output.
    from connector_service import _envelope

    meta = _envelope.seal(b'{"seconds": 0}', _envelope.compact_output_types(template.interface.outputs))
    resource = await get(svc, meta, name="failing")
    assert resource.phase == Phase.FAILED
    assert "expected INTEGER" in resource.message


async def test_create_without_a_type_is_invalid_argument(svc: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.async_stub.CreateTask(agent_pb2.CreateTaskRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_async_rpc_on_a_sync_connector_is_invalid_argument(svc: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(svc, task_template("echo"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExecuteTaskSync" in (err.value.details() or "")


# -- sync tasks ----------------------------------------------------------------------------------


async def test_echo_returns_its_inputs(svc: Running) -> None:
    template = task_template("echo", inputs={"a": int, "f": dict}, outputs={"a": int, "f": dict})
    inputs = python_to_literal_map({"a": 3, "f": {"k": "v"}}, {"a": template.interface.inputs.variables["a"].type})
    call = svc.sync_stub.ExecuteTaskSync(iter(sync_requests(template, inputs)), timeout=5)
    responses = [r async for r in call]
    assert len(responses) == 1
    resource = responses[0].header.resource
    assert resource.phase == Phase.SUCCEEDED
    assert resource.outputs == inputs


async def test_sync_connector_gets_metadata_and_converts_outputs(svc: Running) -> None:
    template = task_template("upper", version=2, inputs={"s": str}, outputs={"s": str, "n": float, "ns": str})
    requests = sync_requests(template, python_to_literal_map({"s": "abc"}))
    requests[0].header.task_execution_metadata.namespace = "flytesnacks-development"
    responses = [r async for r in svc.sync_stub.ExecuteTaskSync(iter(requests), timeout=5)]
    resource = responses[0].header.resource
    assert literal_map_to_python(resource.outputs) == {"s": "ABC", "n": 3.0, "ns": "flytesnacks-development"}
    requests = sync_requests(template, python_to_literal_map({"s": "fail"}))
    resource = [r async for r in svc.sync_stub.ExecuteTaskSync(iter(requests), timeout=5)][0].header.resource
    assert resource.phase == Phase.FAILED
    assert resource.message == "asked to fail"


def _header(template) -> agent_pb2.ExecuteTaskSyncRequest:  # type: ignore[no-untyped-def]
    return agent_pb2.ExecuteTaskSyncRequest(header=agent_pb2.CreateRequestHeader(template=template))


def _inputs() -> agent_pb2.ExecuteTaskSyncRequest:
    return agent_pb2.ExecuteTaskSyncRequest(inputs=literals_pb2.LiteralMap())


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (lambda t: [_inputs()], "expected the first message to be a header (template, output_prefix), got an inputs"),
        (lambda t: [], "got end of stream"),
        (lambda t: [_header(t)], "expected an inputs message after the header, got end of stream"),
        (
            lambda t: [_header(t), _header(t)],
            "expected an inputs message after the header, got a header message",
        ),
        (lambda t: [_header(t), _inputs(), _inputs()], "expected the client to half-close after inputs"),
    ],
    ids=["inputs-first", "empty", "no-inputs", "two-headers", "extra-message"],
)
async def test_sync_stream_out_of_order_is_invalid_argument(svc: Running, messages, expected: str) -> None:  # type: ignore[no-untyped-def]
    call = svc.sync_stub.ExecuteTaskSync(iter(messages(task_template("echo"))), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (err.value.details() or "")


async def test_sync_unknown_type_and_async_connector(svc: Running) -> None:
    for template, code in (
        (task_template("nope"), grpc.StatusCode.NOT_FOUND),
        (task_template("job"), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        call = svc.sync_stub.ExecuteTaskSync(iter(sync_requests(template, literals_pb2.LiteralMap())), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == code


# -- concurrency and deadlines -------------------------------------------------------------------


async def test_blocking_connector_does_not_stall_other_calls(svc: Running) -> None:
    meta = await create(svc, task_template("blocking", custom={"seconds": 1.5}))
    BlockingConnector.peak = 0
    blocked = [asyncio.ensure_future(get(svc, meta, name="blocking")) for _ in range(6)]
    await asyncio.sleep(0.2)
    # While six calls sit in blocking time.sleep, other RPCs are answered at once.
    fast_meta = await create(svc, task_template("job", inputs={"x": int}), {"x": 1})
    assert (await get(svc, fast_meta)).phase == Phase.SUCCEEDED
    assert not any(task.done() for task in blocked)
    results = await asyncio.gather(*blocked)
    assert all(r.phase == Phase.SUCCEEDED for r in results)
    assert all("connector-worker" in r.message for r in results)  # on the service's own pool
    assert BlockingConnector.peak == 6  # they ran side by side, not one after another


async def test_call_ends_within_the_callers_deadline_and_work_is_cancelled(svc: Running) -> None:
    meta = await create(svc, task_template("slow", version=1, custom={"seconds": 30}))
    before = SlowConnector.cancelled
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get(svc, meta, name="slow", version=1, timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    for _ in range(50):
        if SlowConnector.cancelled > before:
            break
        await asyncio.sleep(0.05)
    assert SlowConnector.cancelled == before + 1  # the server did not keep the work running
    assert (await svc.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)).agents


async def test_blob_outputs_travel_by_uri(svc: Running) -> None:
    from flyteidl.core import types_pb2

    blob_type = types_pb2.LiteralType(blob=types_pb2.BlobType(format="csv"))
    template = task_template("echo", inputs={"f": blob_type}, outputs={"f": blob_type})
    inputs = python_to_literal_map({"f": "s3://bucket/data.csv"}, {"f": blob_type})
    responses = [r async for r in svc.sync_stub.ExecuteTaskSync(iter(sync_requests(template, inputs)), timeout=5)]
    assert literal_map_to_python(responses[0].header.resource.outputs) == {"f": File("s3://bucket/data.csv", "csv")}


async def test_signed_resource_meta_refuses_metas_it_did_not_issue() -> None:
    async with run_service(resource_meta_key="k1") as signed, run_service(resource_meta_key="k2") as other:
        template = task_template("job", inputs={"x": int}, outputs={"y": int})
        meta = await create(signed, template, {"x": 4})
        assert (await get(signed, meta)).outputs.literals["y"].scalar.primitive.integer == 8
        tampered = meta[:-40] + bytes([meta[-40] ^ 1]) + meta[-39:]
        forged = b'{"job_id": "x", "done_at": 0, "result": 1, "fail": null, "cancel_marker": null}'
        for bad in (tampered, forged):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await get(signed, bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get(other, meta)  # signed by another key
        assert "signature" in (err.value.details() or "")


@pytest.mark.parametrize(
    "method", ["AsyncAgentService/CreateTask", "AsyncAgentService/GetTask", "AgentMetadataService/GetAgent"]
)
async def test_an_undecodable_request_is_invalid_argument_not_unknown(svc: Running, method: str) -> None:
    call = svc.channel.unary_unary(f"/flyteidl.service.{method}", request_serializer=lambda b: b)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"\xff\xff\xff\xff", timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a valid flyteidl.admin." in (err.value.details() or "")
