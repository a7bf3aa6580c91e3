"""The connector services' handlers: flyteidl's three, as propeller calls them, and the
dispatch core that ``servicer_v2`` serves Flyte 2's executor with.

Request path: servicer (this file) -> registry (which connector) -> connector method ->
conversion (``_convert``) -> response. Every RPC goes through ``_Call``, the one place that
times the call, maps exceptions to gRPC statuses and records metrics (the service's and the
gRPC server's), so no handler repeats that logic. The flyteidl2 services are these same
handlers (v1 messages are the internal model: the two are wire-compatible, see
``tests/connector_service/test_protocols.py``), with two switches: read the request's
``connection``, and run sync connectors at CreateTask.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2
from flyteidl.service import agent_pb2_grpc
from google.protobuf.message import DecodeError

from connector_service import _envelope
from connector_service._access_log import ACCESS_LOGGER, AccessLog, LoggingAccessLog
from connector_service._bulkhead import Bulkhead, SaturatedError
from connector_service._convert import fill_resource, get_task_response
from connector_service._grpc_metrics import MethodMetrics, failure_code
from connector_service._messages import clip
from connector_service.config import OPERATIONS, Settings
from connector_service.connection import Connection
from connector_service.connector import Phase, ResourceMeta, is_terminal_phase
from connector_service.errors import InvalidRequestError, NotFoundError, status_for
from connector_service.metrics import ConnectorMetrics
from connector_service.registry import ConnectorRegistry, RegisteredConnector

if TYPE_CHECKING:
    from connector_service.registry import _Method

__all__ = ["AgentMetadataServicer", "AsyncAgentServicer", "SyncAgentServicer"]

_log = logging.getLogger(ACCESS_LOGGER)

_MAX_EXECUTION_ID = 600
"""propeller's ids are short (project/domain/name/node/task/retry); a request's may not be."""

_DEADLINE_MARGIN = 0.05
"""Seconds kept back from the caller's deadline so the answer still reaches it."""


class _Op:
    """One RPC method's fixed parts, resolved when the servicer is built rather than per call."""

    __slots__ = ("name", "cap", "svc", "grpc")

    def __init__(self, name: str, svc: _Shared) -> None:
        self.name = name
        self.cap = svc.caps[name]
        self.svc = svc
        self.grpc: MethodMetrics | None = None
        """The method's gRPC server metrics, when an ``InstrumentedServer`` hands them over."""


class _Call:
    """One RPC: resolves the connector, bounds and runs it, maps errors, records metrics and logs.

    The handler calls ``succeeded()`` or ``await failed(exc)`` itself (no ``async with``, no
    wrapper coroutine): on GetTask, the call propeller repeats for every running task, each
    extra coroutine layer is measurable server CPU.
    """

    __slots__ = (
        "_context", "_op", "_start", "_category", "_bulkhead", "entry", "task_type", "execution_metadata", "sizes",
        "connection",
    )  # fmt: skip

    def __init__(self, context: grpc.aio.ServicerContext, op: _Op) -> None:
        self._context = context
        self._op = op
        self._category: tuple[str, int] | None = None
        self.entry: RegisteredConnector | None = None
        self.task_type = "unknown"
        self.execution_metadata: Any = None
        """The request's TaskExecutionMetadata (Create, Sync): its id is formatted only for a log line."""
        self.sizes: dict[str, int] | None = None
        self.connection: Connection | None = None
        """The request's connection (Flyte 2), handed to methods that name a ``connection`` parameter."""
        self._bulkhead: Bulkhead | None = None
        """The bulkhead whose slot this call holds, once admitted; released when the call ends."""
        if op.grpc is not None:
            op.grpc.begin()
        self._start = time.perf_counter()

    @property
    def task_label(self) -> str:
        """The task type as messages name it; built only when a message needs it."""
        if self.entry is not None:
            return self.entry.label
        if self._category is None:
            return "unknown task type"
        name, version = self._category
        return f"{clip(name)} (version {version})"

    def note_size(self, name: str, size: int) -> None:
        """Remember a payload size for the debug log: sizes only, never contents."""
        if not _log.isEnabledFor(logging.DEBUG):
            return
        if self.sizes is None:
            self.sizes = {}
        self.sizes[name] = size

    def resolve(self, name: str, version: int) -> RegisteredConnector:
        self._category = (name, version)
        self.entry = self._op.svc.registry.find(name, version)
        # Only registered names become metric labels: a caller inventing task types must not
        # be able to grow the metrics without bound.
        self.task_type = name
        return self.entry

    def run(self, method: str, kwargs: dict[str, Any], extras: dict[str, Any] | None = None) -> Awaitable[Any]:
        """Admit the call to its connector's bulkhead, then call ``method`` within its budget.

        The budget is the caller's remaining deadline, less a margin for the reply, within the
        operation's cap; the connector is told it (as ``timeout``, if it asks for it). When the
        caller's deadline is the limit, grpc itself cancels the handler at that deadline; a
        timer of our own is needed (and paid for) only when the server-side cap is tighter.

        Admission is inline: with room (and nobody waiting), it is two compares and an
        increment. Without, the call waits briefly or is refused (``_queued``).
        """
        assert self.entry is not None
        cap = self._op.cap
        remaining: float | None = self._context.time_remaining()
        if remaining is None or remaining - _DEADLINE_MARGIN > cap:
            budget, capped = cap, True
        else:
            budget, capped = max(remaining - _DEADLINE_MARGIN, 0.0), False
        connector_method = self.entry.methods[method]
        if "timeout" in connector_method.explicit_params:
            kwargs["timeout"] = budget
        if self.connection is not None and "connection" in connector_method.explicit_params:
            kwargs["connection"] = self.connection
        bulkhead = self.entry.bulkhead
        if bulkhead is not None:
            needs_thread = not connector_method.is_async
            if (
                bulkhead.inflight < bulkhead.max_concurrency
                and (not needs_thread or bulkhead.threads_busy < bulkhead.max_threads)
                and not bulkhead.waiters
            ):
                bulkhead.inflight += 1
                if needs_thread:
                    bulkhead.threads_busy += 1
                self._bulkhead = bulkhead
            else:
                return self._queued(bulkhead, needs_thread, connector_method, kwargs, extras, budget, capped)
        awaitable = connector_method(kwargs, extras, bulkhead)
        return _bounded(awaitable, budget) if capped else awaitable

    async def _queued(
        self,
        bulkhead: Bulkhead,
        needs_thread: bool,
        method: _Method,
        kwargs: dict[str, Any],
        extras: dict[str, Any] | None,
        budget: float,
        capped: bool,
    ) -> Any:
        """Wait briefly for room in the bulkhead (or be refused: ``SaturatedError``), then run."""
        started = time.perf_counter()
        remaining = self._context.time_remaining()
        await bulkhead.wait(
            needs_thread,
            bulkhead.wait_budget(
                self._op.name, None if remaining is None else remaining - _DEADLINE_MARGIN, needs_thread
            ),
        )
        self._bulkhead = bulkhead
        waited = time.perf_counter() - started
        budget = max(budget - waited, 0.0)
        if "timeout" in kwargs:
            kwargs["timeout"] = budget
        awaitable = method(kwargs, extras, bulkhead)
        return await (_bounded(awaitable, budget) if capped else awaitable)

    def succeeded(self) -> None:
        elapsed = time.perf_counter() - self._start
        op = self._op
        bulkhead = self._bulkhead
        if bulkhead is not None:
            bulkhead.observe(op.name, elapsed)
            bulkhead.release()
        if op.grpc is not None:
            op.grpc.end_ok(elapsed)
        svc = op.svc
        svc.metrics.observe_success(self.task_type, op.name, elapsed)
        if svc.log_ok or elapsed >= svc.slow:
            if self.sizes is None:
                svc.access_log.ok(op.name, self.task_label, self.task_type, elapsed, self._execution_id())
            else:  # debug: with the payload sizes
                svc.access_log.line(
                    logging.INFO, f"{op.name} {self.task_label} OK {elapsed * 1000:.1f}ms", self._fields(elapsed, "OK")
                )

    async def failed(self, exc: BaseException) -> None:
        """Record ``exc`` and answer it with its gRPC status (``abort`` raises).

        Returns only for what needs no answer (the caller went away, or an abort is already
        under way); the handler then re-raises.
        """
        elapsed = time.perf_counter() - self._start
        op = self._op
        if self._bulkhead is not None:
            self._bulkhead.release()
        if not isinstance(exc, Exception) or isinstance(exc, grpc.aio.AbortError):
            # Cancellation (the caller went away, or its deadline passed), or an abort already issued.
            if op.grpc is not None:
                op.grpc.end(failure_code(exc, self._context), elapsed)
            if isinstance(exc, asyncio.CancelledError | GeneratorExit) and op.svc.log_ok:
                op.svc.access_log.line(
                    logging.INFO,
                    f"{op.name} {self.task_label} CANCELLED {elapsed * 1000:.1f}ms",
                    self._fields(elapsed, "CANCELLED"),
                )
            return
        failure = status_for(exc, op.name, self.task_label)
        if op.grpc is not None:
            op.grpc.end(failure.code, elapsed)
        op.svc.metrics.observe_failure(self.task_type, op.name, failure.error_code, elapsed)
        if isinstance(exc, SaturatedError):
            # Under overload a line per refused call would flood the log (and cost CPU when
            # there is none to spare): the bulkhead logs a count per connector per second.
            op.svc.metrics.observe_shed(self.task_type, op.name)
            await self._context.abort(failure.code, failure.message)
        fields = self._fields(elapsed, failure.code.name)
        if failure.expected:
            # Logged with the access log off too: a failed call is always worth a line.
            op.svc.access_log.line(
                logging.INFO,
                f"{op.name} {self.task_label} {failure.code.name} {elapsed * 1000:.1f}ms: {failure.message}",
                fields,
            )
        else:
            _log.error("%s %s failed", op.name, self.task_label, exc_info=exc, extra=fields)
        await self._context.abort(failure.code, failure.message)

    def _execution_id(self) -> str:
        """The task execution id for a log line ("" on calls that carry none: Get, Delete)."""
        metadata = self.execution_metadata
        return "" if metadata is None else clip(execution_id(metadata), _MAX_EXECUTION_ID)

    def _fields(self, elapsed: float, code: str) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "operation": self._op.name,
            "task_type": self.task_type,
            "grpc_code": code,
            "duration_ms": round(elapsed * 1000, 3),
        }
        task_execution_id = self._execution_id()
        if task_execution_id:
            fields["task_execution_id"] = task_execution_id
        if self.sizes and _log.isEnabledFor(logging.DEBUG):
            fields.update(self.sizes)
        return fields


async def _bounded(awaitable: Awaitable[Any], budget: float) -> Any:
    async with asyncio.timeout(budget):
        return await awaitable


class _Shared:
    """What every call needs, built once from the settings."""

    __slots__ = ("registry", "metrics", "caps", "access_log", "log_ok", "slow", "key")

    def __init__(
        self, registry: ConnectorRegistry, metrics: ConnectorMetrics, settings: Settings, access_log: AccessLog | None
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.caps = {op: settings.operation_timeout(op) for op in (*OPERATIONS, "get_agent")}
        self.access_log = access_log if access_log is not None else LoggingAccessLog()
        self.log_ok = settings.access_log
        """Log successful calls too (``--access-log``); failures are always logged."""
        self.slow = settings.slow_call_seconds or math.inf
        """A successful call at least this slow is logged with the access log off too."""
        self.key = settings.signing_key


class _SelfMeasured:
    """A servicer whose handlers record their own gRPC server metrics through ``_Call``.

    ``InstrumentedServer`` asks ``take_grpc_metrics`` before wrapping a handler; a handler
    whose servicer takes them is registered as it is, so a call runs one coroutine, not two.
    """

    _ops: dict[str, _Op]

    def take_grpc_metrics(self, method: str, metrics: MethodMetrics) -> bool:
        op = self._ops.get(method)
        if op is None:
            return False
        op.grpc = metrics
        return True


def execution_id(metadata: Any) -> str:
    """propeller's task execution id as one string: project/domain/execution/node/task/retry."""
    tid = metadata.task_execution_id
    node = tid.node_execution_id
    wf = node.execution_id
    if not wf.name and not node.node_id:
        return ""
    return f"{wf.project}/{wf.domain}/{wf.name}/{node.node_id}/{tid.task_id.name}/{tid.retry_attempt}"


def _category_of(request: Any) -> tuple[str, int]:
    """Get/Delete/Metrics/Logs name the connector by task_category, else the deprecated task_type."""
    category = request.task_category
    name: str = category.name
    if name:
        return name, category.version
    if request.task_type:
        return request.task_type, 0
    raise InvalidRequestError("request names no task type: set task_category (or the deprecated task_type)")


def _require_async(entry: RegisteredConnector, operation: str) -> None:
    if entry.is_sync:
        raise InvalidRequestError(
            f"connector {entry.name!r} for {entry.category.name} (version {entry.category.version}) is synchronous; "
            f"it does not support {operation} (use ExecuteTaskSync)"
        )


def _decode_meta(entry: RegisteredConnector, meta: bytes) -> Any:
    decode = entry.decode_meta
    assert decode is not None  # async connectors always have one (checked at registration)
    try:
        return decode(meta)
    except Exception as exc:
        raise InvalidRequestError(
            f"cannot decode resource_meta for {entry.name!r}: {type(exc).__name__}: {clip(exc)}"
        ) from None


_FINISHED_MAX_BYTES = 64 * 1024
"""The largest result a sync connector run at CreateTask may leave in resource_meta.

Propeller and the executor keep metas in etcd / their state store; a bigger result fails the
task saying so rather than being written elsewhere without the operator's say-so."""


def _finished(meta: bytes, rpc: str) -> agent_pb2.Resource:
    """The Resource a sync connector left in ``resource_meta`` when it ran at CreateTask."""
    if rpc not in ("GetTask", "DeleteTask"):
        raise InvalidRequestError(f"{rpc}: the task ran to completion at CreateTask; there is nothing to ask for")
    try:
        return agent_pb2.Resource.FromString(meta)
    except DecodeError:
        raise InvalidRequestError("resource_meta carries a corrupt result") from None


async def _run_sync(
    call: _Call,
    entry: RegisteredConnector,
    template: Any,
    output_prefix: str,
    inputs: literals_pb2.LiteralMap,
    execution_metadata: Any,
    proto: agent_pb2.Resource,
) -> None:
    """Run a sync connector's ``do`` and convert its answer into ``proto`` (filled in place, not
    copied: outputs may be large): ExecuteTaskSync, and Flyte 2's CreateTask."""
    resource = await call.run(
        "do",
        {"task_template": template, "output_prefix": output_prefix, "inputs": inputs},
        {"task_execution_metadata": execution_metadata},
    )
    # Output types are needed only to convert Python values (not a LiteralMap).
    types = _types(template) if isinstance(getattr(resource, "outputs", None), Mapping) else None
    fill_resource(proto, resource, types, connector=entry.name)
    if _log.isEnabledFor(logging.DEBUG):
        call.note_size("output_bytes", proto.outputs.ByteSize())
    if not is_terminal_phase(proto.phase):
        raise TypeError(
            f"{entry.name} do() returned non-terminal phase "
            f"{agent_pb2.TaskExecution.Phase.Name(proto.phase)}; a sync task must finish in one call"
        )


class AsyncAgentServicer(agent_pb2_grpc.AsyncAgentServiceServicer, _SelfMeasured):  # type: ignore[misc]
    runs_sync_connectors = False
    """Serve sync connectors' task types too, running ``do`` at CreateTask (Flyte 2 has no sync path)."""

    def __init__(
        self,
        registry: ConnectorRegistry,
        metrics: ConnectorMetrics,
        settings: Settings,
        access_log: AccessLog | None = None,
    ) -> None:
        svc = _Shared(registry, metrics, settings, access_log)
        self._key = svc.key
        self._metrics = metrics
        self._create = _Op("create", svc)
        self._get = _Op("get", svc)
        self._delete = _Op("delete", svc)
        self._get_metrics = _Op("get_metrics", svc)
        self._get_logs = _Op("get_logs", svc)
        self._ops = {
            "CreateTask": self._create,
            "GetTask": self._get,
            "DeleteTask": self._delete,
            "GetTaskMetrics": self._get_metrics,
            "GetTaskLogs": self._get_logs,
        }

    def _begin(self, call: _Call, request: Any) -> None:
        """What a generation reads from a request before dispatch: nothing in v1 (``servicer_v2``)."""

    def _open_task(
        self, call: _Call, request: Any, rpc: str
    ) -> tuple[RegisteredConnector, Any, Any, agent_pb2.Resource | None]:
        """The connector, decoded meta and output types a Get/Delete/Metrics/Logs request names,
        or the finished Resource when a sync connector ran at CreateTask."""
        self._begin(call, request)
        entry = call.resolve(*_category_of(request))
        data = request.resource_meta
        if not data:
            raise InvalidRequestError("resource_meta is empty")
        opened = _envelope.open_meta(data, self._key)
        if opened.is_result:
            return entry, None, None, _finished(opened.meta, rpc)
        _require_async(entry, rpc)
        return entry, _decode_meta(entry, opened.meta), opened.output_types, None

    async def CreateTask(
        self, request: agent_pb2.CreateTaskRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.CreateTaskResponse:
        call = _Call(context, self._create)
        try:
            self._begin(call, request)
            template = request.template
            call.execution_metadata = request.task_execution_metadata
            if not template.type:
                raise InvalidRequestError("CreateTask: template.type is empty")
            entry = call.resolve(template.type, template.task_type_version)
            if not (entry.is_sync and self.runs_sync_connectors):
                _require_async(entry, "CreateTask")
            input_bytes = request.inputs.ByteSize()
            self._metrics.observe_input_bytes(template.type, input_bytes)
            call.note_size("input_bytes", input_bytes)
            if entry.is_sync:
                response = agent_pb2.CreateTaskResponse(resource_meta=await self._run_at_create(call, entry, request))
                call.succeeded()
                return response
            meta = await call.run(
                "create",
                {
                    "task_template": template,
                    "output_prefix": request.output_prefix,
                    "inputs": request.inputs,
                    "task_execution_metadata": request.task_execution_metadata,
                },
            )
            if not isinstance(meta, ResourceMeta):
                raise TypeError(f"{entry.name} create() returned {type(meta).__name__}, expected a ResourceMeta")
            sealed = _envelope.seal(
                meta.encode(), _envelope.compact_output_types(template.interface.outputs), self._key
            )
            response = agent_pb2.CreateTaskResponse(resource_meta=sealed)
        except BaseException as exc:
            await call.failed(exc)
            raise
        call.succeeded()
        return response

    async def _run_at_create(self, call: _Call, entry: RegisteredConnector, request: Any) -> bytes:
        """Run a sync connector now; its result travels in resource_meta for GetTask to answer."""
        resource = agent_pb2.Resource()
        await _run_sync(
            call,
            entry,
            request.template,
            request.output_prefix,
            request.inputs,
            request.task_execution_metadata,
            resource,
        )
        result = resource.SerializeToString()
        if len(result) > _FINISHED_MAX_BYTES:
            resource = agent_pb2.Resource(
                phase=Phase.FAILED,
                message=(
                    f"the result of {entry.name} is {len(result):,} bytes; at most {_FINISHED_MAX_BYTES:,} can travel "
                    "in resource_meta (this task type has no synchronous path in Flyte 2)"
                ),
            )
            result = resource.SerializeToString()
        return _envelope.seal(result, b"", self._key, result=True)

    async def GetTask(
        self, request: agent_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetTaskResponse:
        call = _Call(context, self._get)
        try:
            entry, meta, output_types, finished = self._open_task(call, request, "GetTask")
            if finished is not None:
                response = agent_pb2.GetTaskResponse(resource=finished)
            else:
                resource = await call.run("get", {"resource_meta": meta})
                response = get_task_response(resource, output_types, connector=entry.name)
            if _log.isEnabledFor(logging.DEBUG):
                call.note_size("output_bytes", response.resource.outputs.ByteSize())
        except BaseException as exc:
            await call.failed(exc)
            raise
        call.succeeded()
        return response

    async def DeleteTask(
        self, request: agent_pb2.DeleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.DeleteTaskResponse:
        call = _Call(context, self._delete)
        try:
            entry, meta, _, finished = self._open_task(call, request, "DeleteTask")
            if finished is None:  # a finished result has nothing left to cancel
                await call.run("delete", {"resource_meta": meta})
        except BaseException as exc:
            await call.failed(exc)
            raise
        call.succeeded()
        return agent_pb2.DeleteTaskResponse()

    async def GetTaskMetrics(
        self, request: agent_pb2.GetTaskMetricsRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetTaskMetricsResponse:
        call = _Call(context, self._get_metrics)
        try:
            entry, meta, _, _ = self._open_task(call, request, "GetTaskMetrics")
            result = await call.run(
                "get_metrics",
                {"resource_meta": meta},
                {
                    "queries": list(request.queries),
                    "start_time": request.start_time if request.HasField("start_time") else None,
                    "end_time": request.end_time if request.HasField("end_time") else None,
                    "step": request.step if request.HasField("step") else None,
                },
            )
            if not isinstance(result, agent_pb2.GetTaskMetricsResponse):
                raise TypeError(f"{entry.name} get_metrics() returned {type(result).__name__}")
        except BaseException as exc:
            await call.failed(exc)
            raise
        call.succeeded()
        return result

    async def GetTaskLogs(
        self, request: agent_pb2.GetTaskLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.GetTaskLogsResponse]:
        call = _Call(context, self._get_logs)
        try:
            entry, meta, _, _ = self._open_task(call, request, "GetTaskLogs")
            result = await call.run(
                "get_logs", {"resource_meta": meta}, {"lines": request.lines, "token": request.token}
            )
            async for message in _log_messages(result, entry.name):
                yield message
        except BaseException as exc:
            # Also GeneratorExit: grpc stopped reading (the caller went away) mid-stream.
            await call.failed(exc)
            raise
        call.succeeded()


async def _log_messages(result: Any, connector: str) -> AsyncIterator[agent_pb2.GetTaskLogsResponse]:
    """Turn what get_logs returned (or yields) into a stream of responses.

    Strings are log lines; consecutive lines from a plain iterable are sent in batches so a
    long log is a few messages, not one per line.
    """
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, agent_pb2.GetTaskLogsResponse):
        yield result
        return
    if isinstance(result, str):
        yield _lines([result])
        return
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield _log_item(item, connector)
        return
    if isinstance(result, Iterable):
        batch: list[str] = []
        for item in result:
            if isinstance(item, str):
                batch.append(item)
                if len(batch) >= 500:
                    yield _lines(batch)
                    batch = []
                continue
            if batch:
                yield _lines(batch)
                batch = []
            yield _log_item(item, connector)
        if batch:
            yield _lines(batch)
        return
    raise TypeError(f"{connector} get_logs() returned {type(result).__name__}")


def _lines(lines: list[str]) -> agent_pb2.GetTaskLogsResponse:
    return agent_pb2.GetTaskLogsResponse(body=agent_pb2.GetTaskLogsResponseBody(results=lines))


def _log_item(item: Any, connector: str) -> agent_pb2.GetTaskLogsResponse:
    if isinstance(item, agent_pb2.GetTaskLogsResponse):
        return item
    if isinstance(item, str):
        return _lines([item])
    raise TypeError(f"{connector} get_logs() yielded {type(item).__name__}, expected str or GetTaskLogsResponse")


class SyncAgentServicer(agent_pb2_grpc.SyncAgentServiceServicer, _SelfMeasured):  # type: ignore[misc]
    def __init__(
        self,
        registry: ConnectorRegistry,
        metrics: ConnectorMetrics,
        settings: Settings,
        access_log: AccessLog | None = None,
    ) -> None:
        self._metrics = metrics
        self._do = _Op("do", _Shared(registry, metrics, settings, access_log))
        self._ops = {"ExecuteTaskSync": self._do}

    async def ExecuteTaskSync(
        self,
        request_iterator: AsyncIterator[agent_pb2.ExecuteTaskSyncRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.ExecuteTaskSyncResponse]:
        call = _Call(context, self._do)
        try:
            response = await self._execute(call, request_iterator)
            yield response
        except BaseException as exc:
            # Also GeneratorExit: grpc stopped reading (the caller went away) mid-stream.
            await call.failed(exc)
            raise
        call.succeeded()

    async def _execute(
        self, call: _Call, request_iterator: AsyncIterator[agent_pb2.ExecuteTaskSyncRequest]
    ) -> agent_pb2.ExecuteTaskSyncResponse:
        messages = aiter(request_iterator)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidRequestError(
                "ExecuteTaskSync: expected the first message to be a header (template, output_prefix), "
                f"got {_part(first)}"
            )
        header = first.header
        template = header.template
        call.execution_metadata = header.task_execution_metadata
        if not template.type:
            raise InvalidRequestError("ExecuteTaskSync: header.template.type is empty")
        entry = call.resolve(template.type, template.task_type_version)
        if not entry.is_sync:
            raise InvalidRequestError(
                f"connector {entry.name!r} for {call.task_label} is asynchronous; "
                "it does not support ExecuteTaskSync (use CreateTask)"
            )
        second = await anext(messages, None)
        if second is None or second.WhichOneof("part") != "inputs":
            raise InvalidRequestError(
                f"ExecuteTaskSync: expected an inputs message after the header, got {_part(second)}"
            )
        inputs: literals_pb2.LiteralMap = second.inputs
        third = await anext(messages, None)
        if third is not None:
            raise InvalidRequestError(
                f"ExecuteTaskSync: expected the client to half-close after inputs, got {_part(third)}"
            )
        input_bytes = inputs.ByteSize()
        self._metrics.observe_input_bytes(template.type, input_bytes)
        call.note_size("input_bytes", input_bytes)
        response = agent_pb2.ExecuteTaskSyncResponse()
        await _run_sync(
            call,
            entry,
            template,
            header.output_prefix,
            inputs,
            header.task_execution_metadata,
            response.header.resource,
        )
        return response


def _types(template: Any) -> dict[str, Any]:
    return {name: v.type for name, v in template.interface.outputs.variables.items()}


def _part(message: agent_pb2.ExecuteTaskSyncRequest | None) -> str:
    if message is None:
        return "end of stream"
    part = message.WhichOneof("part")
    if not part:
        return "an empty message"
    return f"an {part} message" if part[0] in "aeiou" else f"a {part} message"


class AgentMetadataServicer(agent_pb2_grpc.AgentMetadataServiceServicer, _SelfMeasured):  # type: ignore[misc]
    def __init__(
        self,
        registry: ConnectorRegistry,
        metrics: ConnectorMetrics,
        settings: Settings,
        access_log: AccessLog | None = None,
    ) -> None:
        self._get_agent = _Op("get_agent", _Shared(registry, metrics, settings, access_log))
        self._ops = {"GetAgent": self._get_agent}
        self._registry = registry
        self._list = agent_pb2.ListAgentsResponse(agents=registry.agents())

    def _agent(self, name: str) -> agent_pb2.Agent | None:
        return self._registry.agent(name)

    async def GetAgent(
        self, request: agent_pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetAgentResponse:
        call = _Call(context, self._get_agent)
        try:
            agent = self._agent(request.name)
            if agent is None:
                raise NotFoundError(f"Cannot find connector for name: {clip(request.name)}")
        except BaseException as exc:
            await call.failed(exc)
            raise
        call.succeeded()
        return agent_pb2.GetAgentResponse(agent=agent)

    async def ListAgents(
        self, request: agent_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ListAgentsResponse:
        # The registry is frozen once serving, so the response is built once.
        return self._list
