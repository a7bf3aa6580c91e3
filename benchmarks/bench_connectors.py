"""Benchmark connectors and a sensor, registered through the daemon's normal ``--connector`` option.

Each is as cheap as a connector can be, so a benchmark measures the service's own cost per
call: ``bench_noop`` answers at once, ``bench_sleep`` awaits 50 ms (an async client waiting on
an external API), ``bench_block`` blocks a thread for 50 ms (a blocking client library),
``bench_slow`` awaits 1 s (calls in flight across SIGTERM), ``bench_block2s`` blocks a thread
for 2 s (the overload scenario: a connector whose blocking client is slow), ``bench_echo`` is a sync connector
returning its inputs, and ``BenchSensor`` is a sensor whose condition never holds.
``benchmarks/flytekit_connectors.py`` has the same ones written against flytekit.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from flyteidl.core import literals_pb2, tasks_pb2

from connector_service import AsyncConnectorBase, Phase, Resource, ResourceMeta, SyncConnectorBase
from sensors import BaseSensor

__all__ = [
    "ALL",
    "BenchSensor",
    "bench_block",
    "bench_block2s",
    "bench_echo",
    "bench_noop",
    "bench_sleep",
    "bench_slow",
]


@dataclass
class BenchMeta(ResourceMeta):
    job_id: str = "bench-job"


class _Bench(AsyncConnectorBase):
    """Create and delete answer at once; subclasses choose how ``get`` spends its time."""

    def __init__(self, task_type_name: str) -> None:
        super().__init__(metadata_type=BenchMeta, task_type_name=task_type_name, task_type_version=0)

    async def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: Any = None,
        task_execution_metadata: Any = None,
        **kwargs: Any,
    ) -> BenchMeta:
        return BenchMeta(job_id="bench-job")

    async def get(self, resource_meta: BenchMeta, **kwargs: Any) -> Resource:
        return Resource(phase=Phase.SUCCEEDED)

    async def delete(self, resource_meta: BenchMeta, **kwargs: Any) -> None:
        return None


class NoopConnector(_Bench):
    name = "Bench Noop"

    def __init__(self) -> None:
        super().__init__("bench_noop")


class SleepConnector(_Bench):
    name = "Bench Sleep"

    def __init__(self, task_type_name: str = "bench_sleep", seconds: float = 0.05) -> None:
        super().__init__(task_type_name)
        self.seconds = seconds

    async def get(self, resource_meta: BenchMeta, **kwargs: Any) -> Resource:
        await asyncio.sleep(self.seconds)
        return Resource(phase=Phase.RUNNING)


class SlowConnector(SleepConnector):
    name = "Bench Slow"

    def __init__(self) -> None:
        super().__init__("bench_slow", seconds=1.0)


class BlockConnector(_Bench):
    name = "Bench Block"

    def __init__(self, task_type_name: str = "bench_block", seconds: float = 0.05) -> None:
        super().__init__(task_type_name)
        self.seconds = seconds

    def get(self, resource_meta: BenchMeta, **kwargs: Any) -> Resource:  # type: ignore[override]
        time.sleep(self.seconds)  # a blocking client library: runs on the service's thread pool
        return Resource(phase=Phase.RUNNING)


class Block2sConnector(BlockConnector):
    name = "Bench Block 2s"

    def __init__(self) -> None:
        super().__init__("bench_block2s", seconds=2.0)


class EchoConnector(SyncConnectorBase):
    name = "Bench Echo"

    def __init__(self) -> None:
        super().__init__(task_type_name="bench_echo", task_type_version=0)

    async def do(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        **kwargs: Any,
    ) -> Resource:
        return Resource(phase=Phase.SUCCEEDED, outputs=inputs)


class BenchSensor(BaseSensor):
    """Never satisfied: every GetTask is one poke answering RUNNING."""

    async def poke(self) -> bool:
        return False


bench_noop = NoopConnector()
bench_sleep = SleepConnector()
bench_slow = SlowConnector()
bench_block = BlockConnector()
bench_block2s = Block2sConnector()
bench_echo = EchoConnector()
ALL = [bench_noop, bench_sleep, bench_slow, bench_block, bench_block2s, bench_echo, BenchSensor]
