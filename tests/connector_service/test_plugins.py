"""Operator settings reach plugins validated, once, before set-up; bad ones stop start-up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from flyteidl.core import literals_pb2, tasks_pb2
from pydantic import BaseModel, Field

from connector_service import ConnectorRegistry, Phase, RegistryError, Resource, SyncConnectorBase
from connector_service.plugins import CommaList
from tests.utils import ENV, run_cli, run_service, sync_requests


class GreeterSettings(BaseModel):
    greeting: str = "hello"
    names: CommaList = Field(default_factory=list)
    retries: int = Field(3, ge=0)


class Greeter(SyncConnectorBase):
    """Answers with its operator-configured greeting, so a test can see what configure got."""

    name = "Greeter"
    settings_key = "greeter"
    settings_model = GreeterSettings
    settings: GreeterSettings

    def __init__(self) -> None:
        super().__init__(task_type_name="greeter")

    async def do(self, task_template: tasks_pb2.TaskTemplate, output_prefix: str, **kwargs: Any) -> Resource:
        return Resource(phase=Phase.SUCCEEDED, message=f"{self.settings.greeting} {','.join(self.settings.names)}")


GREETER = f"{__name__}:Greeter"


def test_defaults_are_applied_when_the_operator_sets_nothing() -> None:
    registry = ConnectorRegistry.build([GREETER], use_entry_points=False)
    connector = registry.connectors()[-1].connector
    assert isinstance(connector, Greeter)
    assert connector.settings == GreeterSettings()


def test_comma_lists_and_json_lists_are_accepted() -> None:
    for raw in ("a, b", '["a", "b"]', ["a", "b"]):
        values = {"greeter": {"names": raw}}
        registry = ConnectorRegistry.build([GREETER], use_entry_points=False, plugin_settings=values)
        assert registry.connectors()[-1].connector.settings.names == ["a", "b"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"greeter": {"retries": -1}}, r"plugins\.greeter\.retries: Input should be greater than or equal to 0"),
        (
            {"greeter": {"colour": "red"}},
            (r"plugins\.greeter\.colour: not a setting of Greeter \(settings: greeting, names, retries\)"),
        ),
        ({"greter": {}}, r"plugins\.greter: no registered connector or sensor takes settings here \(known: .*greeter"),
        ({"greeter": "hi"}, r"plugins\.greeter: expected a mapping"),
    ],
)
def test_bad_plugin_settings_name_the_field(values: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        ConnectorRegistry.build([GREETER], use_entry_points=False, plugin_settings=values)


async def test_settings_reach_the_connector_over_the_wire() -> None:
    template = tasks_pb2.TaskTemplate(type="greeter")
    async with run_service((GREETER,), plugins={"greeter": {"greeting": "hi", "names": "ann,bob"}}) as svc:
        requests = sync_requests(template, literals_pb2.LiteralMap())
        responses = [r async for r in svc.sync_stub.ExecuteTaskSync(iter(requests))]
        assert responses[0].header.resource.message == "hi ann,bob"


async def test_env_settings_reach_the_connector_and_bad_ones_stop_start_up() -> None:
    env = {**ENV, "CONNECTOR_PLUGINS__GREETER__NAMES": "x,y", "CONNECTOR_PLUGINS__GREETER__RETRIES": "-2"}
    proc = await asyncio.to_thread(run_cli, "list", "--connector", GREETER, "--no-entry-points", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "plugins.greeter.retries" in proc.stderr
