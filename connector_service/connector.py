"""The SDK connector authors write against.

The shapes follow flytekit's ``flytekit.extend.backend.base_connector`` so that a flytekit
connector ports by changing its imports; the differences are deliberate and small:
connectors receive protobuf messages (``TaskTemplate``, ``LiteralMap``) instead of flytekit's
model wrappers, and nothing here registers itself anywhere on import.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeVar

from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service._literals import literal_map_to_python, variable_types
from connector_service.plugins import Configurable

__all__ = [
    "AsyncConnectorBase",
    "ConnectorBase",
    "Phase",
    "Resource",
    "ResourceMeta",
    "SyncConnectorBase",
    "TaskCategory",
    "convert_to_flyte_phase",
    "is_terminal_phase",
    "read_custom",
    "read_inputs",
]

Phase = execution_pb2.TaskExecution
"""``Phase.SUCCEEDED`` etc.: the ``TaskExecution.Phase`` values propeller understands."""

_TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.ABORTED, Phase.FAILED, Phase.RETRYABLE_FAILED})

_T = TypeVar("_T", bound="ResourceMeta")


@dataclass(frozen=True)
class TaskCategory:
    """The routing key: a task type name and its version, matched exactly."""

    name: str
    version: int = 0

    def __str__(self) -> str:
        return f"{self.name}_v{self.version}"

    def to_proto(self) -> agent_pb2.TaskCategory:
        return agent_pb2.TaskCategory(name=self.name, version=self.version)


@dataclass
class ResourceMeta:
    """What a connector needs to find its job again; propeller stores it and replays it.

    Subclass it as a dataclass. ``encode`` is byte-compatible with flytekit's
    (``json.dumps(asdict(self))``), so metas issued by ``pyflyte serve connector`` keep
    working after a switch-over.
    """

    def encode(self) -> bytes:
        values = {name: getattr(self, name) for name in _field_names(type(self))}  # type: ignore[arg-type]
        if not all(type(value) in _JSON_SCALARS for value in values.values()):
            # Lists, dicts, nested dataclasses: asdict converts and copies them.
            return json.dumps(asdict(self)).encode("utf-8")
        return _dumps_flat(values).encode("utf-8")

    @classmethod
    def decode(cls: type[_T], data: bytes) -> _T:
        # Unknown keys are dropped so that a newer service can add fields without
        # breaking metas that an older one issued (and vice versa).
        return _dataclass_from_dict(cls, _loads(data.decode("utf-8")))


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _make_flat_dumps() -> Callable[[dict[str, Any]], str]:
    """``json.dumps`` for a dict of scalars, through one C encoder made once.

    ``json.dumps`` builds a new C encoder on every call; CreateTask encodes a meta on every
    call. Same settings as ``json.dumps``'s defaults (ensure_ascii, ", " and ": "), so the
    bytes are identical; without the C accelerator, ``json.dumps`` itself.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return json.dumps
    encoder = make(
        None,  # no circular-reference markers: scalars only
        json.JSONEncoder().default,
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ": ",
        ", ",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )

    def dumps(values: dict[str, Any]) -> str:
        return "".join(encoder(values, 0))

    return dumps


_dumps_flat = _make_flat_dumps()


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names, in the order ``asdict`` (and so flytekit's encoding) uses."""
    return tuple(field.name for field in dataclasses.fields(cls))


_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(text: str) -> Any:
    """``json.loads``, minus its Python-level wrapper when ``text`` is exactly one JSON value.

    That is what ``encode`` (and flytekit) write; GetTask decodes one on every poll, and the
    wrapper's two whitespace regex matches cost more than the C scanner's parse.
    """
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)  # not JSON, or leading whitespace: json.loads says which
    if end != len(text):
        return json.loads(text)
    return value


def _dataclass_from_dict(cls: type[_T], values: Mapping[str, Any]) -> _T:
    plan = _field_plan(cls)  # type: ignore[arg-type]
    if type(values) is dict:
        if plan.flat and values.keys() <= plan.names:
            return cls(**values)
    elif not isinstance(values, Mapping):
        raise ValueError(f"expected a JSON object for {cls.__name__}, got {type(values).__name__}")
    kwargs: dict[str, Any] = {}
    for name, nested in plan.fields:
        if name not in values:
            continue
        value = values[name]
        if nested is not None and isinstance(value, Mapping):
            value = _dataclass_from_dict(nested, value)
        kwargs[name] = value
    return cls(**kwargs)


class _FieldPlan(typing.NamedTuple):
    fields: tuple[tuple[str, type | None], ...]
    """Each field's name and, if it is a dataclass, its type."""
    names: frozenset[str]
    flat: bool
    """No field is a dataclass: a JSON object with only known keys is the constructor's kwargs."""


@functools.cache
def _field_plan(cls: type) -> _FieldPlan:
    """How to build ``cls`` from a JSON object: resolved once per class.

    GetTask decodes a meta on every poll; resolving type hints each time was the largest
    cost of the whole call.
    """
    hints = typing.get_type_hints(cls)
    plan = []
    for field in dataclasses.fields(cls):
        field_type = hints.get(field.name)
        nested = field_type if isinstance(field_type, type) and dataclasses.is_dataclass(field_type) else None
        plan.append((field.name, nested))
    return _FieldPlan(
        fields=tuple(plan),
        names=frozenset(name for name, _ in plan),
        flat=all(nested is None for _, nested in plan),
    )


@dataclass
class Resource:
    """A job's state as the connector sees it.

    ``phase`` is always sent (propeller reads an unset phase as a retryable failure).
    ``outputs`` may be a ``LiteralMap`` or a dict of Python values; the service converts
    dicts with the types the task's interface declares.
    """

    phase: int
    message: str | None = None
    log_links: list[execution_pb2.TaskLog] | None = None
    outputs: literals_pb2.LiteralMap | Mapping[str, Any] | None = None
    custom_info: Mapping[str, Any] | None = None


class ConnectorBase(Configurable, ABC):
    """Common part of sync and async connectors: the task category they serve, and the
    operator settings they take (``settings_key``/``settings_model``, see ``plugins.py``)."""

    name: ClassVar[str] = "Base Connector"

    def __init__(self, task_type_name: str, task_type_version: int = 0, **kwargs: Any) -> None:
        if not task_type_name:
            raise ValueError(f"{type(self).__name__}: task_type_name must not be empty")
        self._task_category = TaskCategory(name=task_type_name, version=task_type_version)

    @property
    def task_category(self) -> TaskCategory:
        return self._task_category

    async def setup(self) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Open long-lived clients once, at service start-up (not per call)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Close what ``setup`` opened; called once when the service shuts down."""


class AsyncConnectorBase(ConnectorBase):
    """A connector for jobs that outlive one RPC: create, then poll with get, maybe delete.

    Each method may be ``async def`` or a plain ``def``; plain ones run on the service's
    thread pool so a blocking client library never stalls other calls.
    """

    def __init__(self, metadata_type: type[ResourceMeta], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metadata_type = metadata_type

    @property
    def metadata_type(self) -> type[ResourceMeta]:
        return self._metadata_type

    @abstractmethod
    def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        **kwargs: Any,
    ) -> Any:
        """Start the job and return a ``ResourceMeta`` that finds it again."""

    @abstractmethod
    def get(self, resource_meta: Any, **kwargs: Any) -> Any:
        """Return the job's ``Resource``; called about every 30 s per running task."""

    @abstractmethod
    def delete(self, resource_meta: Any, **kwargs: Any) -> Any:
        """Cancel the job. Must succeed for jobs that are unknown or already finished."""

    def get_metrics(self, resource_meta: Any, **kwargs: Any) -> Any:
        """Return a ``GetTaskMetricsResponse``; the default answers UNIMPLEMENTED."""
        raise NotImplementedError(f"{self.name} does not provide task metrics")

    def get_logs(self, resource_meta: Any, **kwargs: Any) -> Any:
        """Return or yield log lines (str) or ``GetTaskLogsResponse`` messages.

        An async generator streams as it goes; the default answers UNIMPLEMENTED.
        """
        raise NotImplementedError(f"{self.name} does not provide task logs")


class SyncConnectorBase(ConnectorBase):
    """A connector that finishes within one RPC (propeller's ExecuteTaskSync)."""

    @abstractmethod
    def do(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the task and return a ``Resource`` in a terminal phase."""


def is_terminal_phase(phase: int) -> bool:
    return phase in _TERMINAL_PHASES


_STATE_TO_PHASE: dict[str, int] = {
    **dict.fromkeys(("failed", "timeout", "timedout", "canceled", "cancelled", "skipped"), Phase.FAILED),
    "internal_error": Phase.RETRYABLE_FAILED,
    **dict.fromkeys(("done", "succeeded", "success", "completed"), Phase.SUCCEEDED),
    **dict.fromkeys(("running", "terminating"), Phase.RUNNING),
    "pending": Phase.INITIALIZING,
}


def convert_to_flyte_phase(state: str) -> int:
    """Map an external system's state word to a phase, as flytekit's helper does."""
    try:
        return _STATE_TO_PHASE[state.lower()]
    except KeyError:
        raise ValueError(f"Unrecognized state: {state}") from None


def read_inputs(inputs: literals_pb2.LiteralMap | None, task_template: tasks_pb2.TaskTemplate) -> dict[str, Any]:
    """The task's inputs as Python values, typed by the template's declared interface."""
    if inputs is None:
        return {}
    return literal_map_to_python(inputs, variable_types(task_template.interface.inputs))


def read_custom(task_template: tasks_pb2.TaskTemplate) -> dict[str, Any]:
    """The template's ``custom`` struct as a plain dict (numbers arrive as floats, as in flytekit)."""
    from google.protobuf import json_format  # on first use: start-up memory

    return dict(json_format.MessageToDict(task_template.custom))
