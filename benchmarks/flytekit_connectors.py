"""The benchmark connectors of ``bench_connectors.py``, written against flytekit 1.16.31.

Served by ``pyflyte serve connector --modules benchmarks.flytekit_connectors`` (run from the
repository root, which flytekit puts on ``sys.path``). Registration happens at import, as
flytekit plugins do. flytekit's sensor engine imports this module by the name the sensor's
resource_meta carries (``sensor_module``) and instantiates ``BenchSensor`` on every poke.

Needs flytekit; ``run.py`` starts it with the interpreter given by ``--flytekit-python``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.extend.backend.base_connector import (
    AsyncConnectorBase,
    ConnectorRegistry,
    Resource,
    ResourceMeta,
    SyncConnectorBase,
)
from flytekit.sensor.base_sensor import BaseSensor


@dataclass
class BenchMeta(ResourceMeta):
    job_id: str = "bench-job"


class _Bench(AsyncConnectorBase):
    def __init__(self, task_type_name: str) -> None:
        super().__init__(metadata_type=BenchMeta, task_type_name=task_type_name, task_type_version=0)

    async def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kwargs: Any) -> BenchMeta:
        return BenchMeta(job_id="bench-job")

    async def get(self, resource_meta: BenchMeta, **kwargs: Any) -> Resource:
        return Resource(phase=TaskExecution.SUCCEEDED)

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
        return Resource(phase=TaskExecution.RUNNING)


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
        time.sleep(self.seconds)  # flytekit runs plain-def methods on the loop's default executor
        return Resource(phase=TaskExecution.RUNNING)


class Block2sConnector(BlockConnector):
    name = "Bench Block 2s"

    def __init__(self) -> None:
        super().__init__("bench_block2s", seconds=2.0)


class EchoConnector(SyncConnectorBase):
    name = "Bench Echo"

    def __init__(self) -> None:
        super().__init__(task_type_name="bench_echo", task_type_version=0)

    async def do(self, task_template: Any, output_prefix: str, inputs: Any = None, **kwargs: Any) -> Resource:
        return Resource(phase=TaskExecution.SUCCEEDED, outputs=inputs)


class BenchSensor(BaseSensor):
    """Never satisfied. flytekit's engine calls ``BenchSensor("sensor", config=...)`` per poke."""

    def __init__(self, name: str = "bench_sensor", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    async def poke(self) -> bool:
        return False


for _connector in (
    NoopConnector(),
    SleepConnector(),
    SlowConnector(),
    BlockConnector(),
    Block2sConnector(),
    EchoConnector(),
):
    ConnectorRegistry.register(_connector)
