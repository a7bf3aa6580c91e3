"""TimeSensor over the wire: ``until`` and ``duration`` as inputs or as sensor_config defaults."""

from __future__ import annotations

import asyncio
import datetime
import functools
import time
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, tasks_pb2

from connector_service.testing import task_template
from tests.utils import Running, create_task, delete_task, get_task

Phase = execution_pb2.TaskExecution
SENSOR = agent_pb2.TaskCategory(name="sensor", version=0)

create = create_task
get = functools.partial(get_task, name="sensor")
delete = functools.partial(delete_task, name="sensor")
UTC = datetime.UTC


def time_sensor(inputs: dict[str, Any] | None = None, config: dict[str, Any] | None = None) -> tasks_pb2.TaskTemplate:
    custom: dict[str, Any] = {"sensor_module": "sensors.time_sensor", "sensor_name": "TimeSensor"}
    if config is not None:
        custom["sensor_config"] = config
    return task_template("sensor", custom=custom, inputs=inputs)


async def poll_until_done(svc: Running, meta: bytes, limit: float = 10) -> tuple[agent_pb2.Resource, float]:
    started = time.monotonic()
    while (resource := await get(svc, meta)).phase == Phase.RUNNING:
        assert time.monotonic() - started < limit, "sensor never fired"
        await asyncio.sleep(0.05)
    return resource, time.monotonic()


# -- until ---------------------------------------------------------------------------------------


async def test_until_in_the_past_succeeds(svc: Running) -> None:
    template = time_sensor(inputs={"until": datetime.datetime})
    past = datetime.datetime.now(UTC) - datetime.timedelta(minutes=5)
    resource = await get(svc, await create(svc, template, {"until": past}))
    assert resource.phase == Phase.SUCCEEDED


async def test_until_in_the_future_is_running(svc: Running) -> None:
    template = time_sensor(inputs={"until": datetime.datetime})
    future = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
    meta = await create(svc, template, {"until": future})
    assert (await get(svc, meta)).phase == Phase.RUNNING
    assert (await get(svc, meta)).phase == Phase.RUNNING


async def test_until_from_sensor_config_as_iso_string(svc: Running) -> None:
    past = (datetime.datetime.now(UTC) - datetime.timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    future = (datetime.datetime.now(UTC) + datetime.timedelta(hours=1)).isoformat()
    assert (await get(svc, await create(svc, time_sensor(config={"until": past})))).phase == Phase.SUCCEEDED
    assert (await get(svc, await create(svc, time_sensor(config={"until": future})))).phase == Phase.RUNNING


# -- duration ------------------------------------------------------------------------------------


async def test_duration_input_counts_from_create(svc: Running) -> None:
    template = time_sensor(inputs={"duration": datetime.timedelta})
    before = time.monotonic()
    meta = await create(svc, template, {"duration": datetime.timedelta(seconds=0.5)})
    assert (await get(svc, meta)).phase == Phase.RUNNING
    resource, fired = await poll_until_done(svc, meta)
    assert resource.phase == Phase.SUCCEEDED
    assert fired - before >= 0.5


async def test_duration_default_from_sensor_config(svc: Running) -> None:
    before = time.monotonic()
    meta = await create(svc, time_sensor(config={"duration": 0.3}))
    resource, fired = await poll_until_done(svc, meta)
    assert resource.phase == Phase.SUCCEEDED
    assert fired - before >= 0.3  # the config's duration was waited for, not skipped


async def test_input_overrides_sensor_config(svc: Running) -> None:
    template = time_sensor(inputs={"duration": datetime.timedelta}, config={"duration": 3600})
    meta = await create(svc, template, {"duration": datetime.timedelta(0)})
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED


# -- misuse --------------------------------------------------------------------------------------


async def test_neither_until_nor_duration_is_a_clear_error(svc: Running) -> None:
    meta = await create(svc, time_sensor())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get(svc, meta)
    # A task that can never fire: the poke raises, which the service reports as INTERNAL.
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "TimeSensor: set 'until' or 'duration'" in (err.value.details() or "")


async def test_unknown_input_is_rejected_at_create(svc: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(svc, time_sensor(inputs={"when": str}), {"when": "now"})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "TimeSensor" in (err.value.details() or "")
