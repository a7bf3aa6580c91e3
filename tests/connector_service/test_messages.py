"""Request-controlled values echoed in statuses and log lines stay bounded, over the wire."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import identifier_pb2

from connector_service import clip
from connector_service._literals import python_to_literal_map
from connector_service._messages import MAX_STATUS_BYTES, bound_status_message
from connector_service.testing import task_template
from tests.utils import Running, sync_requests

HUGE = "t" * 11_000
"""An 11 KB value: its echo alone would outgrow the 8 KiB of metadata grpc clients accept."""


def test_clip_keeps_short_values_and_cuts_long_ones_with_an_ellipsis() -> None:
    assert clip("echo") == "echo"
    assert clip(HUGE) == "t" * 197 + "..."
    assert len(clip(HUGE, 50)) == 50
    assert clip(ValueError("x" * 500)).endswith("...")


def test_status_messages_are_bounded_as_they_travel() -> None:
    # grpc percent-encodes what is not printable ASCII: an "é" is 6 bytes in the trailer.
    for text in (HUGE, "é" * 5_000, "%" * 2_000, "\n" * 2_000, "ok"):
        bounded = bound_status_message(text)
        wire = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in bounded.encode())
        assert wire <= MAX_STATUS_BYTES
    assert bound_status_message("ok") == "ok"
    assert bound_status_message("é" * 100) == "é" * 100


def test_conversion_errors_clip_the_value_name() -> None:
    from flyteidl.core import types_pb2

    from connector_service._literals import LiteralConversionError, to_literal

    int_type = types_pb2.LiteralType(simple=types_pb2.SimpleType.INTEGER)
    with pytest.raises(LiteralConversionError) as err:
        to_literal("not an int", int_type, name=HUGE)
    assert len(str(err.value)) < 400 and HUGE not in str(err.value)


def _create(template: Any, **kw: Any) -> agent_pb2.CreateTaskRequest:
    return agent_pb2.CreateTaskRequest(template=template, output_prefix="s3://b/p", **kw)


def _get(name: str) -> agent_pb2.GetTaskRequest:
    return agent_pb2.GetTaskRequest(task_category=agent_pb2.TaskCategory(name=name), resource_meta=b"x")


CASES: dict[str, tuple[Callable[[Running], Awaitable[Any]], grpc.StatusCode]] = {
    "CreateTask of an 11 KB task type": (
        lambda s: s.async_stub.CreateTask(_create(task_template(HUGE)), timeout=5),
        grpc.StatusCode.NOT_FOUND,
    ),
    "CreateTask of a non-ASCII task type": (
        lambda s: s.async_stub.CreateTask(_create(task_template("é" * 5_000)), timeout=5),
        grpc.StatusCode.NOT_FOUND,
    ),
    "GetTask of an 11 KB task category": (
        lambda s: s.async_stub.GetTask(_get(HUGE), timeout=5),
        grpc.StatusCode.NOT_FOUND,
    ),
    "DeleteTask of an 11 KB deprecated task_type": (
        lambda s: s.async_stub.DeleteTask(agent_pb2.DeleteTaskRequest(task_type=HUGE, resource_meta=b"x"), timeout=5),
        grpc.StatusCode.NOT_FOUND,
    ),
    "GetAgent of an 11 KB name": (
        lambda s: s.metadata_stub.GetAgent(agent_pb2.GetAgentRequest(name=HUGE), timeout=5),
        grpc.StatusCode.NOT_FOUND,
    ),
    "ExecuteTaskSync of an 11 KB task type": (
        lambda s: _drain(
            s.sync_stub.ExecuteTaskSync(iter(sync_requests(task_template(HUGE), python_to_literal_map({}))), timeout=5)
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "a sensor of an 11 KB name": (
        lambda s: s.async_stub.CreateTask(
            _create(task_template("sensor", custom={"sensor_name": HUGE, "sensor_module": HUGE})), timeout=5
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "a sensor config with an 11 KB key": (
        lambda s: s.async_stub.CreateTask(
            _create(
                task_template(
                    "sensor",
                    custom={
                        "sensor_name": "DateTimeSensor",
                        "sensor_config": {"datetime": "2024-01-01T00:00:00Z", HUGE: 1},
                    },
                )
            ),
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "a sensor input with an 11 KB name": (
        lambda s: s.async_stub.CreateTask(
            _create(
                task_template("sensor", custom={"sensor_name": "FileSensor"}), inputs=python_to_literal_map({HUGE: "x"})
            ),
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
}


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


@pytest.mark.parametrize("case", list(CASES))
async def test_oversized_request_values_get_their_status_with_a_bounded_message(
    svc: Running, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    send, code = CASES[case]
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await send(svc)
    # The status itself arrives (not "Stream removed" for an oversized trailer) ...
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    assert len(details.encode()) <= MAX_STATUS_BYTES
    assert HUGE not in details and "t" * 201 not in details
    # ... and no log line carries the whole value either.
    lines = [r.getMessage() for r in caplog.records] + [
        str(getattr(r, "task_execution_id", "")) for r in caplog.records
    ]
    assert lines
    assert all(len(line) < 2_000 for line in lines), max(lines, key=len)[:300]


async def test_access_log_bounds_a_forged_task_execution_id(svc: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connector_service.rpc")
    task_id = identifier_pb2.TaskExecutionIdentifier(
        node_execution_id=identifier_pb2.NodeExecutionIdentifier(
            node_id=HUGE, execution_id=identifier_pb2.WorkflowExecutionIdentifier(project="p", domain="d", name=HUGE)
        )
    )
    metadata = agent_pb2.TaskExecutionMetadata(task_execution_id=task_id)
    await svc.async_stub.CreateTask(
        _create(
            task_template("job", inputs={"x": int}),
            inputs=python_to_literal_map({"x": 1}),
            task_execution_metadata=metadata,
        ),
        timeout=5,
    )
    ids = [str(getattr(r, "task_execution_id", "")) for r in caplog.records if hasattr(r, "task_execution_id")]
    assert ids and all(600 >= len(i) > 100 for i in ids)
