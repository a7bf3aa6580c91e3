"""Per-RPC gRPC server metrics (go-grpc-prometheus names), thread-pool and sensor-poke metrics.

``InstrumentedServer`` wraps each method handler once, when it is registered, in a behaviour
that counts started/handled calls, times them and tracks calls in flight. Everything a call
needs (label children, bound ``inc``/``observe`` methods) is resolved when the handler is
wrapped, so the per-call cost is three lock-free updates (started, handled, latency; see
``_fast_metrics``) and an int kept for the in-flight gauge. The flyteidl servicers take their
methods' ``MethodMetrics`` instead and record them in ``_Call`` (``begin``/``end``), so their
calls run no wrapper at all. Async handlers only: a sync (thread-pool) handler is passed
through unmeasured. Methods no handler serves are answered UNIMPLEMENTED by grpc and not
recorded, so probing unknown method names cannot grow the label sets."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Gauge

from connector_service._decoding import tolerant
from connector_service._fast_metrics import counter, histogram, multiprocess_mode

__all__ = [
    "GrpcServerMetrics",
    "MethodMetrics",
    "failure_code",
    "InstrumentedServer",
    "InstrumentedThreadPoolExecutor",
    "POKE_OUTCOMES",
    "SECONDS_BUCKETS",
]

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POKE_OUTCOMES = ("true", "false", "timeout", "error")

_P = ParamSpec("_P")
_T = TypeVar("_T")

# grpc.aio's ServicerContext.code() is None until set_code()/abort() set it, then the
# grpc.StatusCode (grpcio 1.85; older releases returned the C-core int). Both map to the name.
_OK = 0
_CANCELLED: int = grpc.StatusCode.CANCELLED.value[0]
_UNKNOWN: int = grpc.StatusCode.UNKNOWN.value[0]
_DEADLINE_EXCEEDED: int = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
_CODE_NAMES: dict[Any, str] = {}
for _status in grpc.StatusCode:
    _CODE_NAMES[_status.value[0]] = _status.name
    _CODE_NAMES[_status] = _status.name


def _code_of(context: Any) -> Any:
    """The status the call will end with: what ``set_code``/``abort`` left in the context."""
    code = context.code()
    return _OK if code is None else code


def _cancel_code(context: Any) -> int:
    """Cancelled by the client, or by grpc because the caller's deadline passed."""
    try:
        remaining = context.time_remaining()
    except Exception:  # pragma: no cover - defensive: a context without a deadline API
        return _CANCELLED
    return _DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else _CANCELLED


def failure_code(exc: BaseException, context: Any) -> Any:
    """The status a handler that raised ``exc`` ends with, as the client will see it."""
    if isinstance(exc, grpc.aio.AbortError):
        return _code_of(context)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return _cancel_code(context)
    # grpc sends a code set with set_code() before the raise; UNKNOWN otherwise.
    set_code = _code_of(context)
    return _UNKNOWN if set_code == _OK else set_code


class MethodMetrics:
    """The label children of one method, resolved once; ``done`` records a finished call.

    Calls in flight are a plain int, exported through ``Gauge.set_function``: only the event
    loop's thread runs async handlers, so it is the only writer, and scrapes (from the metrics
    HTTP thread) read an int, which the GIL keeps whole. That saves two locked gauge updates a call.
    """

    __slots__ = (
        "started", "inflight", "inflight_child", "observe", "handled_ok", "_handled", "_handled_metric", "_labels",
    )  # fmt: skip

    def __init__(self, metrics: GrpcServerMetrics, grpc_type: str, service: str, method: str) -> None:
        self._labels = (grpc_type, service, method)
        self._handled_metric = metrics.handled
        self.started: Callable[[], None] = metrics.started.labels(grpc_type, service, method).inc
        self.inflight = 0
        self.inflight_child: Any = None
        if metrics.multiprocess:
            # set_function cannot cross processes: sync_gauges() copies the count periodically.
            self.inflight_child = metrics.inflight.labels(service, method)
        else:
            metrics.inflight.labels(service, method).set_function(self._inflight)
        self.observe: Callable[[float], None] = metrics.handling_seconds.labels(grpc_type, service, method).observe
        self._handled: dict[Any, Callable[[], None]] = {}
        self.handled_ok = self._handled_child(_OK)

    def _inflight(self) -> float:
        return self.inflight

    def _handled_child(self, code: Any) -> Callable[[], None]:
        child = self._handled.get(code)
        if child is None:
            name = _CODE_NAMES.get(code, "UNKNOWN")
            child = self._handled_metric.labels(*self._labels, name).inc
            self._handled[code] = child
        return child

    def done(self, code: Any, start: float) -> None:
        self.end(code, time.perf_counter() - start)

    # For handlers that measure themselves (``take_grpc_metrics``): begin, then end or end_ok.

    def begin(self) -> None:
        self.started()
        self.inflight += 1

    def end_ok(self, seconds: float) -> None:
        self.observe(seconds)
        self.handled_ok()
        self.inflight -= 1

    def end(self, code: Any, seconds: float) -> None:
        self.observe(seconds)
        if code == _OK:
            self.handled_ok()
        else:
            self._handled_child(code)()
        self.inflight -= 1


class GrpcServerMetrics:
    """gRPC server, thread-pool and sensor-poke metrics on one registry."""

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...] = SECONDS_BUCKETS) -> None:
        self.registry = registry
        self.multiprocess = multiprocess_mode()
        """Under --workers: values live in files the supervisor aggregates; gauges sum across workers."""
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = counter("grpc_server_started", "Total number of RPCs started on the server.", labels, registry)
        self.handled = counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            [*labels, "grpc_code"],
            registry,
        )
        self.handling_seconds = histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            labels,
            buckets,
            registry,
        )
        self.inflight = Gauge(
            "flyte_connector_inflight_requests",
            "RPCs being handled right now (async handlers: calls started and not yet handled).",
            ["grpc_service", "grpc_method"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_busy = Gauge(
            "flyte_connector_thread_pool_busy",
            "Worker threads busy running plain-def connector and sensor methods.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._pool_size = Gauge(
            "flyte_connector_thread_pool_size",
            "Threads of the worker pools: the shared one, plus each blocking connector's own once it is used.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.sensor_pokes = counter(
            "flyte_connector_sensor_pokes",
            "Sensor pokes by outcome: true (condition met), false, timeout, error.",
            ["sensor", "outcome"],
            registry,
        )
        self.sensor_poke_seconds = histogram(
            "flyte_connector_sensor_poke_seconds", "Time one sensor poke took.", ["sensor"], buckets, registry
        )
        self._methods: dict[tuple[str, str, str], MethodMetrics] = {}
        self._pokes: dict[str, tuple[Callable[[float], None], dict[str, Callable[[], None]]]] = {}

    # -- RPCs ----------------------------------------------------------------------------------

    def method(self, grpc_type: str, service: str, method: str) -> MethodMetrics:
        key = (grpc_type, service, method)
        found = self._methods.get(key)
        if found is None:
            found = MethodMetrics(self, grpc_type, service, method)
            self._methods[key] = found
        return found

    def sync_gauges(self) -> None:
        """Copy in-flight counts into their gauges (multiprocess mode only; called periodically)."""
        for m in self._methods.values():
            if m.inflight_child is not None:
                m.inflight_child.set(m.inflight)

    # -- thread pool ---------------------------------------------------------------------------

    def pool_size(self, n: int) -> None:
        """Count a new pool of ``n`` threads (pools are added, never resized)."""
        self._pool_size.inc(n)

    def run_busy(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn`` counting the calling (pool) thread as busy; for use inside the worker."""
        self.pool_busy.inc()
        try:
            return fn(*args, **kwargs)
        finally:
            self.pool_busy.dec()

    # -- sensors -------------------------------------------------------------------------------

    def observe_poke(self, sensor: str, outcome: str, seconds: float) -> None:
        """Record one poke; ``outcome`` is one of ``POKE_OUTCOMES``. ``sensor`` must be a registered name."""
        found = self._pokes.get(sensor)
        if found is None:
            found = (
                self.sensor_poke_seconds.labels(sensor).observe,
                {o: self.sensor_pokes.labels(sensor, o).inc for o in POKE_OUTCOMES},
            )
            self._pokes[sensor] = found
        observe, outcomes = found
        inc = outcomes.get(outcome)
        if inc is None:
            raise ValueError(f"sensor poke outcome must be one of {POKE_OUTCOMES}, got {outcome!r}")
        inc()
        observe(seconds)


class InstrumentedThreadPoolExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor that keeps ``flyte_connector_thread_pool_busy``/``_size`` up to date.

    Busy counts threads running a task (not tasks queued), for everything on the pool:
    plain-def connector methods, ``asyncio.to_thread`` in connectors and sync sensor pokes.
    """

    def __init__(self, max_workers: int, metrics: GrpcServerMetrics, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers, thread_name_prefix=thread_name_prefix)
        self._metrics = metrics
        metrics.pool_size(max_workers)

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        return super().submit(self._metrics.run_busy, fn, *args, **kwargs)


# -- interceptor ---------------------------------------------------------------------------------

_Behaviour = Callable[[Any, Any], Any]


def _wrap_coroutine(inner: Callable[[Any, Any], Awaitable[Any]], m: MethodMetrics) -> _Behaviour:
    """Unary responses, and streaming handlers that write with ``context.write``."""
    started, done = m.started, m.done
    perf_counter = time.perf_counter

    async def behaviour(request: Any, context: Any) -> Any:
        started()
        m.inflight += 1
        code: Any = _UNKNOWN
        start = perf_counter()
        try:
            response = await inner(request, context)
            code = _code_of(context)
            return response
        except BaseException as exc:
            code = failure_code(exc, context)
            raise
        finally:
            done(code, start)

    return behaviour


def _wrap_async_gen(inner: Callable[[Any, Any], AsyncGenerator[Any, None]], m: MethodMetrics) -> _Behaviour:
    """Streaming responses from an async generator: re-yield each message."""
    started, done = m.started, m.done
    perf_counter = time.perf_counter

    async def behaviour(request: Any, context: Any) -> AsyncIterator[Any]:
        started()
        m.inflight += 1
        code: Any = _UNKNOWN
        start = perf_counter()
        responses = inner(request, context)
        try:
            async for response in responses:
                yield response
            code = _code_of(context)
        except GeneratorExit:
            # grpc stopped consuming (the call was cancelled while a message was being sent):
            # close the handler's generator too, so its cleanup runs now.
            code = _cancel_code(context)
            await responses.aclose()
            raise
        except BaseException as exc:
            code = failure_code(exc, context)
            raise
        finally:
            done(code, start)

    return behaviour


def _split_method(full: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    service, _, method = full.lstrip("/").rpartition("/")
    return (service, method) if service else ("unknown", method)


class _MeasuredGenericHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A registered generic handler whose method handlers come out wrapped, cached per method."""

    def __init__(self, inner: Any, instrument: InstrumentedServer) -> None:
        self._inner = inner
        self._instrument = instrument
        self._cache: dict[str, Any] = {}

    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method
        wrapped = self._cache.get(method)
        if wrapped is not None:
            return wrapped
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None  # nothing cached for methods nobody serves: probing cannot grow it
        wrapped = self._cache[method] = self._instrument.wrap(method, handler)
        return wrapped


class _MethodDetails(grpc.HandlerCallDetails):  # type: ignore[misc]
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _methods_of(handler: Any) -> dict[str, Any]:
    """A generic service handler's method handlers by name, as its descriptor lists them."""
    from google.protobuf import descriptor_pool

    service: str = handler.service_name()
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        raise ValueError(f"no descriptor for service {service!r}: import its *_pb2 module first") from None
    found = {}
    for method in descriptor.methods:
        method_handler = handler.service(_MethodDetails(f"/{service}/{method.name}"))
        if method_handler is not None:
            found[method.name] = method_handler
    return found


class InstrumentedServer:
    """Registers services on a grpc.aio server with every async handler measured.

    A servicer with a ``take_grpc_metrics(method, metrics) -> bool`` method may take a method's
    metrics and record them itself (the flyteidl servicers do, in ``_Call``); its handler is
    then registered unwrapped.

    The generated ``add_*_to_server`` functions are given this object instead of the server:
    handlers are wrapped once, as they are registered, so a call pays only for its own
    measurements. (A ``ServerInterceptor`` would run an extra coroutine on every call just to
    find the wrapped handler: +10-20 µs of server CPU per call, measured.)

    Services named in ``register`` are also registered method by method, though their
    generated code (flyteidl's, from an older protoc plugin) adds them only as generic
    handlers. grpc takes a registered method's calls in apart from the generic ones, which all
    wait in one queue: during a burst of 2,000 GetTasks, ListAgents waited ~0.5 s behind them
    as a generic method, 10-45 ms as a registered one (measured). Their descriptors must be
    loaded (their ``*_pb2`` module imported): the method names come from there.
    """

    def __init__(self, server: Any, metrics: GrpcServerMetrics, register: Collection[str] = ()) -> None:
        self._server = server
        self._metrics = metrics
        self._register = frozenset(register)

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        for handler in handlers:
            if isinstance(handler, grpc.ServiceRpcHandler) and handler.service_name() in self._register:
                self.add_registered_method_handlers(handler.service_name(), _methods_of(handler))
        self._server.add_generic_rpc_handlers(tuple(_MeasuredGenericHandler(h, self) for h in handlers))

    def add_registered_method_handlers(self, service: str, method_handlers: dict[str, Any]) -> None:
        wrapped = {name: self.wrap(f"/{service}/{name}", handler) for name, handler in method_handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)

    def __getattr__(self, name: str) -> Any:
        # Anything else registration code may touch (add_insecure_port, ...) is the server's.
        return getattr(self._server, name)

    def wrap(self, full_method: str, handler: Any) -> Any:
        service, method = _split_method(full_method)
        kw_out = {"response_serializer": handler.response_serializer}
        kw = {"request_deserializer": handler.request_deserializer, **kw_out}
        if handler.request_streaming:
            if handler.response_streaming:
                grpc_type, inner, make = "bidi_stream", handler.stream_stream, grpc.stream_stream_rpc_method_handler
            else:
                grpc_type, inner, make = "client_stream", handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            grpc_type, inner, make = "server_stream", handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            grpc_type, inner, make = "unary", handler.unary_unary, grpc.unary_unary_rpc_method_handler
        m = self._metrics.method(grpc_type, service, method)
        take = getattr(getattr(inner, "__self__", None), "take_grpc_metrics", None)
        if take is not None and take(method, m):
            # The servicer records them itself: no second coroutine per call. Its handlers
            # answer undecodable requests themselves (INVALID_ARGUMENT, measured and logged).
            return make(inner, request_deserializer=tolerant(handler.request_deserializer), **kw_out)
        if inspect.isasyncgenfunction(inner):
            if not handler.response_streaming:
                return handler  # not a shape grpc.aio serves; leave it to grpc to reject
            return make(_wrap_async_gen(inner, m), **kw)
        if inspect.iscoroutinefunction(inner):
            return make(_wrap_coroutine(inner, m), **kw)
        # A sync (thread-pool) handler: grpc.aio calls it differently; served uninstrumented.
        return handler
