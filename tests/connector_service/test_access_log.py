"""The access log written straight to the stream: same lines as through logging, in order, none lost."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.service import agent_pb2_grpc

from connector_service._access_log import StreamAccessLog, ok_record
from connector_service._logging import JsonFormatter, TextFormatter
from connector_service.testing import task_template
from tests.utils import SAMPLES, serve_process

FIELDS = {
    "operation": "get",
    "task_type": "job",
    "grpc_code": "OK",
    "duration_ms": 0.123,
    "task_execution_id": "p/d/exé/n0/t/1",
}
_TEXT_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_a_line_is_what_the_logging_formatter_writes_for_the_same_record(
    fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="connector_service.rpc")
    record = logging.LogRecord(
        "connector_service.rpc", logging.INFO, __file__, 1, "get job (version 0) OK 0.1ms", None, None
    )
    record.__dict__.update(FIELDS)
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    expected = formatter.format(record)

    stream = io.StringIO()
    access_log = StreamAccessLog(stream, fmt, interval=0.01)
    access_log.line(logging.INFO, "get job (version 0) OK 0.1ms", dict(FIELDS))
    await asyncio.sleep(0)
    assert stream.getvalue() == ""  # batched for the interval
    await asyncio.sleep(0.05)
    written = stream.getvalue()
    assert written.endswith("\n") and written.count("\n") == 1
    if fmt == "json":
        ours, theirs = json.loads(written), json.loads(expected)
        assert ours.pop("time")[:16] == theirs.pop("time")[:16]
        assert ours == theirs
        assert list(json.loads(written)) == list(json.loads(expected))  # same key order
    else:
        assert _TEXT_TIME.match(written) and _TEXT_TIME.match(expected)
        assert _TEXT_TIME.sub("", written) == _TEXT_TIME.sub("", expected) + "\n"


async def test_lines_below_the_level_are_not_written() -> None:
    logger = logging.getLogger("connector_service.rpc")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        stream = io.StringIO()
        access_log = StreamAccessLog(stream, "json", interval=0.01)
        access_log.line(logging.INFO, "get OK", {})
        await asyncio.sleep(0.05)
        assert stream.getvalue() == ""
    finally:
        logger.setLevel(previous)


async def test_a_full_batch_is_written_at_once_and_the_rest_when_the_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="connector_service.rpc")
    stream = io.StringIO()
    access_log = StreamAccessLog(stream, "text", interval=0.05, max_lines=3)
    for n in range(4):
        access_log.line(logging.INFO, f"call {n}", {})
    assert stream.getvalue().count("\n") == 3  # the third line filled the batch
    await asyncio.sleep(0.15)
    assert [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()] == [f"call {n}" for n in range(4)]
    access_log.line(logging.INFO, "last", {})
    access_log.flush()  # as at shutdown: nothing waits for the timer
    assert stream.getvalue().endswith("last\n")


async def test_every_call_is_logged_once_and_in_order_with_the_other_records() -> None:
    """Over the wire, on the default loop: 400 concurrent calls give 400 lines; a failure's
    traceback (through logging) sits between the calls before and after it."""
    args = ("--connector", SAMPLES, "--shutdown-delay", "0", "--log-format", "json")
    async with serve_process(*args) as served:
        assert served.proc.stderr is not None
        # Read the log as it comes: a full pipe would block the server's writes.
        log = asyncio.ensure_future(asyncio.to_thread(served.proc.stderr.read))
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
            request = agent_pb2.CreateTaskRequest(template=task_template("job"))
            await stub.CreateTask(request, timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.CreateTask(agent_pb2.CreateTaskRequest(template=task_template("failing")), timeout=5)
            await stub.CreateTask(request, timeout=5)
            await asyncio.gather(*(stub.CreateTask(request, timeout=10) for _ in range(400)))
        served.proc.send_signal(signal.SIGTERM)
        stderr = await log
        await served.finish()
    records = [json.loads(line) for line in stderr.splitlines()]
    calls = [r for r in records if r.get("operation") == "create"]
    assert len([c for c in calls if c["grpc_code"] == "OK"]) == 402
    messages = [r["message"] for r in records]
    failed = next(i for i, m in enumerate(messages) if m.startswith("create failing (version 0) failed"))
    assert messages[failed - 1].startswith("create job (version 0) OK")
    assert "exception" in records[failed] and "the job API said no" in records[failed]["exception"]
    assert records[failed + 1]["message"].startswith("create job (version 0) OK")
    assert messages[-1] == "stopped"


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize(
    ("label", "task_type", "execution_id"),
    [
        ("job (version 0)", "job", ""),
        ("job (version 3)", "job", "proj/dev/a1b2/n0/wf.t/0"),
        ('q"uoted\\ ünïcode (version 0)', 'q"uoted\\ ünïcode', 'p/d/"x"/\u2603/t/1'),
    ],
)
async def test_a_successful_call_s_fast_line_is_the_same_as_the_general_one(
    fmt: str, label: str, task_type: str, execution_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``ok`` builds the line from cached pieces; it must be byte for byte what ``line`` writes
    (same time to the millisecond aside), JSON escaping included."""
    caplog.set_level(logging.INFO, logger="connector_service.rpc")
    fast, general = io.StringIO(), io.StringIO()
    fast_log, general_log = StreamAccessLog(fast, fmt), StreamAccessLog(general, fmt)
    for elapsed in (0.0001234, 0.5, 12.3456789):
        for _ in range(2):  # the second time from the cache
            fast_log.ok("get", label, task_type, elapsed, execution_id)
            general_log.line(logging.INFO, *ok_record("get", label, task_type, elapsed, execution_id))
    fast_log.flush()
    general_log.flush()
    fast_lines, general_lines = fast.getvalue().splitlines(), general.getvalue().splitlines()
    assert len(fast_lines) == len(general_lines) == 6
    for ours, theirs in zip(fast_lines, general_lines, strict=True):
        if fmt == "json":
            a, b = json.loads(ours), json.loads(theirs)
            assert a.pop("time")[:19] == b.pop("time")[:19]
            assert list(a.items()) == list(b.items())
            assert ours[ours.index('"level"') :] == theirs[theirs.index('"level"') :]
        else:
            assert _TEXT_TIME.sub("", ours) == _TEXT_TIME.sub("", theirs)


@pytest.mark.parametrize(("threshold", "logged"), [("0.2", True), ("0", False)])
async def test_with_the_access_log_off_a_slow_call_is_still_logged(threshold: str, logged: bool) -> None:
    """Over the wire: --no-access-log drops the lines of quick successful calls, but a call slower
    than --slow-call-seconds keeps its line (and --slow-call-seconds 0 turns that off)."""
    args = ("--connector", SAMPLES, "--shutdown-delay", "0", "--log-format", "json", "--no-access-log")
    async with serve_process(*args, "--slow-call-seconds", threshold) as served:
        assert served.proc.stderr is not None
        log = asyncio.ensure_future(asyncio.to_thread(served.proc.stderr.read))
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
            quick = await stub.CreateTask(agent_pb2.CreateTaskRequest(template=task_template("job")), timeout=5)
            slow = await stub.CreateTask(
                agent_pb2.CreateTaskRequest(template=task_template("slow", version=1, custom={"seconds": 0.3})),
                timeout=5,
            )
            category = agent_pb2.TaskCategory(name="slow", version=1)
            await stub.GetTask(agent_pb2.GetTaskRequest(task_category=category, resource_meta=slow.resource_meta))
            assert quick.resource_meta
        served.proc.send_signal(signal.SIGTERM)
        stderr = await log
        await served.finish()
    calls = [r for r in map(json.loads, stderr.splitlines()) if "operation" in r]
    assert [(c["operation"], c["task_type"]) for c in calls] == ([("get", "slow")] if logged else [])
    if logged:
        assert calls[0]["grpc_code"] == "OK" and calls[0]["duration_ms"] >= 300
