"""The sensor engine over the wire: allow-list, validation, timeouts, per-task config, statelessness."""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, tasks_pb2

from connector_service.testing import task_template
from tests.utils import Running, create_task, delete_task, get_task, run_service

Phase = execution_pb2.TaskExecution
SENSOR = agent_pb2.TaskCategory(name="sensor", version=0)

create = create_task
get = functools.partial(get_task, name="sensor")
delete = functools.partial(delete_task, name="sensor")


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def slow_sensor(seconds: float) -> tasks_pb2.TaskTemplate:
    return task_template(
        "sensor",
        custom={
            "sensor_module": "tests.sample_connectors",
            "sensor_name": "SlowSensor",
            "sensor_config": {"seconds": seconds},
        },
        inputs={"marker": str},
    )


def file_sensor(**extra: Any) -> tasks_pb2.TaskTemplate:
    custom = {"sensor_module": "flytekit.sensor.file_sensor", "sensor_name": "FileSensor", **extra.pop("custom", {})}
    return task_template("sensor", custom=custom, **({"inputs": {"path": str}} | extra))


# -- allow-list ----------------------------------------------------------------------------------

TRAP = "fcs_sensor_import_trap"


@pytest.fixture
def trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable module that leaves a file behind when imported or when its names are called."""
    marker = tmp_path / "trap-sprung"
    (tmp_path / f"{TRAP}.py").write_text(
        "import pathlib\n"
        f"MARKER = pathlib.Path({str(marker)!r})\n"
        "MARKER.touch()\n"
        "def system(*args, **kwargs):\n"
        "    MARKER.write_text('called')\n"
        "class Evil:\n"
        "    def poke(self, **kwargs):\n"
        "        MARKER.write_text('poked')\n"
        "        return True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, TRAP, raising=False)
    yield marker
    assert TRAP not in sys.modules
    assert not marker.exists()
    # The trap is armed: importing the module really does leave the file behind.
    importlib.import_module(TRAP)
    assert marker.exists()
    marker.unlink()


def _forbidden(tmp_path: Path) -> list[dict[str, Any]]:
    command = f"touch {tmp_path / 'os-system-ran'}"
    return [
        {"sensor_module": "os", "sensor_name": "system", "inputs": {"command": command}},
        {"sensor_module": TRAP, "sensor_name": "Evil", "inputs": {}},
        {"sensor_module": TRAP, "sensor_name": "system", "inputs": {"command": command}},
        # A real, importable BaseSensor subclass that nobody registered.
        {"sensor_module": "sensors.base", "sensor_name": "BaseSensor", "inputs": {}},
    ]


async def test_template_naming_unregistered_code_is_not_found_and_nothing_runs(
    svc: Running, tmp_path: Path, trap: Path
) -> None:
    for case in _forbidden(tmp_path):
        names = {k: case[k] for k in ("sensor_module", "sensor_name")}
        template = task_template("sensor", custom={**names, "inputs": None}, inputs=dict.fromkeys(case["inputs"], str))
        err = await rpc_error(create(svc, template, case["inputs"]))
        assert err.code() == grpc.StatusCode.NOT_FOUND, case
        details = err.details() or ""
        assert f"{case['sensor_module']}.{case['sensor_name']}" in details
        assert "FileSensor" in details  # says what is registered
    assert not (tmp_path / "os-system-ran").exists()


async def test_flytekit_meta_naming_unregistered_code_is_not_found_and_nothing_runs(
    svc: Running, tmp_path: Path, trap: Path
) -> None:
    for case in _forbidden(tmp_path):
        meta = json.dumps({**case, "sensor_config": None}).encode()
        err = await rpc_error(get(svc, meta))
        assert err.code() == grpc.StatusCode.NOT_FOUND, case
        assert case["sensor_name"] in (err.details() or "")
    assert not (tmp_path / "os-system-ran").exists()


# -- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("custom", "inputs", "expected"),
    [
        ({"sensor_module": "flytekit.sensor.file_sensor"}, {"path": "/x"}, "sensor_name"),
        ({}, {"path": "/x"}, "sensor_name"),
        ({"sensor_name": 5}, {"path": "/x"}, "sensor_name"),
        ({"sensor_name": "FileSensor", "sensor_config": "fast"}, {"path": "/x"}, "sensor_config must be an object"),
        ({"sensor_name": "FileSensor", "sensor_config": [1, 2]}, {"path": "/x"}, "sensor_config must be an object"),
        ({"sensor_name": "FileSensor"}, {}, "missing a required argument: 'path'"),
        ({"sensor_name": "FileSensor"}, {"path": "/x", "mode": "r"}, "FileSensor"),
        ({"sensor_name": "SlowSensor"}, {"path": "/x"}, "SlowSensor"),
    ],
)
async def test_malformed_sensor_tasks_are_invalid_argument_at_create(
    svc: Running, custom: dict[str, Any], inputs: dict[str, Any], expected: str
) -> None:
    template = task_template("sensor", custom=custom, inputs=dict.fromkeys(inputs, str))
    err = await rpc_error(create(svc, template, inputs))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (err.details() or "")


async def test_input_mismatch_message_names_the_sensor(svc: Running) -> None:
    err = await rpc_error(create(svc, file_sensor(inputs={}), {}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "sensor FileSensor: inputs do not match poke(): missing a required argument: 'path'"


async def test_meta_without_sensor_name_or_with_corrupt_inputs_is_invalid_argument(svc: Running) -> None:
    for meta in (
        b'{"sensor_module": "flytekit.sensor.file_sensor", "sensor_name": "", "inputs": {}}',
        b'{"sensor_name": "FileSensor", "inputs_literals": "not base64!"}',
        b'{"sensor_name": "FileSensor", "inputs": ["/x"]}',
    ):
        err = await rpc_error(get(svc, meta))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, meta


# -- timeouts ------------------------------------------------------------------------------------


async def test_task_timeout_from_template_fails_the_task(svc: Running, tmp_path: Path) -> None:
    template = file_sensor(timeout_seconds=1)
    meta = await create(svc, template, {"path": str(tmp_path / "never")})
    assert (await get(svc, meta)).phase == Phase.RUNNING
    await asyncio.sleep(1.1)
    resource = await get(svc, meta)
    assert resource.phase == Phase.FAILED
    assert "timed out" in resource.message
    assert "1s" in resource.message


async def test_poke_is_bounded_by_the_callers_deadline(svc: Running, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.touch()
    meta = await create(svc, slow_sensor(5), {"marker": str(marker)})
    started = time.monotonic()
    # An unanswered GetTask is a system failure in propeller: the engine must answer RUNNING
    # before the 1 s deadline rather than let it become DEADLINE_EXCEEDED.
    resource = await get(svc, meta, timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert resource.phase == Phase.RUNNING
    assert "did not finish" in resource.message
    assert "SlowSensor" in resource.message


async def test_poke_is_bounded_by_the_sensor_poke_timeout_setting(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.touch()
    async with run_service(sensor_poke_timeout=0.2) as svc:
        meta = await create(svc, slow_sensor(5), {"marker": str(marker)})
        started = time.monotonic()
        resource = await get(svc, meta, timeout=10)
        assert time.monotonic() - started < 4  # sanity: not the 5 s poke
        assert resource.phase == Phase.RUNNING
        assert "did not finish within 0.20s" in resource.message


# -- per-task config -----------------------------------------------------------------------------


async def test_sensor_config_is_per_task(svc: Running, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.touch()
    fast = await create(svc, slow_sensor(0), {"marker": str(marker)})
    slow = await create(svc, slow_sensor(5), {"marker": str(marker)})
    slow_result, fast_result = await asyncio.gather(get(svc, slow, timeout=1), get(svc, fast, timeout=1))
    assert slow_result.phase == Phase.RUNNING
    assert "did not finish" in slow_result.message
    assert fast_result.phase == Phase.SUCCEEDED
    # Neither task's config stuck to the shared sensor instance.
    assert (await get(svc, fast, timeout=1)).phase == Phase.SUCCEEDED
    assert (await get(svc, slow, timeout=1)).phase == Phase.RUNNING
    assert svc.service.registry.sensors()["SlowSensor"].sensor_config == {}


async def test_sensor_inputs_are_per_task(svc: Running, tmp_path: Path) -> None:
    there, missing = tmp_path / "there", tmp_path / "missing"
    there.touch()
    a = await create(svc, slow_sensor(0), {"marker": str(there)})
    b = await create(svc, slow_sensor(0), {"marker": str(missing)})
    assert [r.phase for r in await asyncio.gather(get(svc, a), get(svc, b))] == [Phase.SUCCEEDED, Phase.RUNNING]


# -- statelessness -------------------------------------------------------------------------------


async def test_task_created_before_a_restart_is_answered_after_it(tmp_path: Path) -> None:
    target = tmp_path / "arrives-later"
    async with run_service() as first:
        meta = await create(first, file_sensor(timeout_seconds=600), {"path": str(target)})
        assert (await get(first, meta)).phase == Phase.RUNNING
    target.touch()
    async with run_service() as second:
        resource = await get(second, meta)
        assert resource.phase == Phase.SUCCEEDED
        await second.async_stub.DeleteTask(
            agent_pb2.DeleteTaskRequest(task_category=SENSOR, resource_meta=meta), timeout=5
        )
