"""DateTimeSensor and TimeDeltaSensor over gRPC, from templates and inputs real flytekit made."""

from __future__ import annotations

import asyncio
import datetime
import functools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2
from google.protobuf import json_format

from connector_service.errors import InvalidRequestError
from sensors.datetime_sensors import parse_duration
from tests.utils import FIXTURES, Running, create_task, get_task, run_service

Phase = execution_pb2.TaskExecution
UTC = datetime.UTC
SENSORS = ("sensors.datetime_sensors:DateTimeSensor", "sensors.datetime_sensors:TimeDeltaSensor")
FLYTEKIT = FIXTURES / "flytekit"

create = create_task
get = functools.partial(get_task, name="sensor")


@pytest.fixture
async def svc() -> AsyncIterator[Running]:
    async with run_service(SENSORS, entry_points=False) as running:
        yield running


def flytekit_task(stem: str, **config: Any) -> tuple[tasks_pb2.TaskTemplate, literals_pb2.LiteralMap]:
    """A template and inputs flytekit made; ``config`` replaces its sensor_config."""
    template = tasks_pb2.TaskTemplate.FromString((FLYTEKIT / f"{stem}_template.pb").read_bytes())
    inputs = literals_pb2.LiteralMap.FromString((FLYTEKIT / f"{stem}_inputs.pb").read_bytes())
    if config:
        custom = json_format.MessageToDict(template.custom)
        custom["sensor_config"] = config
        template.custom.Clear()
        template.custom.update(custom)
    return template, inputs


def target_time(when: datetime.datetime) -> literals_pb2.LiteralMap:
    """flytekit's DateTimeSensor inputs with ``when`` instead of 2024-01-01T00:00:00Z."""
    inputs = literals_pb2.LiteralMap.FromString((FLYTEKIT / "datetime_sensor_inputs.pb").read_bytes())
    stamp = inputs.literals["target_time"].scalar.union.value.scalar.primitive.datetime
    assert stamp.seconds == 1704067200
    stamp.FromDatetime(when.astimezone(UTC).replace(tzinfo=None))
    return inputs


def delta(seconds: float) -> literals_pb2.LiteralMap:
    """flytekit's TimeDeltaSensor inputs with ``seconds`` instead of 1 s."""
    inputs = literals_pb2.LiteralMap.FromString((FLYTEKIT / "timedelta_sensor_inputs.pb").read_bytes())
    duration = inputs.literals["delta"].scalar.union.value.scalar.primitive.duration
    assert duration.seconds == 1
    duration.FromTimedelta(datetime.timedelta(seconds=seconds))
    return inputs


async def poll_until_done(svc: Running, meta: bytes, limit: float = 10) -> tuple[agent_pb2.Resource, float]:
    started = time.monotonic()
    while (resource := await get(svc, meta)).phase == Phase.RUNNING:
        assert time.monotonic() - started < limit, "sensor never fired"
        await asyncio.sleep(0.05)
    return resource, time.monotonic()


async def refused(svc: Running, meta: bytes) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get(svc, meta)
    return err.value.code(), err.value.details() or ""


async def refused_at_create(svc: Running, template: Any, inputs: Any) -> tuple[grpc.StatusCode, str]:
    """A task that can never succeed is refused by CreateTask, not on every poll."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(svc, template, inputs)
    return err.value.code(), err.value.details() or ""


# -- DateTimeSensor ------------------------------------------------------------------------------


async def test_datetime_in_the_past_is_done(svc: Running) -> None:
    meta = await create(svc, *flytekit_task("datetime_sensor"))  # 2024-01-01T00:00:00Z, as flytekit sent it
    resource = await get(svc, meta)
    assert resource.phase == Phase.SUCCEEDED
    assert "DateTimeSensor" in resource.message


async def test_datetime_a_second_ahead_waits_then_fires(svc: Running) -> None:
    when = datetime.datetime.now(UTC) + datetime.timedelta(seconds=1)
    meta = await create(svc, flytekit_task("datetime_sensor")[0], target_time(when))
    assert (await get(svc, meta)).phase == Phase.RUNNING
    resource, _ = await poll_until_done(svc, meta)
    assert resource.phase == Phase.SUCCEEDED
    assert datetime.datetime.now(UTC) >= when


async def test_datetime_from_the_constructor_via_sensor_config(svc: Running) -> None:
    template, inputs = flytekit_task("datetime_sensor_config")  # target_time "2024-01-01T00:00:00Z", input None
    assert (await get(svc, await create(svc, template, inputs))).phase == Phase.SUCCEEDED
    future = (datetime.datetime.now(UTC) + datetime.timedelta(hours=1)).isoformat()
    template, inputs = flytekit_task("datetime_sensor_config", target_time=future)
    assert (await get(svc, await create(svc, template, inputs))).phase == Phase.RUNNING


async def test_the_input_wins_over_the_config(svc: Running) -> None:
    template, _ = flytekit_task("datetime_sensor_config")  # config: in the past
    later = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
    assert (await get(svc, await create(svc, template, target_time(later)))).phase == Phase.RUNNING


@pytest.mark.parametrize(("offset", "phase"), [(-60, Phase.SUCCEEDED), (3600, Phase.RUNNING)])
async def test_a_time_without_offset_means_utc(svc: Running, offset: int, phase: int) -> None:
    naive = (datetime.datetime.now(UTC) + datetime.timedelta(seconds=offset)).replace(tzinfo=None)
    template, inputs = flytekit_task("datetime_sensor_config", target_time=naive.isoformat())
    assert (await get(svc, await create(svc, template, inputs))).phase == phase
    # The same wall-clock time read in a zone east of UTC would already have passed.
    east = naive.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=14))).isoformat()
    template, inputs = flytekit_task("datetime_sensor_config", target_time=east)
    assert (await get(svc, await create(svc, template, inputs))).phase == Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"target_time": "tomorrow"}, "DateTimeSensor: sensor_config.target_time is not an ISO 8601 date-time"),
        ({"target_time": 1704067200}, "DateTimeSensor: sensor_config.target_time must be a datetime or an ISO"),
        ({"target_time": "2024-01-01", "when": "now"}, "DateTimeSensor: sensor_config.when is not a setting"),
    ],
)
async def test_bad_datetime_names_the_field(svc: Running, config: dict[str, Any], message: str) -> None:
    template, inputs = flytekit_task("datetime_sensor_config", **config)
    code, details = await refused_at_create(svc, template, inputs)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details


async def test_no_target_time_at_all(svc: Running) -> None:
    template = flytekit_task("datetime_sensor")[0]  # DateTimeSensor() without a target_time
    inputs = flytekit_task("datetime_sensor_config")[1]  # target_time None
    code, details = await refused_at_create(svc, template, inputs)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "DateTimeSensor: target_time is missing" in details


# -- TimeDeltaSensor -----------------------------------------------------------------------------


async def test_timedelta_input_counts_from_create(svc: Running) -> None:
    before = time.monotonic()
    meta = await create(svc, *flytekit_task("timedelta_sensor"))  # delta 1 s, as flytekit sent it
    assert (await get(svc, meta)).phase == Phase.RUNNING
    resource, fired = await poll_until_done(svc, meta)
    assert resource.phase == Phase.SUCCEEDED
    assert fired - before >= 1.0


async def test_timedelta_seconds_from_the_constructor(svc: Running) -> None:
    before = time.monotonic()
    meta = await create(svc, *flytekit_task("timedelta_sensor_config"))  # delta 1.0 in sensor_config
    assert (await get(svc, meta)).phase == Phase.RUNNING
    resource, fired = await poll_until_done(svc, meta)
    assert resource.phase == Phase.SUCCEEDED
    assert fired - before >= 1.0


@pytest.mark.parametrize(("value", "phase"), [("PT0S", Phase.SUCCEEDED), ("P1D", Phase.RUNNING), (0, Phase.SUCCEEDED)])
async def test_timedelta_iso_8601_and_seconds_in_config(svc: Running, value: Any, phase: int) -> None:
    template, inputs = flytekit_task("timedelta_sensor_config", delta=value)
    assert (await get(svc, await create(svc, template, inputs))).phase == phase


async def test_timedelta_iso_duration_waits(svc: Running) -> None:
    before = time.monotonic()
    template, inputs = flytekit_task("timedelta_sensor_config", delta="PT0.6S")
    resource, fired = await poll_until_done(svc, await create(svc, template, inputs))
    assert resource.phase == Phase.SUCCEEDED
    assert fired - before >= 0.6


async def test_the_delta_input_wins_over_the_config(svc: Running) -> None:
    template, _ = flytekit_task("timedelta_sensor_config", delta=3600)
    assert (await get(svc, await create(svc, template, delta(0)))).phase == Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("PT5X", "TimeDeltaSensor: sensor_config.delta is not an ISO 8601 duration"),
        ("P1M", "TimeDeltaSensor: sensor_config.delta: ISO 8601 years and months have no fixed length"),
        ("P1Y2D", "years and months have no fixed length"),
        ("PT", "is not an ISO 8601 duration"),
        (-5, "TimeDeltaSensor: sensor_config.delta must not be negative"),
        (True, "TimeDeltaSensor: sensor_config.delta must be a timedelta, a number of seconds or an ISO 8601"),
        ([1], "must be a timedelta"),
    ],
)
async def test_bad_delta_names_the_field(svc: Running, value: Any, message: str) -> None:
    template, inputs = flytekit_task("timedelta_sensor_config", delta=value)
    code, details = await refused_at_create(svc, template, inputs)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details


async def test_negative_delta_input_names_the_input(svc: Running) -> None:
    code, details = await refused_at_create(svc, flytekit_task("timedelta_sensor")[0], delta(-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "TimeDeltaSensor: delta must not be negative" in details


async def test_unknown_input_is_refused_at_create(svc: Running) -> None:
    template, inputs = flytekit_task("timedelta_sensor")
    template.interface.inputs.variables["wait"].CopyFrom(template.interface.inputs.variables["delta"])
    inputs.literals["wait"].CopyFrom(inputs.literals["delta"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(svc, template, inputs)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "TimeDeltaSensor" in (err.value.details() or "")


# -- the duration parser -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT5M", datetime.timedelta(minutes=5)),
        ("pt30s", datetime.timedelta(seconds=30)),
        ("P1DT2H", datetime.timedelta(days=1, hours=2)),
        ("P2W", datetime.timedelta(weeks=2)),
        ("PT0,5S", datetime.timedelta(seconds=0.5)),
        ("P1DT1H1M1.25S", datetime.timedelta(days=1, hours=1, minutes=1, seconds=1.25)),
    ],
)
def test_iso_durations(text: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text, "delta", "T") == expected


@pytest.mark.parametrize("text", ["P", "PT", "P1DT", "5M", "PT1H5", "-PT5M", "P1.5M", "1 day"])
def test_not_iso_durations(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="T: delta"):
        parse_duration(text, "delta", "T")
