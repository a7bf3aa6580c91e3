"""``--workers``: several processes on one port, metrics that add up, one drain on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import urllib.request
from pathlib import Path

import grpc
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from flyteidl.service import agent_pb2_grpc

from connector_service.testing import task_template
from tests.utils import ENV, SAMPLES, free_port, serve_process


async def _running_pid(address: str) -> int:
    """Create and poll a job on a fresh connection; the answer names the serving process."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        template = task_template("job", custom={"seconds": 60}, inputs={"x": int})
        created = await stub.CreateTask(agent_pb2.CreateTaskRequest(template=template), timeout=5)
        category = agent_pb2.TaskCategory(name="job", version=0)
        response = await stub.GetTask(
            agent_pb2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta), timeout=5
        )
    match = re.search(r"served by pid (\d+)", response.resource.message)
    assert match, response.resource.message
    return int(match.group(1))


async def test_workers_share_the_port_and_metrics_add_up() -> None:
    metrics_port = free_port()
    args = ("--workers", "2", "--connector", SAMPLES, "--metrics-port", str(metrics_port),
            "--metrics-host", "127.0.0.1", "--shutdown-delay", "0")  # fmt: skip
    async with serve_process(*args) as served:
        # serve_process returns once one worker answers; the other may still be starting.
        pids: list[int] = []
        deadline = time.monotonic() + 20
        while len(pids) < 24 or (len(set(pids)) < 2 and time.monotonic() < deadline):
            pids.append(await _running_pid(served.address))
        assert len(set(pids)) == 2, pids  # the kernel spread the connections over both workers
        assert served.proc.pid not in pids  # the supervisor serves no RPCs itself
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        calls = f"{len(pids)}.0"
        assert f'flyte_connector_requests_success_total{{operation="create",task_type="job"}} {calls}' in body
        assert f'flyte_connector_requests_success_total{{operation="get",task_type="job"}} {calls}' in body
        assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="CreateTask"' in body

        # One SIGTERM to the supervisor drains every worker: an in-flight call still finishes.
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
            template = task_template("slow", version=1, custom={"seconds": 1.5})
            created = await stub.CreateTask(agent_pb2.CreateTaskRequest(template=template), timeout=5)
            category = agent_pb2.TaskCategory(name="slow", version=1)
            call = asyncio.ensure_future(
                stub.GetTask(
                    agent_pb2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta), timeout=10
                )
            )
            await asyncio.sleep(0.3)
            served.proc.send_signal(signal.SIGTERM)
            assert (await call).resource.phase == execution_pb2.TaskExecution.SUCCEEDED
        stderr = await served.finish()
        assert served.proc.returncode == 0, stderr


def test_workers_that_cannot_start_stop_the_supervisor() -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "connector_service", "serve", "--workers", "2", "--host", "127.0.0.1",
             "--port", str(port), "--metrics-port", "0"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert "failed at start-up" in result.stderr
    assert "cannot listen on" in result.stderr


async def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    import os
    import time

    env = {**ENV, "TMPDIR": str(tmp_path)}  # where the supervisor makes its metrics directory
    async with serve_process("--workers", "2", "--connector", SAMPLES, env=env) as served:
        pids = {await _running_pid(served.address) for _ in range(12)}
        assert list(tmp_path.glob("connector-metrics-*")), "the metrics directory is made in TMPDIR"
        served.proc.kill()  # SIGKILL: the supervisor cannot forward anything
        served.proc.wait()
        deadline = time.monotonic() + 15
        alive = set(pids)
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    alive.discard(pid)
            await asyncio.sleep(0.2)
        assert not alive, f"orphaned workers {alive}"
    # The last worker out removed the dead supervisor's metrics directory.
    assert not list(tmp_path.glob("connector-metrics-*")), list(tmp_path.rglob("*"))


async def test_a_misspelt_variable_is_warned_about_once_under_workers() -> None:
    env = {**ENV, "CONNECTOR_GRACE_PERIDO": "5"}
    async with serve_process("--workers", "2", "--connector", SAMPLES, "--shutdown-delay", "0", env=env) as served:
        pids = {await _running_pid(served.address) for _ in range(4)}
        assert pids
        served.proc.send_signal(signal.SIGTERM)
        stderr = await served.finish()
    assert stderr.count("CONNECTOR_GRACE_PERIDO is not a setting") == 1, stderr
    assert "did you mean CONNECTOR_GRACE_PERIOD?" in stderr
