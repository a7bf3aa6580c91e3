"""Run a connector or sensor the way the service does, without a server.

``ConnectorTestHarness`` goes through the same steps as a real RPC (resource_meta envelope,
sync/async dispatch, output conversion against the declared interface), so a connector that
passes here behaves the same behind propeller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flyteidl.admin import agent_pb2
from flyteidl.core import interface_pb2, literals_pb2, tasks_pb2, types_pb2
from google.protobuf import struct_pb2
from google.protobuf.duration_pb2 import Duration

from connector_service import _envelope
from connector_service._convert import resource_to_proto
from connector_service._literals import literal_map_to_python, python_to_literal_map, variable_types
from connector_service.connector import ConnectorBase, ResourceMeta, TaskCategory, is_terminal_phase
from connector_service.registry import ConnectorRegistry, RegisteredConnector

__all__ = ["ConnectorTestHarness", "task_template"]

_SIMPLE = {
    bool: types_pb2.SimpleType.BOOLEAN,
    int: types_pb2.SimpleType.INTEGER,
    float: types_pb2.SimpleType.FLOAT,
    str: types_pb2.SimpleType.STRING,
    bytes: types_pb2.SimpleType.BINARY,
    dict: types_pb2.SimpleType.STRUCT,
}


def _literal_type(spec: Any) -> types_pb2.LiteralType:
    if isinstance(spec, types_pb2.LiteralType):
        return spec
    if spec in _SIMPLE:
        return types_pb2.LiteralType(simple=_SIMPLE[spec])
    import datetime

    if spec is datetime.datetime:
        return types_pb2.LiteralType(simple=types_pb2.SimpleType.DATETIME)
    if spec is datetime.timedelta:
        return types_pb2.LiteralType(simple=types_pb2.SimpleType.DURATION)
    raise TypeError(
        f"task_template: give a LiteralType or one of bool/int/float/str/bytes/dict/datetime/timedelta, got {spec!r}"
    )


def _variables(specs: Mapping[str, Any] | None) -> interface_pb2.VariableMap:
    variables = interface_pb2.VariableMap()
    for name, spec in (specs or {}).items():
        variables.variables[name].type.CopyFrom(_literal_type(spec))
    return variables


def task_template(
    task_type: str,
    *,
    version: int = 0,
    custom: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    timeout_seconds: float | None = None,
) -> tasks_pb2.TaskTemplate:
    """A TaskTemplate like the one flytekit would serialize, for tests.

    ``inputs``/``outputs`` map names to Python types (``int``, ``str``, ...) or LiteralTypes.
    """
    template = tasks_pb2.TaskTemplate(type=task_type, task_type_version=version)
    template.interface.inputs.CopyFrom(_variables(inputs))
    template.interface.outputs.CopyFrom(_variables(outputs))
    if custom:
        struct = struct_pb2.Struct()
        struct.update(dict(custom))
        template.custom.CopyFrom(struct)
    if timeout_seconds is not None:
        template.metadata.timeout.CopyFrom(Duration(seconds=int(timeout_seconds), nanos=int(timeout_seconds % 1 * 1e9)))
    return template


class ConnectorTestHarness:
    """Drive one connector (or one sensor, through the sensor engine) like propeller would."""

    def __init__(self, connector: ConnectorBase) -> None:
        self.registry = ConnectorRegistry()
        if connector is not self.registry.sensor_engine:
            self.registry.register(connector, source="test harness")
        self._entry: RegisteredConnector = self.registry.lookup(connector.task_category)

    @classmethod
    def for_sensor(cls, sensor: Any) -> ConnectorTestHarness:
        """A harness around the sensor engine with ``sensor`` (a class or instance) registered."""
        harness = cls.__new__(cls)
        harness.registry = ConnectorRegistry()
        harness.registry.register_sensor(sensor, source="test harness")
        harness._entry = harness.registry.lookup(TaskCategory("sensor", 0))
        return harness

    @property
    def connector(self) -> ConnectorBase:
        return self._entry.connector

    @staticmethod
    def _inputs(template: tasks_pb2.TaskTemplate, inputs: Any) -> literals_pb2.LiteralMap:
        if inputs is None:
            return literals_pb2.LiteralMap()
        if isinstance(inputs, literals_pb2.LiteralMap):
            return inputs
        return python_to_literal_map(inputs, variable_types(template.interface.inputs))

    async def create(
        self,
        template: tasks_pb2.TaskTemplate,
        inputs: Mapping[str, Any] | literals_pb2.LiteralMap | None = None,
        *,
        output_prefix: str = "file:///tmp/outputs",
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """CreateTask: returns the resource_meta bytes propeller would store."""
        meta = await self._entry.methods["create"](
            {
                "task_template": template,
                "output_prefix": output_prefix,
                "inputs": self._inputs(template, inputs),
                "task_execution_metadata": task_execution_metadata or agent_pb2.TaskExecutionMetadata(),
            },
            {"timeout": timeout},
        )
        if not isinstance(meta, ResourceMeta):
            raise TypeError(f"create() returned {type(meta).__name__}, expected a ResourceMeta")
        return _envelope.seal(meta.encode(), _envelope.compact_output_types(template.interface.outputs))

    def _decode(self, resource_meta: bytes) -> tuple[Any, Any]:
        opened = _envelope.open_meta(resource_meta)
        return self.connector.metadata_type.decode(opened.meta), opened.output_types  # type: ignore[attr-defined]

    async def get(self, resource_meta: bytes, *, timeout: float | None = None) -> agent_pb2.Resource:
        """GetTask: the Resource proto propeller would receive."""
        meta, types = self._decode(resource_meta)
        resource = await self._entry.methods["get"]({"resource_meta": meta}, {"timeout": timeout})
        return resource_to_proto(resource, types, connector=self.connector.name)

    async def delete(self, resource_meta: bytes) -> None:
        meta, _ = self._decode(resource_meta)
        await self._entry.methods["delete"]({"resource_meta": meta})

    async def do(
        self,
        template: tasks_pb2.TaskTemplate,
        inputs: Mapping[str, Any] | literals_pb2.LiteralMap | None = None,
        *,
        output_prefix: str = "file:///tmp/outputs",
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
    ) -> agent_pb2.Resource:
        """ExecuteTaskSync: the Resource proto propeller would receive (must be terminal)."""
        resource = await self._entry.methods["do"](
            {
                "task_template": template,
                "output_prefix": output_prefix,
                "inputs": self._inputs(template, inputs),
            },
            {"task_execution_metadata": task_execution_metadata or agent_pb2.TaskExecutionMetadata()},
        )
        proto = resource_to_proto(resource, variable_types(template.interface.outputs), connector=self.connector.name)
        if not is_terminal_phase(proto.phase):
            raise AssertionError(f"do() returned non-terminal phase {proto.phase}")
        return proto

    @staticmethod
    def outputs(resource: agent_pb2.Resource) -> dict[str, Any]:
        """A Resource's outputs as Python values."""
        return literal_map_to_python(resource.outputs)
