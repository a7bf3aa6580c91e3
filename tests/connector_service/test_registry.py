"""Start-up validation of what gets registered, and where it comes from."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from connector_service import ConnectorNotFoundError, ConnectorRegistry, RegistryError, TaskCategory
from connectors.echo import EchoConnector
from tests.sample_connectors import JobConnector, SlowSensor, UpperConnector


def test_bundled_entry_points_register_the_whole_catalogue() -> None:
    registry = ConnectorRegistry.build()
    assert registry.lookup(TaskCategory("echo", 0)).is_sync
    assert registry.lookup(TaskCategory("webhook", 0)).is_sync
    assert not registry.lookup(TaskCategory("slurm", 0)).is_sync
    assert not registry.lookup(TaskCategory("slurm_fn", 0)).is_sync
    assert registry.lookup(TaskCategory("sensor", 0)).connector is registry.sensor_engine
    assert set(registry.sensors()) == {
        "FileSensor", "HttpSensor", "SqlSensor", "DateTimeSensor", "TimeDeltaSensor", "TimeSensor",
    }  # fmt: skip
    assert registry.find_sensor("flytekit.sensor.file_sensor", "FileSensor") is registry.sensors()["FileSensor"]


def test_entry_points_can_be_turned_off() -> None:
    registry = ConnectorRegistry.build(use_entry_points=False)
    assert [e.category for e in registry.connectors()] == [TaskCategory("sensor", 0)]
    assert registry.sensors() == {}


def test_module_attr_accepts_instances_sensor_classes_and_lists() -> None:
    registry = ConnectorRegistry.build(["tests.sample_connectors:ALL"], use_entry_points=False)
    assert registry.lookup(TaskCategory("upper", 2)).name == "Upper Connector"
    assert "SlowSensor" in registry.sensors()


def test_a_connector_class_gets_a_fresh_instance_per_registry() -> None:
    first, second = ConnectorRegistry(), ConnectorRegistry()
    first.add(JobConnector, "--connector x:JobConnector")
    second.add(JobConnector, "--connector x:JobConnector")
    one = first.lookup(TaskCategory("job", 0)).connector
    two = second.lookup(TaskCategory("job", 0)).connector
    assert isinstance(one, JobConnector) and isinstance(two, JobConnector) and one is not two


def test_lookup_is_an_exact_match_on_name_and_version() -> None:
    registry = ConnectorRegistry()
    registry.register(UpperConnector())
    with pytest.raises(ConnectorNotFoundError, match=r"^Cannot find connector for task type: upper \(version 0\)$"):
        registry.lookup(TaskCategory("upper", 0))


def test_duplicate_task_type_fails_with_both_sources() -> None:
    registry = ConnectorRegistry()
    registry.register(EchoConnector(), source="first")
    with pytest.raises(RegistryError, match=r"Duplicate connector for task type: echo \(version 0\).*first.*second"):
        registry.register(EchoConnector(), source="second")


class EchoNeedsArgs(EchoConnector):
    def __init__(self, task_type_name: str) -> None:
        super().__init__(task_type_name=task_type_name)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (EchoNeedsArgs, "cannot instantiate connector class EchoNeedsArgs without arguments"),
        (object(), "expected a connector instance"),
        ("a string", "expected a connector instance"),
    ],
)
def test_wrong_kind_of_object_fails_clearly(obj: Any, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        ConnectorRegistry().add(obj, "--connector x:y")


def test_same_name_for_sync_and_async_connectors_is_refused() -> None:
    registry = ConnectorRegistry()
    registry.register(EchoConnector())
    job = JobConnector()
    job.name = "Echo Connector"  # type: ignore[misc]
    with pytest.raises(RegistryError, match="both a sync and an async connector"):
        registry.register(job)


def test_one_name_serving_two_task_types_lists_both() -> None:
    registry = ConnectorRegistry()
    registry.register(EchoConnector("echo", 0))
    registry.register(EchoConnector("echo", 1))
    agent = registry.agent("Echo Connector")
    assert agent is not None
    assert [(c.name, c.version) for c in agent.supported_task_categories] == [("echo", 0), ("echo", 1)]


def test_duplicate_sensor_name_is_refused() -> None:
    registry = ConnectorRegistry()
    registry.register_sensor(SlowSensor)
    with pytest.raises(RegistryError, match="Duplicate sensor name 'SlowSensor'"):
        registry.register_sensor(SlowSensor())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected the form MODULE:ATTR"),
        ("no_such_module_xyz:thing", "cannot import module 'no_such_module_xyz'"),
        ("connectors.echo:missing", "has no attribute 'missing'"),
    ],
)
def test_bad_module_attr_names_fail_at_start_up(spec: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        ConnectorRegistry.build([spec], use_entry_points=False)


def test_a_module_that_fails_to_import_names_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_plugin_mod.py").write_text("import not_installed_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistryError, match="importing 'broken_plugin_mod' failed"):
        ConnectorRegistry.build(["broken_plugin_mod:x"], use_entry_points=False)
    sys.modules.pop("broken_plugin_mod", None)
