"""Connectors and sensors used by the tests, loaded through the real ``--connector`` mechanism.

The "external system" of ``JobConnector`` is the clock: a job's whole state lives in its
resource_meta (when it finishes, what it returns), so any replica can answer for it, which
is exactly the statelessness propeller's round-robin needs.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, tasks_pb2

from connector_service import (
    AsyncConnectorBase,
    Phase,
    Resource,
    ResourceMeta,
    SyncConnectorBase,
    read_custom,
    read_inputs,
    run_command,
)
from sensors import BaseSensor


@dataclass
class JobMeta(ResourceMeta):
    job_id: str
    done_at: float
    result: Any = None
    fail: str | None = None
    cancel_marker: str | None = None


class JobConnector(AsyncConnectorBase):
    """A job that finishes ``custom.seconds`` after creation with ``result = inputs.x * 2``."""

    name = "Job Connector"

    def __init__(self) -> None:
        super().__init__(metadata_type=JobMeta, task_type_name="job", task_type_version=0)

    async def create(
        self, task_template: tasks_pb2.TaskTemplate, output_prefix: str, inputs: Any = None, **kw: Any
    ) -> JobMeta:
        custom = read_custom(task_template)
        values = read_inputs(inputs, task_template)
        return JobMeta(
            job_id=f"job-{time.time_ns()}",
            done_at=time.time() + float(custom.get("seconds", 0)),
            result=values.get("x", 0) * 2,
            fail=custom.get("fail"),
            cancel_marker=custom.get("cancel_marker"),
        )

    async def get(self, resource_meta: JobMeta, **kw: Any) -> Resource:
        if resource_meta.cancel_marker and Path(resource_meta.cancel_marker).exists():
            return Resource(phase=Phase.ABORTED, message="cancelled")
        if time.time() < resource_meta.done_at:
            link = execution_pb2.TaskLog(uri=f"https://jobs.example/{resource_meta.job_id}", name="Job console")
            return Resource(phase=Phase.RUNNING, message=f"running (served by pid {os.getpid()})", log_links=[link])
        if resource_meta.fail:
            return Resource(phase=Phase.FAILED, message=resource_meta.fail)
        return Resource(
            phase=Phase.SUCCEEDED,
            outputs={"y": resource_meta.result},
            custom_info={"job": resource_meta.job_id},
        )

    async def delete(self, resource_meta: JobMeta, **kw: Any) -> None:
        if resource_meta.cancel_marker:
            Path(resource_meta.cancel_marker).touch()

    async def get_logs(self, resource_meta: JobMeta, **kw: Any):  # type: ignore[no-untyped-def]
        for i in range(3):
            await asyncio.sleep(0)
            yield f"{resource_meta.job_id} line {i}"

    def get_metrics(self, resource_meta: JobMeta, **kw: Any) -> agent_pb2.GetTaskMetricsResponse:
        return agent_pb2.GetTaskMetricsResponse()


@dataclass
class PlainMeta(ResourceMeta):
    seconds: float = 0.0


class BlockingConnector(AsyncConnectorBase):
    """Plain ``def`` methods that block, as connectors wrapping blocking client libraries do."""

    name = "Blocking Connector"
    active = 0
    peak = 0
    _lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__(metadata_type=PlainMeta, task_type_name="blocking", task_type_version=0)

    def create(
        self, task_template: tasks_pb2.TaskTemplate, output_prefix: str, inputs: Any = None, **kw: Any
    ) -> PlainMeta:
        return PlainMeta(seconds=float(read_custom(task_template).get("seconds", 0.2)))

    def get(self, resource_meta: PlainMeta, **kw: Any) -> Resource:
        cls = type(self)
        with cls._lock:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
        try:
            time.sleep(resource_meta.seconds)
        finally:
            with cls._lock:
                cls.active -= 1
        return Resource(phase=Phase.SUCCEEDED, message=f"slept in {threading.current_thread().name}")

    def delete(self, resource_meta: PlainMeta, **kw: Any) -> None:
        return None


@dataclass
class GateMeta(ResourceMeta):
    gate: str = ""


class GateConnector(AsyncConnectorBase):
    """A plain ``def get`` that holds its thread until the test opens the task's gate.

    The test decides when each blocking call returns (no sleeps), so a test can fill the
    connector's threads and see what happens to the next call for as long as it likes.
    """

    name = "Gate Connector"
    _gates: dict[str, threading.Event] = {}
    _lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__(metadata_type=GateMeta, task_type_name="gate", task_type_version=0)

    @classmethod
    def gate(cls, name: str) -> threading.Event:
        with cls._lock:
            return cls._gates.setdefault(name, threading.Event())

    async def create(
        self, task_template: tasks_pb2.TaskTemplate, output_prefix: str, inputs: Any = None, **kw: Any
    ) -> GateMeta:
        return GateMeta(gate=str(read_custom(task_template)["gate"]))

    def get(self, resource_meta: GateMeta, **kw: Any) -> Resource:  # type: ignore[override]
        opened = type(self).gate(resource_meta.gate).wait(timeout=30)
        return Resource(phase=Phase.SUCCEEDED if opened else Phase.FAILED, message=threading.current_thread().name)

    async def delete(self, resource_meta: GateMeta, **kw: Any) -> None:
        return None


gate = GateConnector()


class SlowConnector(AsyncConnectorBase):
    """Async methods that take longer than callers wait; records cancellations."""

    name = "Slow Connector"
    cancelled = 0

    def __init__(self) -> None:
        super().__init__(metadata_type=PlainMeta, task_type_name="slow", task_type_version=1)

    async def create(
        self, task_template: tasks_pb2.TaskTemplate, output_prefix: str, inputs: Any = None, **kw: Any
    ) -> PlainMeta:
        return PlainMeta(seconds=float(read_custom(task_template).get("seconds", 5)))

    async def get(self, resource_meta: PlainMeta, **kw: Any) -> Resource:
        try:
            await asyncio.sleep(resource_meta.seconds)
        except asyncio.CancelledError:
            type(self).cancelled += 1
            raise
        return Resource(phase=Phase.SUCCEEDED)

    async def delete(self, resource_meta: PlainMeta, **kw: Any) -> None:
        return None


class FailingConnector(AsyncConnectorBase):
    name = "Failing Connector"

    def __init__(self) -> None:
        super().__init__(metadata_type=PlainMeta, task_type_name="failing", task_type_version=0)

    async def create(
        self, task_template: tasks_pb2.TaskTemplate, output_prefix: str, inputs: Any = None, **kw: Any
    ) -> PlainMeta:
        raise RuntimeError("the job API said no (request id 42)")

    async def get(self, resource_meta: PlainMeta, **kw: Any) -> Resource:
        return Resource(phase=Phase.SUCCEEDED, outputs={"y": "not a number"})

    async def delete(self, resource_meta: PlainMeta, **kw: Any) -> None:
        raise KeyError("boom")


class UpperConnector(SyncConnectorBase):
    """Sync connector: upper-cases the ``s`` input; ``s == "fail"`` fails the task."""

    name = "Upper Connector"

    def __init__(self) -> None:
        super().__init__(task_type_name="upper", task_type_version=2)

    def do(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: Any = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
    ) -> Resource:
        s = read_inputs(inputs, task_template)["s"]
        if s == "fail":
            return Resource(phase=Phase.FAILED, message="asked to fail")
        namespace = task_execution_metadata.namespace if task_execution_metadata else ""
        return Resource(phase=Phase.SUCCEEDED, outputs={"s": s.upper(), "n": len(s), "ns": namespace})


class SlowSensor(BaseSensor):
    """A sensor whose poke takes ``sensor_config.seconds``."""

    async def poke(self, marker: str) -> bool:
        await asyncio.sleep(float(self.sensor_config.get("seconds", 0)))
        return os.path.exists(marker)


job = JobConnector()
blocking = BlockingConnector()
slow = SlowConnector()
failing = FailingConnector()
upper = UpperConnector()
ALL = [job, blocking, slow, failing, upper, SlowSensor]


class LifecycleConnector(AsyncConnectorBase):
    """Opens a "client" at set-up (needs the secret ``lifecycle_token``) and records its close."""

    name = "Lifecycle Connector"

    def __init__(self) -> None:
        super().__init__(metadata_type=PlainMeta, task_type_name="lifecycle", task_type_version=0)
        self.token: str | None = None

    async def setup(self) -> None:
        from connector_service import get_secret

        self.token = get_secret("lifecycle_token")

    async def close(self) -> None:
        marker = os.environ.get("LIFECYCLE_CLOSED_MARKER")
        if marker:
            Path(marker).write_text("closed")

    async def create(
        self, task_template: tasks_pb2.TaskTemplate, output_prefix: str, inputs: Any = None, **kw: Any
    ) -> PlainMeta:
        return PlainMeta()

    async def get(self, resource_meta: PlainMeta, **kw: Any) -> Resource:
        return Resource(phase=Phase.SUCCEEDED, message=f"token has {len(self.token or '')} chars")

    async def delete(self, resource_meta: PlainMeta, **kw: Any) -> None:
        return None


lifecycle = LifecycleConnector()


@dataclass
class CommandMeta(ResourceMeta):
    argv: list[str]
    stdin: str | None = None


class CommandConnector(AsyncConnectorBase):
    """Each GetTask runs ``custom.argv`` (through ``run_command``) and answers with what it printed."""

    name = "Command Connector"

    def __init__(self) -> None:
        super().__init__(metadata_type=CommandMeta, task_type_name="command", task_type_version=0)

    async def create(
        self, task_template: tasks_pb2.TaskTemplate, output_prefix: str, inputs: Any = None, **kw: Any
    ) -> CommandMeta:
        custom = read_custom(task_template)
        return CommandMeta(argv=[str(a) for a in custom["argv"]], stdin=custom.get("stdin"))

    async def get(self, resource_meta: CommandMeta, **kw: Any) -> Resource:
        result = await run_command(resource_meta.argv, input=resource_meta.stdin, timeout=10)
        phase = Phase.SUCCEEDED if result.returncode == 0 else Phase.FAILED
        return Resource(phase=phase, message=result.stdout_text)

    async def delete(self, resource_meta: CommandMeta, **kw: Any) -> None:
        return None


command = CommandConnector()
