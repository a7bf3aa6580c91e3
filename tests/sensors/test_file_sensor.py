"""FileSensor over the wire, driven by what real flytekit 1.16.31 serialized (tests/fixtures/flytekit)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service._envelope import open_meta
from connector_service.testing import task_template
from tests.utils import FIXTURES, Running, create_task, delete_task, get_task

Phase = execution_pb2.TaskExecution
SENSOR = agent_pb2.TaskCategory(name="sensor", version=0)

create = create_task
get = functools.partial(get_task, name="sensor")
delete = functools.partial(delete_task, name="sensor")
FLYTEKIT = FIXTURES / "flytekit"


def flytekit_template() -> tasks_pb2.TaskTemplate:
    return tasks_pb2.TaskTemplate.FromString((FLYTEKIT / "file_sensor_template.pb").read_bytes())


def flytekit_inputs(path: str) -> literals_pb2.LiteralMap:
    """flytekit's own LiteralMap for the task, with the placeholder path swapped for ``path``."""
    inputs = literals_pb2.LiteralMap.FromString((FLYTEKIT / "file_sensor_inputs.pb").read_bytes())
    primitive = inputs.literals["path"].scalar.primitive
    assert primitive.string_value == "/tmp/placeholder"
    primitive.string_value = path
    return inputs


def flytekit_meta(path: str) -> bytes:
    """flytekit's own resource_meta with the placeholder path swapped, still in flytekit's format."""
    raw = (FLYTEKIT / "file_sensor_flytekit_meta.json").read_bytes()
    meta = json.loads(raw)
    assert json.dumps(meta).encode() == raw  # flytekit's format is json.dumps(asdict(...))
    assert meta["inputs"] == {"path": "/tmp/placeholder"}
    meta["inputs"]["path"] = path
    return json.dumps(meta).encode()


def file_sensor(path: str) -> tuple[tasks_pb2.TaskTemplate, literals_pb2.LiteralMap]:
    """A FileSensor task as flytekit makes it, waiting for ``path``."""
    return flytekit_template(), flytekit_inputs(path)


# -- flytekit's template and meta ----------------------------------------------------------------


async def test_flytekit_template_waits_for_the_file(svc: Running, tmp_path: Path) -> None:
    target = tmp_path / "data" / "ready.csv"
    meta = await create(svc, *file_sensor(str(target)))
    first = await get(svc, meta)
    assert first.phase == Phase.RUNNING
    assert (await get(svc, meta)).phase == Phase.RUNNING
    target.parent.mkdir()
    target.write_text("a,b\n")
    done = await get(svc, meta)
    assert done.phase == Phase.SUCCEEDED
    assert "FileSensor" in done.message
    assert len(done.outputs.literals) == 0  # the template declares no outputs
    for _ in range(2):  # after success, and again: both fine
        await delete(svc, meta)


async def test_delete_of_a_running_sensor_is_ok_twice(svc: Running, tmp_path: Path) -> None:
    meta = await create(svc, *file_sensor(str(tmp_path / "never")))
    await delete(svc, meta)
    await delete(svc, meta)


async def test_flytekit_issued_meta_is_polled_to_success(svc: Running, tmp_path: Path) -> None:
    target = tmp_path / "from-flytekit"
    meta = flytekit_meta(str(target))
    assert (await get(svc, meta)).phase == Phase.RUNNING
    target.touch()
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED
    await delete(svc, meta)


async def test_meta_from_this_service_keeps_flytekit_fields(svc: Running, tmp_path: Path) -> None:
    # So that a switch back to flytekit's service could still read the sensor's identity.
    meta = await create(svc, *file_sensor(str(tmp_path / "x")))
    fields = json.loads(open_meta(meta).meta)
    assert fields["sensor_module"] == "flytekit.sensor.file_sensor"
    assert fields["sensor_name"] == "FileSensor"


async def test_a_directory_counts_as_existing(svc: Running, tmp_path: Path) -> None:
    target = tmp_path / "partition=2024-01-01"
    meta = await create(svc, *file_sensor(str(target)))
    assert (await get(svc, meta)).phase == Phase.RUNNING
    target.mkdir()
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED


# -- paths ---------------------------------------------------------------------------------------


async def test_file_url_prefix(svc: Running, tmp_path: Path) -> None:
    target = tmp_path / "via-url"
    meta = await create(svc, *file_sensor(f"file://{target}"))
    assert (await get(svc, meta)).phase == Phase.RUNNING
    target.touch()
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED


async def test_template_built_by_hand_works_too(svc: Running, tmp_path: Path) -> None:
    target = tmp_path / "hand"
    target.touch()
    template = task_template(
        "sensor", custom={"sensor_module": "sensors.file_sensor", "sensor_name": "FileSensor"}, inputs={"path": str}
    )
    assert (await get(svc, await create(svc, template, flytekit_inputs(str(target))))).phase == Phase.SUCCEEDED


async def test_remote_path_without_fsspec_is_a_clear_error(svc: Running) -> None:
    if importlib.util.find_spec("fsspec") is not None:
        pytest.skip("fsspec is installed; test_memory_filesystem covers remote paths")
    meta = await create(svc, *file_sensor("s3://bucket/key/_SUCCESS"))  # create does not poke
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get(svc, meta)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    details = err.value.details() or ""
    assert "fsspec" in details
    assert "s3://" in details


async def test_memory_filesystem_when_the_operator_allows_it() -> None:
    fsspec = pytest.importorskip("fsspec")
    from connector_service import ConnectorTestHarness
    from sensors.file_sensor import FileSensor

    harness = ConnectorTestHarness.for_sensor(FileSensor(protocols=["memory"]))
    fs = fsspec.filesystem("memory")
    path = "memory://fcs-file-sensor-test/out/_SUCCESS"
    template = task_template("sensor", custom={"sensor_name": "FileSensor"}, inputs={"path": str})
    try:
        meta = await harness.create(template, {"path": path})
        assert (await harness.get(meta)).phase == Phase.RUNNING
        fs.pipe("/fcs-file-sensor-test/out/_SUCCESS", b"")
        assert (await harness.get(meta)).phase == Phase.SUCCEEDED
    finally:
        if fs.exists("/fcs-file-sensor-test"):
            fs.rm("/fcs-file-sensor-test", recursive=True)


@pytest.mark.parametrize("path", ["http://169.254.169.254/latest/meta-data", "memory://x/y", "ftp://h/x"])
async def test_protocols_outside_the_allow_list_are_refused(svc: Running, path: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:  # at CreateTask: it could never succeed
        await create(svc, *file_sensor(path))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not allowed" in (err.value.details() or "")
