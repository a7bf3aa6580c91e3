"""The sensor engine: an async connector for task type ``sensor`` that pokes registered sensors.

CreateTask records which sensor, its config and the task's inputs in the resource_meta;
each GetTask is exactly one poke. The engine never imports anything named by a request: the
sensor is looked up in the registry's allow-list. Metas written by flytekit's own engine
(JSON of sensor_module, sensor_name, sensor_config, inputs) are accepted too, so sensor tasks
in flight survive a switch-over.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import inspect
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2, tasks_pb2

from connector_service import clip
from connector_service._literals import literal_map_to_python
from connector_service.connector import AsyncConnectorBase, Phase, Resource, ResourceMeta, read_custom
from connector_service.errors import InvalidRequestError, NotFoundError
from connector_service.registry import ConnectorUnavailableError

if TYPE_CHECKING:
    from connector_service._bulkhead import Bulkhead
    from connector_service._grpc_metrics import GrpcServerMetrics
    from connector_service.registry import ConnectorRegistry
    from sensors.base import BaseSensor

__all__ = ["SensorEngine", "SensorMetadata"]

_MIN_POKE_BUDGET = 0.05


@dataclass
class SensorMetadata(ResourceMeta):
    # The first four fields and their order are flytekit's, so its metas decode here.
    sensor_module: str | None = None
    sensor_name: str = ""
    sensor_config: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    # Ours: the inputs as a LiteralMap (exact types, e.g. datetimes), and what the timeout needs.
    inputs_literals: str | None = None
    created_at: float | None = None
    timeout_seconds: float | None = None


class SensorEngine(AsyncConnectorBase):
    name = "Sensor"

    def __init__(self, registry: ConnectorRegistry, poke_timeout: float = 30.0) -> None:
        super().__init__(metadata_type=SensorMetadata, task_type_name="sensor", task_type_version=0)
        self._registry = registry
        self.poke_timeout = poke_timeout
        """Upper bound on one poke, on top of the caller's deadline (a setting)."""
        self.metrics: GrpcServerMetrics | None = None
        """Where pokes are counted; set by the service at start-up."""
        self.bulkheads: dict[str, Bulkhead] = {}
        """Each registered sensor's own limits (by name), set by the service at start-up: a
        sensor whose system hangs fills its own calls and threads, not the engine's."""

    def _sensor(self, module: str | None, name: str) -> BaseSensor:
        sensor = self._registry.find_sensor(module, name)
        if sensor is None:
            known = ", ".join(sorted(self._registry.sensors())) or "none"
            where = f"{module}.{name}" if module else name
            raise NotFoundError(f"sensor {clip(where)!r} is not registered in this service (registered: {known})")
        broken = self._registry.sensor_unavailable(sensor.sensor_name)
        if broken is not None:
            raise ConnectorUnavailableError(f"sensor {sensor.sensor_name} is unavailable: its set-up failed ({broken})")
        return sensor

    async def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        **kwargs: Any,
    ) -> SensorMetadata:
        custom = read_custom(task_template)
        name = custom.get("sensor_name")
        module = custom.get("sensor_module")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("sensor task: template.custom has no 'sensor_name'")
        sensor = self._sensor(module if isinstance(module, str) else None, name)
        config = custom.get("sensor_config")
        if config is not None and not isinstance(config, dict):
            raise InvalidRequestError(
                f"sensor {clip(name)!r}: sensor_config must be an object, got {type(config).__name__}"
            )
        literal_inputs = inputs if inputs is not None and inputs.literals else None
        # Check the inputs against poke's signature now, so a wrong task fails at create
        # with a clear message rather than on every poll.
        if literal_inputs is not None:
            values = literal_map_to_python(literal_inputs)
        else:
            values = dict(custom.get("inputs") or {})
        _check_signature(sensor, values)
        sensor.with_config(config).check(**values)
        timeout: float | None = None
        if task_template.metadata.HasField("timeout"):
            timeout = task_template.metadata.timeout.ToTimedelta().total_seconds() or None
        elif sensor.timeout is not None:
            timeout = sensor.timeout.total_seconds()
        return SensorMetadata(
            sensor_module=module if isinstance(module, str) else None,
            sensor_name=name,
            sensor_config=config,
            inputs=None if literal_inputs is not None else (custom.get("inputs") or None),
            inputs_literals=(
                base64.b64encode(literal_inputs.SerializeToString(deterministic=True)).decode("ascii")
                if literal_inputs is not None
                else None
            ),
            created_at=time.time(),
            timeout_seconds=timeout,
        )

    async def get(self, resource_meta: SensorMetadata, timeout: float | None = None, **kwargs: Any) -> Resource:
        meta = resource_meta
        if not meta.sensor_name:
            raise InvalidRequestError("sensor resource_meta has no sensor_name")
        sensor = self._sensor(meta.sensor_module, meta.sensor_name)
        if meta.timeout_seconds and meta.created_at is not None:
            waited = time.time() - meta.created_at
            if waited >= meta.timeout_seconds:
                return Resource(
                    phase=Phase.FAILED,
                    message=(
                        f"sensor {meta.sensor_name} timed out: its condition was not met within "
                        f"{meta.timeout_seconds:g}s (the task's timeout) of CreateTask"
                    ),
                )
        if meta.sensor_config is not None and not isinstance(meta.sensor_config, dict):
            raise InvalidRequestError("sensor resource_meta: sensor_config must be an object")
        inputs = _decode_inputs(meta)
        if meta.created_at is not None and "started_at" not in inputs and _wants_started_at(type(sensor)):
            inputs["started_at"] = datetime.datetime.fromtimestamp(meta.created_at, datetime.UTC)
        bound = sensor.with_config(meta.sensor_config)
        budget = self.poke_timeout
        if timeout is not None:
            # Answer before the caller gives up: an unanswered GetTask counts as a system
            # failure in propeller (flytekit#2439), a RUNNING answer just polls again.
            budget = min(budget, timeout - min(0.5, timeout * 0.1))
        budget = max(budget, _MIN_POKE_BUDGET)
        bulkhead = self.bulkheads.get(meta.sensor_name)
        needs_thread = not _is_async_poke(type(sensor))
        if bulkhead is not None:
            if bulkhead.has_room(needs_thread) and not bulkhead.waiters:
                bulkhead.inflight += 1
                if needs_thread:
                    bulkhead.threads_busy += 1
            else:
                await bulkhead.wait(needs_thread, bulkhead.wait_budget("poke", timeout, needs_thread))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(budget):
                done = await _poke(bound, inputs, bulkhead if needs_thread else None)
        except TimeoutError:
            self._observe(meta.sensor_name, "timeout", started)
            return Resource(
                phase=Phase.RUNNING,
                message=f"poke of {meta.sensor_name} did not finish within {budget:.2f}s; it will be poked again",
            )
        except Exception:
            self._observe(meta.sensor_name, "error", started)
            raise
        finally:
            if bulkhead is not None:
                bulkhead.release()
        seconds = self._observe(meta.sensor_name, "true" if done else "false", started)
        if bulkhead is not None:
            bulkhead.observe("poke", seconds)
        if done:
            return Resource(phase=Phase.SUCCEEDED, message=f"{meta.sensor_name}: condition met")
        return Resource(phase=Phase.RUNNING)

    def _observe(self, sensor: str, outcome: str, started: float) -> float:
        seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.observe_poke(sensor, outcome, seconds)
        return seconds

    async def delete(self, resource_meta: SensorMetadata, **kwargs: Any) -> None:
        """Nothing to cancel: a sensor holds no external job."""


async def _poke(sensor: BaseSensor, inputs: dict[str, Any], threads: Bulkhead | None) -> bool:
    """One poke; a plain-def poke runs on ``threads`` (the sensor's own), holding a thread slot."""
    result: object
    if inspect.iscoroutinefunction(sensor.poke):
        result = await sensor.poke(**inputs)
    else:
        if threads is not None:
            result = await threads.run_in_thread(sensor.poke, inputs)
        else:
            result = await asyncio.to_thread(sensor.poke, **inputs)
        if inspect.isawaitable(result):
            result = await result
    return bool(result)


@functools.cache
def _is_async_poke(sensor_cls: type[BaseSensor]) -> bool:
    return inspect.iscoroutinefunction(sensor_cls.poke)


def _decode_inputs(meta: SensorMetadata) -> dict[str, Any]:
    if meta.inputs_literals:
        try:
            lm = literals_pb2.LiteralMap.FromString(base64.b64decode(meta.inputs_literals, validate=True))
        except Exception as exc:
            raise InvalidRequestError(f"sensor resource_meta has corrupt inputs: {type(exc).__name__}") from None
        return literal_map_to_python(lm)
    if meta.inputs is not None and not isinstance(meta.inputs, dict):
        raise InvalidRequestError("sensor resource_meta inputs must be an object")
    return dict(meta.inputs or {})


@functools.cache
def _wants_started_at(sensor_cls: type[BaseSensor]) -> bool:
    """Whether poke() names ``started_at``; decided once per class, not on every poll."""
    try:
        return "started_at" in inspect.signature(sensor_cls.poke).parameters
    except (TypeError, ValueError):
        return False


def _check_signature(sensor: BaseSensor, inputs: dict[str, Any]) -> None:
    try:
        inspect.signature(sensor.poke).bind(**inputs)
    except TypeError as exc:
        raise InvalidRequestError(f"sensor {sensor.sensor_name}: inputs do not match poke(): {clip(exc)}") from None
    except ValueError:
        return
