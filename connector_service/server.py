"""The service: a grpc.aio server with the flyteidl services, health and reflection, plus its lifecycle.

Start-up order: thread pool, connector set-up, gRPC server, metrics endpoint, then health
SERVING. Shutdown reverses it: health NOT_SERVING first (so load balancers and propeller's
resolver stop sending), a short delay, then the server stops taking calls and in-flight ones
get a grace period, then connectors close their clients.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import importlib
import logging
from typing import Any

import grpc
from flyteidl.service import agent_pb2 as _service_descriptors  # noqa: F401 - InstrumentedServer reads them
from flyteidl.service import agent_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

from connector_service._access_log import AccessLog
from connector_service._bulkhead import Bulkhead
from connector_service._grpc_metrics import GrpcServerMetrics, InstrumentedServer, InstrumentedThreadPoolExecutor
from connector_service._health import HealthServicer
from connector_service.config import Settings
from connector_service.metrics import ConnectorMetrics, new_registry
from connector_service.registry import ConnectorRegistry, RegisteredConnector
from connector_service.servicer import AgentMetadataServicer, AsyncAgentServicer, SyncAgentServicer

__all__ = ["ConnectorService", "SERVICE_NAMES", "StartupError"]

_log = logging.getLogger("connector_service")

SERVICE_NAMES = (
    "flyteidl.service.AsyncAgentService",
    "flyteidl.service.SyncAgentService",
    "flyteidl.service.AgentMetadataService",
)


_MAX_PENDING = 10_000
"""grpc core's soft limit on calls not yet taken by the server (its default: 1,000)."""


class StartupError(RuntimeError):
    """The service cannot start; the message says what and why."""


def _release_start_up_memory() -> None:
    """Hand the heap that imports and schema building left free back to the OS.

    Start-up allocates and frees several MB (module import, pydantic schemas); glibc keeps
    freed heap pages mapped, so they would count against the pod's memory limit for as long
    as the process lives. Where glibc is not the C library, this does nothing.
    """
    gc.collect()
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


_REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"


class _Reflection:
    """Reflection that imports itself and the service descriptors on its first call, not at start-up.

    The flyteidl services' descriptors live in modules the generated stubs never import
    (``flyteidl2.connector.service_pb2``): without them reflection lists the services but
    cannot describe them, so grpcurl's ``describe`` and ``invoke`` fail. They, and
    grpc_reflection itself (with protobuf's ``descriptor_pb2``), cost start-up time and
    idle memory (about 1 MB) for a tool an operator may never point at the pod.
    """

    def __init__(self, service_names: tuple[str, ...], descriptor_modules: tuple[str, ...]) -> None:
        self._names = service_names
        self._descriptor_modules = descriptor_modules
        self._servicer: Any = None
        self._messages: Any = None

    def _reflection_pb2(self) -> Any:
        if self._messages is None:
            from grpc_reflection.v1alpha import reflection_pb2

            self._messages = reflection_pb2
        return self._messages

    def deserialize(self, data: bytes) -> Any:
        return self._reflection_pb2().ServerReflectionRequest.FromString(data)

    async def info(self, request_iterator: Any, context: Any) -> Any:
        if self._servicer is None:
            for module in self._descriptor_modules:
                importlib.import_module(module)
            from grpc_reflection.v1alpha import reflection

            self._servicer = reflection.aio.ReflectionServicer(self._names)
        async for response in self._servicer.ServerReflectionInfo(request_iterator, context):
            yield response


def _add_reflection(server: InstrumentedServer, service_names: tuple[str, ...], modules: tuple[str, ...]) -> None:
    """Reflection over every served service, async and measured like the others (see ``_Reflection``)."""
    lazy = _Reflection((*service_names, health.SERVICE_NAME, _REFLECTION_SERVICE), modules)
    handler = grpc.stream_stream_rpc_method_handler(
        lazy.info, request_deserializer=lazy.deserialize, response_serializer=_serialize
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_REFLECTION_SERVICE, {"ServerReflectionInfo": handler}),)
    )


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


class ConnectorService:
    """Owns the gRPC server, the thread pool and the metrics endpoint for one process."""

    def __init__(
        self,
        settings: Settings,
        registry: ConnectorRegistry,
        *,
        metrics_registry: CollectorRegistry | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.settings = settings
        self.access_log = access_log
        """Where call lines go; None: records of the ``connector_service.rpc`` logger (embedding)."""
        self.registry = registry
        self.metrics_registry = metrics_registry if metrics_registry is not None else new_registry()
        self.metrics = ConnectorMetrics(self.metrics_registry)
        self.grpc_metrics = GrpcServerMetrics(self.metrics_registry)
        self.port: int | None = None
        self.service_names: tuple[str, ...] = ()
        self._descriptor_modules: tuple[str, ...] = ()
        """The connector services served (v1's, v2's or both), as health and reflection name them."""
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._executor: InstrumentedThreadPoolExecutor | None = None
        self._metrics_http: Any = None
        self._stopping: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._set_up: list[Any] = []
        self._bulkheads: list[Bulkhead] = []
        self._gauge_sync: asyncio.Future[None] | None = None
        self.unavailable: dict[str, str] = {}
        """Health service name -> why, for connectors started without (--skip-broken-connectors)."""

    async def start(self) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        self._executor = InstrumentedThreadPoolExecutor(
            settings.thread_pool_size, self.grpc_metrics, thread_name_prefix="connector-worker"
        )
        # Plain-def connector methods and asyncio.to_thread in connectors land on this pool,
        # sized from settings, instead of asyncio's small default one.
        loop.set_default_executor(self._executor)
        self.registry.sensor_engine.poke_timeout = settings.sensor_poke_timeout
        self.registry.sensor_engine.metrics = self.grpc_metrics
        self._check_limits()
        self._bulkheads = self.registry.add_bulkheads(self._bulkhead)
        engine = self.registry.sensor_engine
        engine_calls = settings.limits_for(engine.task_category.name)[0]
        engine.bulkheads = {name: self._sensor_bulkhead(name, engine_calls) for name in self.registry.sensors()}
        self._bulkheads += engine.bulkheads.values()
        await self._setup_plugins()

        options = [
            ("grpc.max_receive_message_length", settings.max_message_size),
            ("grpc.max_send_message_length", settings.max_message_size),
            # An accidental second instance on the same port must fail, not silently share it;
            # only --workers' processes share on purpose.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            # Calls grpc's core holds until the Python server asks for them. Past the soft limit
            # (default 1,000) core drops calls at random, and the caller sees CANCELLED; a burst
            # of a few thousand calls outruns the loop that asks for them. Held a little longer,
            # they reach the server, which refuses the excess at once with RESOURCE_EXHAUSTED.
            ("grpc.server.max_pending_requests", _MAX_PENDING),
            ("grpc.server.max_pending_requests_hard_limit", _MAX_PENDING * 2),
        ]
        server = grpc.aio.server(
            options=options,
            # Beyond this many calls in progress grpc answers RESOURCE_EXHAUSTED at once
            # rather than queueing without bound.
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        )
        # Every service is registered through this wrapper, which measures each handler.
        measured = InstrumentedServer(server, self.grpc_metrics, register=SERVICE_NAMES)
        self.service_names = self._add_connector_services(measured)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, measured)
        _add_reflection(measured, self.service_names, self._descriptor_modules)
        address = _bind_address(settings.host, settings.port)
        credentials = None
        if settings.tls.enabled:
            from connector_service._tls import TLSConfigError, server_credentials

            try:
                credentials = server_credentials(settings.tls)
            except TLSConfigError as exc:
                raise StartupError(str(exc)) from None
        try:
            if credentials is not None:
                self.port = server.add_secure_port(address, credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {address}: {exc}") from None
        await server.start()
        self._server = server

        if settings.metrics_port:
            try:
                self._metrics_http, _ = start_http_server(
                    settings.metrics_port, addr=settings.metrics_host, registry=self.metrics_registry
                )
            except OSError as exc:
                await server.stop(None)
                raise StartupError(
                    f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
                ) from None
            self.metrics_port = self._metrics_http.server_port

        if self.grpc_metrics.multiprocess:
            self._gauge_sync = asyncio.ensure_future(self._sync_gauges())
        _release_start_up_memory()
        for name in ("", *self.service_names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        # Per-plugin health, so an operator (or a probe with `service:`) can see what is broken,
        # and the same as a gauge, so dashboards show what each pod serves and alerts see a failure.
        for _, health_name in self._plugins():
            status = "NOT_SERVING" if health_name in self.unavailable else "SERVING"
            await self._health.set(health_name, health_pb2.HealthCheckResponse.ServingStatus.Value(status))
        for entry in self.registry.connectors():
            self.metrics.up.labels(entry.category.name, entry.name).set(0 if entry.broken else 1)
        for name in self.registry.sensors():
            self.metrics.up.labels("sensor", name).set(0 if f"sensor/{name}" in self.unavailable else 1)
        _log.info(
            "serving %d connector(s) and %d sensor(s) on %s (metrics: %s)",
            len(self.registry.connectors()),
            len(self.registry.sensors()),
            _bind_address(settings.host, self.port),
            f"{settings.metrics_host}:{self.metrics_port}" if self.metrics_port else "off",
        )

    def _add_connector_services(self, server: InstrumentedServer) -> tuple[str, ...]:
        """The generations ``--protocols`` asks for, over the one registry; returns the service names."""
        settings, access_log = self.settings, self.access_log
        protocols = settings.protocols
        from connector_service import servicer_v2

        if protocols is None:
            protocols = ["v1", "v2"] if servicer_v2.available() else ["v1"]
        names: tuple[str, ...] = ()
        self._descriptor_modules = ()
        if "v1" in protocols:
            agent_pb2_grpc.add_AsyncAgentServiceServicer_to_server(
                AsyncAgentServicer(self.registry, self.metrics, settings, access_log), server
            )
            agent_pb2_grpc.add_SyncAgentServiceServicer_to_server(
                SyncAgentServicer(self.registry, self.metrics, settings, access_log), server
            )
            agent_pb2_grpc.add_AgentMetadataServiceServicer_to_server(
                AgentMetadataServicer(self.registry, self.metrics, settings, access_log), server
            )
            names += SERVICE_NAMES
            self._descriptor_modules += ("flyteidl.service.agent_pb2",)
        if "v2" in protocols:
            if not servicer_v2.available():
                raise StartupError("--protocols v2 needs flyteidl2: pip install 'flyte-connector-service[flyte2]'")
            names += servicer_v2.add_v2_services(server, self.registry, self.metrics, settings, access_log)
            self._descriptor_modules += servicer_v2.DESCRIPTOR_MODULES
        return names

    async def _sync_gauges(self) -> None:
        while True:
            self.grpc_metrics.sync_gauges()
            await asyncio.sleep(1.0)

    async def _setup_plugins(self) -> None:
        self.unavailable.clear()
        for plugin, health_name in self._plugins():
            label = getattr(plugin, "name", type(plugin).__name__)
            try:
                await plugin.setup()
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if not self.settings.skip_broken_connectors:
                    await self._close_plugins()
                    raise StartupError(f"set-up of {label!r} failed: {reason}") from exc
                _log.error("set-up of %r failed; starting without it: %s", label, reason, exc_info=exc)
                self.registry.mark_broken(plugin, reason)
                self.unavailable[health_name] = reason
                continue
            self._set_up.append(plugin)

    def _check_limits(self) -> None:
        served = {entry.category.name for entry in self.registry.connectors()}
        served |= {f"sensor/{name}" for name in self.registry.sensors()}
        unknown = sorted(set(self.settings.limits) - served)
        if unknown:
            raise StartupError(
                f"limits: no connector serves task type(s) {', '.join(map(repr, unknown))} "
                f"(served: {', '.join(sorted(served))})"
            )

    def _sensor_bulkhead(self, name: str, engine_calls: int) -> Bulkhead:
        return self._new_bulkhead(f"sensor {name!r}", f"sensor/{name}", f"sensor-{name}", within=engine_calls)

    def _bulkhead(self, entry: RegisteredConnector) -> Bulkhead:
        category = entry.category
        label = f"connector {entry.name!r} for {category.name} (version {category.version})"
        return self._new_bulkhead(label, category.name, category.name)

    def _new_bulkhead(self, label: str, key: str, threads_name: str, within: int | None = None) -> Bulkhead:
        """The bulkhead of ``key`` (a task type or ``sensor/<name>``), sized by its limits."""
        calls, threads, wait = self.settings.limits_for(key, within=within)
        prefix = f"connector-worker-{threads_name}"[:48]
        return Bulkhead(
            label,
            max_concurrency=calls,
            max_threads=threads,
            max_wait=wait,
            make_executor=lambda n: InstrumentedThreadPoolExecutor(n, self.grpc_metrics, thread_name_prefix=prefix),
        )

    def _plugins(self) -> list[tuple[Any, str]]:
        """Every connector and sensor, with the health service name that reports it."""
        plugins: list[tuple[Any, str]] = [
            (entry.connector, f"connector/{entry.category}") for entry in self.registry.connectors()
        ]
        plugins += [(sensor, f"sensor/{name}") for name, sensor in self.registry.sensors().items()]
        return plugins

    async def _close_plugins(self) -> None:
        while self._set_up:
            plugin = self._set_up.pop()
            try:
                await plugin.close()
            except Exception:
                _log.exception("closing %r failed", getattr(plugin, "name", plugin))

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop. Safe to call more than once and concurrently: later calls wait."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        settings = self.settings
        grace = settings.grace_period if grace is None else grace
        try:
            if self._health is not None:
                await self._health.enter_graceful_shutdown()
            if self._server is not None:
                if settings.shutdown_delay:
                    _log.info("health is NOT_SERVING; refusing new calls in %.1fs", settings.shutdown_delay)
                    await asyncio.sleep(settings.shutdown_delay)
                _log.info("draining in-flight calls (grace %.1fs)", grace)
                await self._server.stop(grace)
            await self._close_plugins()
            if self._metrics_http is not None:
                self._metrics_http.shutdown()
                self._metrics_http.server_close()
        finally:
            if self._gauge_sync is not None:
                self._gauge_sync.cancel()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            for bulkhead in self._bulkheads:
                bulkhead.shutdown()
            self._stopped.set()
            _log.info("stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> ConnectorService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
