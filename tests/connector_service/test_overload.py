"""Overload: a saturated connector refuses fast (RESOURCE_EXHAUSTED) and the others keep serving.

Real server on loopback, generated stubs (the burst on uvloop, the service's default loop).
Blocking calls are held by the gate connector until the test opens their gate, so nothing
here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import uvloop
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from grpc_health.v1 import health_pb2

from connector_service import Settings
from connector_service.config import SettingsError
from connector_service.server import ConnectorService, StartupError
from connector_service.testing import task_template
from tests.sample_connectors import GateConnector
from tests.utils import SAMPLES, Running, create_task, get_task, run_service, test_settings

Phase = execution_pb2.TaskExecution
CONNECTORS = (SAMPLES, "tests.sample_connectors:gate")
get_gate = functools.partial(get_task, name="gate")


@pytest.fixture
def gate_name() -> Iterator[str]:
    name = uuid.uuid4().hex
    yield name
    GateConnector.gate(name).set()  # whatever happened, no thread stays held


async def _gate_meta(svc: Running, name: str) -> bytes:
    return await create_task(svc, task_template("gate", custom={"gate": name}))


async def _wait_for(predicate: object, what: str) -> None:
    for _ in range(1000):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


def _bulkhead(svc: Running, task_type: str):  # type: ignore[no-untyped-def]
    bulkhead = svc.service.registry.find(task_type, 0).bulkhead
    assert bulkhead is not None
    return bulkhead


def _shed(svc: Running, task_type: str, operation: str) -> float:
    value = svc.service.metrics_registry.get_sample_value(
        "flyte_connector_requests_shed_total", {"task_type": task_type, "operation": operation}
    )
    return value or 0.0


async def test_saturated_blocking_connector_refuses_while_other_connectors_serve(gate_name: str) -> None:
    async with run_service(CONNECTORS, limits={"gate": {"max_threads": 2}}, max_queue_wait=0) as svc:
        meta = await _gate_meta(svc, gate_name)
        held = [asyncio.ensure_future(get_gate(svc, meta)) for _ in range(2)]
        bulkhead = _bulkhead(svc, "gate")
        await _wait_for(lambda: bulkhead.threads_busy == 2, "both threads are held")

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get_gate(svc, meta)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = err.value.details() or ""
        assert details.startswith("service saturated: connector 'Gate Connector' for gate (version 0)")
        assert "all 2 of its threads busy" in details and details.endswith("retry later")
        assert len(details) < 300
        assert _shed(svc, "gate", "get") == 1

        # Meanwhile every other connector, discovery and health answer as usual.
        job = await create_task(svc, task_template("job", inputs={"x": int}), {"x": 2})
        assert (await get_task(svc, job, name="job")).phase == Phase.SUCCEEDED
        agents = await svc.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)
        assert "Gate Connector" in {a.name for a in agents.agents}
        health = await svc.health_stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Creating a gate task needs no thread (async create): the thread limit does not refuse it.
        await _gate_meta(svc, gate_name)
        assert not any(task.done() for task in held)

        GateConnector.gate(gate_name).set()
        assert [r.phase for r in await asyncio.gather(*held)] == [Phase.SUCCEEDED] * 2
        assert (await get_gate(svc, meta)).phase == Phase.SUCCEEDED  # room again
        assert "connector-worker-gate" in (await get_gate(svc, meta)).message  # the gate's own threads


def test_burst_is_served_or_refused_never_left_to_time_out(gate_name: str) -> None:
    uvloop.run(_burst(gate_name))


async def _burst(gate_name: str) -> None:
    async with run_service(CONNECTORS, limits={"gate": {"max_threads": 4}}) as svc:
        meta = await _gate_meta(svc, gate_name)

        async def one() -> str:
            try:
                await get_gate(svc, meta, timeout=20)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return "OK"

        burst = [asyncio.ensure_future(one()) for _ in range(300)]
        # Everything beyond the four held calls is answered while the gate is still closed.
        await _wait_for(lambda: sum(task.done() for task in burst) == 296, "296 calls are refused")
        GateConnector.gate(gate_name).set()
        codes = Counter(await asyncio.gather(*burst))
        assert codes == {"OK": 4, "RESOURCE_EXHAUSTED": 296}
        assert _shed(svc, "gate", "get") == 296


async def test_waiting_call_takes_the_first_thread_that_frees(gate_name: str) -> None:
    async with run_service(CONNECTORS, limits={"gate": {"max_threads": 1, "max_wait": 30}}) as svc:
        meta = await _gate_meta(svc, gate_name)
        first = asyncio.ensure_future(get_gate(svc, meta, timeout=30))
        bulkhead = _bulkhead(svc, "gate")
        await _wait_for(lambda: bulkhead.threads_busy == 1, "the thread is held")
        second = asyncio.ensure_future(get_gate(svc, meta, timeout=30))
        await _wait_for(lambda: len(bulkhead.waiters) == 1, "the second call waits")
        assert not second.done()
        GateConnector.gate(gate_name).set()
        assert (await first).phase == Phase.SUCCEEDED
        assert (await second).phase == Phase.SUCCEEDED
        assert (bulkhead.inflight, bulkhead.threads_busy, len(bulkhead.waiters)) == (0, 0, 0)


async def test_call_whose_deadline_cannot_cover_the_service_time_is_refused_not_queued(gate_name: str) -> None:
    async with run_service(CONNECTORS, limits={"gate": {"max_threads": 1, "max_wait": 30}}) as svc:
        meta = await _gate_meta(svc, gate_name)
        bulkhead = _bulkhead(svc, "gate")
        # One call that takes at least 1.5 s teaches the bulkhead the connector's service time.
        gate = GateConnector.gate(gate_name)
        timed = asyncio.ensure_future(get_gate(svc, meta, timeout=30))
        await asyncio.sleep(1.5)
        gate.set()
        await timed
        assert bulkhead.estimates["get"] >= 1.5
        gate.clear()
        held = asyncio.ensure_future(get_gate(svc, meta, timeout=30))
        await _wait_for(lambda: bulkhead.threads_busy == 1, "the thread is held")

        # A 1 s deadline cannot cover 1.5 s of service: refused at once, not left to time out.
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get_gate(svc, meta, timeout=1.0)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 1.0
        assert not bulkhead.waiters
        gate.set()
        assert (await held).phase == Phase.SUCCEEDED


async def test_saturated_async_connector_is_limited_by_calls_in_flight() -> None:
    async with run_service(CONNECTORS, limits={"slow": {"max_concurrency": 2}}, max_queue_wait=0) as svc:
        slow = await create_task(svc, task_template("slow", version=1, custom={"seconds": 30}))
        quick = await create_task(svc, task_template("slow", version=1, custom={"seconds": 0}))
        held = [asyncio.ensure_future(get_task(svc, slow, name="slow", version=1, timeout=30)) for _ in range(2)]
        bulkhead = svc.service.registry.find("slow", 1).bulkhead
        assert bulkhead is not None
        await _wait_for(lambda: bulkhead.inflight == 2, "two calls are in flight")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get_task(svc, quick, name="slow", version=1)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 calls in flight (limit 2)" in (err.value.details() or "")
        for task in held:  # the callers go away: their calls end and give their room back
            task.cancel()
        await _wait_for(lambda: bulkhead.inflight == 0, "the cancelled calls have ended")
        assert (await get_task(svc, quick, name="slow", version=1)).phase == Phase.SUCCEEDED


async def test_saturated_sensor_refuses_while_other_sensors_poke(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.touch()
    slow = task_template(
        "sensor",
        custom={
            "sensor_module": "tests.sample_connectors",
            "sensor_name": "SlowSensor",
            "sensor_config": {"seconds": 30},
        },
        inputs={"marker": str},
    )
    files = task_template("sensor", custom={"sensor_name": "FileSensor"}, inputs={"path": str})
    async with run_service(CONNECTORS, limits={"sensor/SlowSensor": {"max_concurrency": 2}}, max_queue_wait=0) as svc:
        meta = await create_task(svc, slow, {"marker": str(marker)})
        held = [asyncio.ensure_future(get_task(svc, meta, name="sensor", timeout=30)) for _ in range(2)]
        bulkhead = svc.service.registry.sensor_engine.bulkheads["SlowSensor"]
        await _wait_for(lambda: bulkhead.inflight == 2, "two pokes are in flight")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get_task(svc, meta, name="sensor")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "service saturated: sensor 'SlowSensor' has 2 calls in flight (limit 2)" in (err.value.details() or "")
        # Another sensor of the same engine still pokes.
        file_meta = await create_task(svc, files, {"path": str(marker)})
        assert (await get_task(svc, file_meta, name="sensor")).phase == Phase.SUCCEEDED
        for task in held:
            task.cancel()
        await _wait_for(lambda: bulkhead.inflight == 0, "the cancelled pokes have ended")


# -- settings ------------------------------------------------------------------------------------


def test_limits_default_from_the_service_settings_and_override_per_task_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_LIMITS__SLURM__MAX_THREADS", "16")
    settings = Settings.load(["--max-concurrent-rpcs", "600", "--thread-pool-size", "32"])
    assert settings.limits_for("slurm") == (300, 16, 0.1)
    assert settings.limits_for("webhook") == (300, 32, 0.1)
    settings = Settings.load(["--limits", '{"webhook": {"max_concurrency": 50, "max_wait": 0}}'])
    assert settings.limits_for("webhook") == (50, 64, 0.0)
    assert settings.limits_for("sensor/FileSensor", within=500) == (250, 64, 0.1)


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        ('{"slurm": {"max_thread": 4}}', "limits.slurm.max-thread"),
        ('{"slurm": {"max_threads": 0}}', "limits.slurm.max-threads"),
        ('{"slurm": {"max_wait": -1}}', "limits.slurm.max-wait"),
    ],
)
def test_bad_limits_stop_start_up_naming_the_field(limits: str, named: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.load(["--limits", limits])
    assert named in str(err.value)


async def test_limits_for_a_task_type_nobody_serves_stop_start_up() -> None:
    settings = test_settings(limits={"gaet": {"max_threads": 2}, "sensor/SlowSensor": {"max_threads": 2}})
    from connector_service import ConnectorRegistry

    registry = ConnectorRegistry.build(CONNECTORS, use_entry_points=False)
    with pytest.raises(StartupError, match=r"limits: no connector serves task type\(s\) 'gaet' \(served: .*gate"):
        await ConnectorService(settings, registry).start()
