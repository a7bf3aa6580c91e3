"""Which connector serves which task type, decided and validated once at start-up.

The registry is an instance built from explicit sources (installed plugins' entry points
and ``module:attr`` names from settings), never a global filled by import side effects. Every
check that can fail (wrong kind of object, duplicate task type, inconsistent sync flag) fails
here, at start-up, with a message that names the source, instead of on the first RPC.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from flyteidl.admin import agent_pb2

from connector_service._bulkhead import Bulkhead
from connector_service._messages import clip
from connector_service.connector import AsyncConnectorBase, ConnectorBase, SyncConnectorBase, TaskCategory
from connector_service.plugins import Origin, PluginSettingsError, configure_plugins

if TYPE_CHECKING:
    from connector_service.config import Settings
    from sensors.base import BaseSensor

__all__ = [
    "ENTRY_POINT_GROUP",
    "ConnectorNotFoundError",
    "ConnectorUnavailableError",
    "ConnectorRegistry",
    "RegisteredConnector",
    "RegistryError",
    "load_object",
]

ENTRY_POINT_GROUP = "flyte.connectors"

_log = logging.getLogger(__name__)


class RegistryError(ValueError):
    """A registration that cannot work; raised at start-up."""


class ConnectorUnavailableError(RuntimeError):
    """The connector is registered but its set-up failed (``--skip-broken-connectors``)."""


class ConnectorNotFoundError(LookupError):
    def __init__(self, category: TaskCategory) -> None:
        # The name is the request's: shown clipped, so an 11 KB task type cannot outgrow the trailer.
        super().__init__(f"Cannot find connector for task type: {clip(category.name)} (version {category.version})")
        self.category = category


@dataclass(frozen=True)
class _Method:
    """A connector method, with how to call it decided once rather than on every RPC."""

    fn: Callable[..., Any]
    is_async: bool
    explicit_params: frozenset[str]
    is_async_gen: bool = False

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> _Method:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            params = ()  # type: ignore[assignment]
        explicit = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        if not is_async and callable(fn) and not inspect.isfunction(fn) and not inspect.ismethod(fn):
            is_async = inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
        return cls(fn=fn, is_async=is_async, explicit_params=explicit, is_async_gen=inspect.isasyncgenfunction(fn))

    def __call__(
        self, kwargs: dict[str, Any], extras: Mapping[str, Any] | None = None, bulkhead: Bulkhead | None = None
    ) -> Awaitable[Any]:
        """Call with ``kwargs`` (always passed; the dict is the callee's) and ``extras`` (only
        if the method names them); await the result.

        A plain-def method runs on ``bulkhead``'s threads (the caller holds a thread slot of
        it), else on the loop's default executor (the test harness, which has no bulkheads).

        Extras such as ``timeout`` or ``task_execution_metadata`` for ``do`` go only to
        methods that ask for them by name, so a flytekit-style ``**kwargs`` method never
        receives arguments it did not expect. An async method's coroutine is returned as it
        is, not wrapped in another: this runs on every poll.
        """
        if extras:
            explicit = self.explicit_params
            for name, value in extras.items():
                if name in explicit:
                    kwargs[name] = value
        if self.is_async:
            if self.is_async_gen:
                return _ready(self.fn(**kwargs))
            result: Awaitable[Any] = self.fn(**kwargs)
            return result
        if bulkhead is not None:
            # Submitted now, not when awaited, so the thread slot taken for it is always returned.
            return _settle(bulkhead.run_in_thread(self.fn, kwargs))
        return self._in_thread(kwargs)

    async def _in_thread(self, kwargs: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        # The loop's default executor is the service's own pool (sized from settings);
        # copy_context keeps contextvars (log fields) visible inside the thread.
        ctx = contextvars.copy_context()
        result = await loop.run_in_executor(None, functools.partial(ctx.run, self.fn, **kwargs))
        if inspect.isawaitable(result):
            result = await result
        return result


async def _ready(value: Any) -> Any:
    return value


async def _settle(future: Awaitable[Any]) -> Any:
    result = await future
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass(frozen=True)
class RegisteredConnector:
    connector: ConnectorBase
    category: TaskCategory
    source: str
    is_sync: bool
    methods: Mapping[str, _Method] = field(repr=False)
    decode_meta: Callable[[bytes], Any] | None = field(default=None, repr=False)
    """The connector's ``metadata_type.decode`` (async connectors), looked up once."""
    broken: str | None = None
    """Why set-up failed, when the service started without this connector."""
    bulkhead: Bulkhead | None = field(default=None, repr=False)
    """Its limits and counters, once a service serves it (``ConnectorRegistry.add_bulkheads``)."""

    @property
    def name(self) -> str:
        return self.connector.name

    @functools.cached_property
    def label(self) -> str:
        """The task type as messages and the access log name it (built once, not per call)."""
        return f"{clip(self.category.name)} (version {self.category.version})"


_ASYNC_METHODS = ("create", "get", "delete", "get_metrics", "get_logs")
_SYNC_METHODS = ("do",)


class ConnectorRegistry:
    """Connectors by task category, sensors by name, and the Agent records ListAgents returns."""

    def __init__(self) -> None:
        from sensors.engine import SensorEngine

        self._by_category: dict[tuple[str, int], RegisteredConnector] = {}
        self._agents: dict[str, agent_pb2.Agent] = {}
        self._sensors: dict[str, BaseSensor] = {}
        self._sensor_sources: dict[str, str] = {}
        self._sensor_aliases: dict[str, str] = {}
        self._broken_sensors: dict[str, str] = {}
        self.sensor_engine = SensorEngine(self)
        self.register(self.sensor_engine, source="built-in")

    # -- registration -------------------------------------------------------------------------

    def add(self, obj: Any, source: str) -> None:
        """Register whatever a ``module:attr`` or entry point resolved to."""
        from sensors.base import BaseSensor

        if isinstance(obj, ConnectorBase):
            self.register(obj, source=source)
        elif isinstance(obj, BaseSensor) or (isinstance(obj, type) and issubclass(obj, BaseSensor)):
            self.register_sensor(obj, source=source)
        elif isinstance(obj, type) and issubclass(obj, ConnectorBase):
            # A class gets a fresh instance per registry, so two services in one process
            # (tests, embedding) never share a configured connector.
            try:
                instance = obj()  # type: ignore[call-arg]  # subclasses define their own constructors
            except TypeError as exc:
                raise RegistryError(
                    f"{source}: cannot instantiate connector class {obj.__qualname__} without arguments ({exc}); "
                    "register an instance of it"
                ) from None
            self.register(instance, source=source)
        elif isinstance(obj, list | tuple):
            for item in obj:
                self.add(item, source)
        else:
            raise RegistryError(
                f"{source}: expected a connector instance (AsyncConnectorBase or SyncConnectorBase), "
                f"a BaseSensor subclass or instance, or a list of these; got {type(obj).__qualname__}"
            )

    def register(self, connector: ConnectorBase, source: str = "code") -> None:
        if not isinstance(connector, AsyncConnectorBase | SyncConnectorBase):
            raise RegistryError(
                f"{source}: {type(connector).__qualname__} must subclass AsyncConnectorBase or SyncConnectorBase"
            )
        category = connector.task_category
        if not isinstance(category.name, str) or not isinstance(category.version, int):
            raise RegistryError(f"{source}: task category must be (str, int), got {category!r}")
        key = (category.name, category.version)
        existing = self._by_category.get(key)
        if existing is not None:
            raise RegistryError(
                f"Duplicate connector for task type: {category.name} (version {category.version}): "
                f"{existing.name!r} from {existing.source} and {connector.name!r} from {source}"
            )
        is_sync = isinstance(connector, SyncConnectorBase)
        decode_meta = None
        if isinstance(connector, AsyncConnectorBase):
            meta_type = connector.metadata_type
            if not (isinstance(meta_type, type) and hasattr(meta_type, "decode")):
                raise RegistryError(f"{source}: {connector.name}: metadata_type must be a ResourceMeta class")
            decode_meta = meta_type.decode
        names = _SYNC_METHODS if is_sync else _ASYNC_METHODS
        methods = {n: _Method.of(getattr(connector, n)) for n in names}

        agent = self._agents.get(connector.name)
        if agent is not None and agent.is_sync != is_sync:
            raise RegistryError(
                f"{source}: connector name {connector.name!r} is used by both a sync and an async connector; "
                "propeller routes every task type of one name the same way, so give them different names"
            )
        if agent is None:
            agent = agent_pb2.Agent(name=connector.name, is_sync=is_sync)
            self._agents[connector.name] = agent
        agent.supported_task_types.append(category.name)
        agent.supported_task_categories.append(category.to_proto())
        self._by_category[key] = RegisteredConnector(
            connector=connector,
            category=category,
            source=source,
            is_sync=is_sync,
            methods=methods,
            decode_meta=decode_meta,
        )

    def register_sensor(self, sensor: BaseSensor | type[BaseSensor], source: str = "code") -> None:
        from sensors.base import BaseSensor

        if isinstance(sensor, type):
            sensor_cls = sensor
            try:
                sensor = sensor_cls()
            except TypeError as exc:
                raise RegistryError(
                    f"{source}: cannot instantiate sensor {sensor_cls.__qualname__} without arguments ({exc}); "
                    "register an instance instead"
                ) from None
        if not isinstance(sensor, BaseSensor):
            raise RegistryError(f"{source}: {type(sensor).__qualname__} is not a BaseSensor")
        name = sensor.sensor_name
        if name in self._sensors:
            raise RegistryError(f"Duplicate sensor name {name!r}: from {self._sensor_sources[name]} and from {source}")
        for alias in (name, *sensor.aliases):
            owner = self._sensor_aliases.get(alias)
            if owner is not None and owner != name:
                raise RegistryError(f"{source}: sensor alias {alias!r} of {name!r} is already used by {owner!r}")
        self._sensors[name] = sensor
        self._sensor_sources[name] = source
        for alias in (name, *sensor.aliases):
            self._sensor_aliases[alias] = name

    # -- lookup ------------------------------------------------------------------------------

    def lookup(self, category: TaskCategory) -> RegisteredConnector:
        return self.find(category.name, category.version)

    def find(self, name: str, version: int) -> RegisteredConnector:
        """The connector for task type ``name`` version ``version`` (every RPC's lookup)."""
        entry = self._by_category.get((name, version))
        if entry is None:
            raise ConnectorNotFoundError(TaskCategory(name, version))
        if entry.broken is not None:
            raise ConnectorUnavailableError(
                f"connector {entry.name!r} for {name} (version {version}) is unavailable: "
                f"its set-up failed at start-up ({entry.broken})"
            )
        return entry

    def mark_broken(self, plugin: Any, reason: str) -> None:
        """Keep ``plugin`` listed but refuse its calls with UNAVAILABLE.

        Still listing it keeps propeller from silently routing its task type to another
        plugin (such as running it as a container); its calls fail visibly instead.
        """
        for key, entry in self._by_category.items():
            if entry.connector is plugin:
                self._by_category[key] = dataclasses.replace(entry, broken=reason)
                return
        for name, sensor in self._sensors.items():
            if sensor is plugin:
                self._broken_sensors[name] = reason
                return
        raise KeyError(f"{plugin!r} is not registered")

    def add_bulkheads(self, make: Callable[[RegisteredConnector], Bulkhead]) -> list[Bulkhead]:
        """Give every connector its bulkhead (the service does, at start-up); returns them."""
        made = []
        for key, entry in self._by_category.items():
            bulkhead = make(entry)
            self._by_category[key] = dataclasses.replace(entry, bulkhead=bulkhead)
            made.append(bulkhead)
        return made

    def sensor_unavailable(self, name: str) -> str | None:
        return self._broken_sensors.get(name)

    def find_sensor(self, module: str | None, name: str) -> BaseSensor | None:
        """Find an allow-listed sensor by ``module.name`` alias, then by bare name.

        Nothing is imported: a request can only pick among registered sensors.
        """
        key = self._sensor_aliases.get(f"{module}.{name}") if module else None
        if key is None:
            key = self._sensor_aliases.get(name)
        return self._sensors.get(key) if key is not None else None

    def agent(self, name: str) -> agent_pb2.Agent | None:
        return self._agents.get(name)

    def agents(self) -> list[agent_pb2.Agent]:
        return list(self._agents.values())

    def connectors(self) -> list[RegisteredConnector]:
        return list(self._by_category.values())

    def sensors(self) -> Mapping[str, BaseSensor]:
        return dict(self._sensors)

    def __iter__(self) -> Iterator[RegisteredConnector]:
        return iter(self._by_category.values())

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Settings, origin: Origin | None = None) -> ConnectorRegistry:
        """The registry a service with ``settings`` serves: plugins found, then configured.

        ``origin`` (from ``Settings.origins``) lets a bad ``plugins.*`` value be named by the
        flag, variable or file line it came from."""
        return cls.build(
            settings.connectors,
            use_entry_points=settings.entry_points,
            plugin_settings=settings.plugins,
            origin=origin,
        )

    @classmethod
    def build(
        cls,
        names: Iterable[str] = (),
        *,
        use_entry_points: bool = True,
        plugin_settings: Mapping[str, Any] | None = None,
        origin: Origin | None = None,
    ) -> ConnectorRegistry:
        """Build from installed plugins' entry points, then from ``module:attr`` names, then
        hand each plugin its validated ``plugins.<key>`` settings."""
        registry = cls()
        if use_entry_points:
            for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
                source = f"entry point {ep.name!r} ({ep.value})"
                try:
                    obj = ep.load()
                except Exception as exc:
                    raise RegistryError(f"{source}: failed to load: {type(exc).__name__}: {exc}") from exc
                registry.add(obj, source)
        for name in names:
            registry.add(load_object(name), f"--connector {name}")
        plugins = [entry.connector for entry in registry.connectors()] + list(registry.sensors().values())
        try:
            configure_plugins(plugins, plugin_settings or {}, origin)
        except PluginSettingsError as exc:
            raise RegistryError(str(exc)) from None
        return registry


def load_object(spec: str) -> Any:
    """Resolve ``module:attr`` (attr may be dotted), as uvicorn's importer does.

    Only names an operator configured reach this function; nothing a request carries does.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"--connector {spec!r}: expected the form MODULE:ATTR")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise RegistryError(f"--connector {spec!r}: cannot import module {module_name!r}: {exc}") from exc
        raise RegistryError(f"--connector {spec!r}: importing {module_name!r} failed: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"--connector {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj
