"""The three flyteidl services, as propeller calls them.

Request path: servicer (this file) -> registry (which connector) -> connector method ->
conversion (``_convert``) -> response. Every RPC runs inside ``_Call``, the one place that
times the call, maps exceptions to gRPC statuses and records metrics, so no handler repeats
that logic.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

import grpc
from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2
from flyteidl.service import agent_pb2_grpc

from connector_service import _envelope
from connector_service._convert import resource_to_proto
from connector_service.config import OPERATIONS, Settings
from connector_service.connector import ResourceMeta, TaskCategory, is_terminal_phase
from connector_service.errors import InvalidRequestError, NotFoundError, status_for
from connector_service.metrics import ConnectorMetrics
from connector_service.registry import ConnectorRegistry, RegisteredConnector

__all__ = ["AgentMetadataServicer", "AsyncAgentServicer", "SyncAgentServicer"]

_log = logging.getLogger("connector_service.rpc")

_DEADLINE_MARGIN = 0.05
"""Seconds kept back from the caller's deadline so the answer still reaches it."""


class _Call:
    """Context for one RPC: resolves the connector, bounds and runs it, maps errors, records metrics and logs."""

    __slots__ = (
        "_context", "_svc", "_started", "operation", "entry", "task_label", "task_type", "execution_id", "sizes",
    )  # fmt: skip

    def __init__(self, context: grpc.aio.ServicerContext, operation: str, svc: _Shared) -> None:
        self._context = context
        self._svc = svc
        self.operation = operation
        self.entry: RegisteredConnector | None = None
        self.task_type = "unknown"
        self.task_label = "unknown task type"
        self.execution_id = ""
        self.sizes: dict[str, int] | None = None

    def note_size(self, name: str, size: int) -> None:
        """Remember a payload size for the debug log: sizes only, never contents."""
        if self.sizes is None:
            self.sizes = {}
        self.sizes[name] = size

    def resolve(self, category: TaskCategory) -> RegisteredConnector:
        self.task_label = f"{category.name} (version {category.version})"
        self.entry = self._svc.registry.lookup(category)
        # Only registered names become metric labels: a caller inventing task types must not
        # be able to grow the metrics without bound.
        self.task_type = category.name
        return self.entry

    def timeout(self) -> tuple[float, bool]:
        """The budget for the connector, and whether the server-side cap (not the caller) sets it.

        The budget is the caller's remaining deadline, less a margin for the reply, within the
        operation's cap.
        """
        cap = self._svc.caps[self.operation]
        remaining: float | None = self._context.time_remaining()
        if remaining is None or remaining - _DEADLINE_MARGIN > cap:
            return cap, True
        return max(remaining - _DEADLINE_MARGIN, 0.0), False

    async def run(self, method: str, args: Mapping[str, Any], extras: Mapping[str, Any] | None = None) -> Any:
        """Call the resolved connector's ``method`` within its budget.

        The connector is told the budget (as ``timeout``, if it asks for it). When the
        caller's deadline is the limit, grpc itself cancels the handler at that deadline;
        a timer of our own is needed (and paid for) only when the server-side cap is tighter.
        """
        assert self.entry is not None
        budget, capped = self.timeout()
        call = self.entry.methods[method](args, {**extras, "timeout": budget} if extras else {"timeout": budget})
        if not capped:
            return await call
        async with asyncio.timeout(budget):
            return await call

    async def __aenter__(self) -> _Call:
        self._started = time.perf_counter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        elapsed = time.perf_counter() - self._started
        metrics = self._svc.metrics
        if exc is None:
            metrics.observe_success(self.task_type, self.operation, elapsed)
            if self._svc.access_log:
                _log.info(
                    "%s %s OK %.1fms",
                    self.operation,
                    self.task_label,
                    elapsed * 1000,
                    extra=self._fields(elapsed, "OK"),
                )
            return False
        if not isinstance(exc, Exception) or isinstance(exc, grpc.aio.AbortError):
            # Cancellation (the caller went away), or an abort already issued: nothing to map.
            if isinstance(exc, asyncio.CancelledError) and self._svc.access_log:
                _log.info(
                    "%s %s CANCELLED %.1fms", self.operation, self.task_label, elapsed * 1000,
                    extra=self._fields(elapsed, "CANCELLED"),
                )  # fmt: skip
            return False
        failure = status_for(exc, self.operation, self.task_label)
        metrics.observe_failure(self.task_type, self.operation, failure.error_code, elapsed)
        fields = self._fields(elapsed, failure.code.name)
        if failure.expected:
            _log.info(
                "%s %s %s %.1fms: %s",
                self.operation,
                self.task_label,
                failure.code.name,
                elapsed * 1000,
                failure.message,
                extra=fields,
            )
        else:
            _log.error("%s %s failed", self.operation, self.task_label, exc_info=exc, extra=fields)
        await self._context.abort(failure.code, failure.message)
        return False  # unreachable: abort raises

    def _fields(self, elapsed: float, code: str) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "operation": self.operation,
            "task_type": self.task_type,
            "grpc_code": code,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if self.execution_id:
            fields["task_execution_id"] = self.execution_id
        if self.sizes and _log.isEnabledFor(logging.DEBUG):
            fields.update(self.sizes)
        return fields


class _Shared:
    """What every call needs, built once from the settings."""

    __slots__ = ("registry", "metrics", "caps", "access_log", "key")

    def __init__(self, registry: ConnectorRegistry, metrics: ConnectorMetrics, settings: Settings) -> None:
        self.registry = registry
        self.metrics = metrics
        self.caps = {op: settings.operation_timeout(op) for op in (*OPERATIONS, "get_agent")}
        self.access_log = settings.access_log
        self.key = settings.signing_key


def execution_id(metadata: Any) -> str:
    """propeller's task execution id as one string: project/domain/execution/node/task/retry."""
    tid = metadata.task_execution_id
    node = tid.node_execution_id
    wf = node.execution_id
    if not wf.name and not node.node_id:
        return ""
    return f"{wf.project}/{wf.domain}/{wf.name}/{node.node_id}/{tid.task_id.name}/{tid.retry_attempt}"


def _category_of(request: Any) -> TaskCategory:
    """Get/Delete/Metrics/Logs name the connector by task_category, else the deprecated task_type."""
    category = request.task_category
    if category.name:
        return TaskCategory(category.name, category.version)
    if request.task_type:
        return TaskCategory(request.task_type, 0)
    raise InvalidRequestError("request names no task type: set task_category (or the deprecated task_type)")


def _require_async(entry: RegisteredConnector, operation: str) -> None:
    if entry.is_sync:
        raise InvalidRequestError(
            f"connector {entry.name!r} for {entry.category.name} (version {entry.category.version}) is synchronous; "
            f"it does not support {operation} (use ExecuteTaskSync)"
        )


def _decode_meta(entry: RegisteredConnector, data: bytes, key: bytes | None) -> tuple[Any, Mapping[str, Any] | None]:
    if not data:
        raise InvalidRequestError("resource_meta is empty")
    opened = _envelope.open_meta(data, key)
    meta_type = entry.connector.metadata_type  # type: ignore[attr-defined]
    try:
        meta = meta_type.decode(opened.meta)
    except Exception as exc:
        raise InvalidRequestError(
            f"cannot decode resource_meta for {entry.name!r}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    return meta, opened.output_types


class AsyncAgentServicer(agent_pb2_grpc.AsyncAgentServiceServicer):  # type: ignore[misc]
    def __init__(self, registry: ConnectorRegistry, metrics: ConnectorMetrics, settings: Settings) -> None:
        self._svc = _Shared(registry, metrics, settings)
        self._key = self._svc.key
        self._metrics = metrics

    async def CreateTask(
        self, request: agent_pb2.CreateTaskRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.CreateTaskResponse:
        async with _Call(context, "create", self._svc) as call:
            template = request.template
            call.execution_id = execution_id(request.task_execution_metadata)
            if not template.type:
                raise InvalidRequestError("CreateTask: template.type is empty")
            entry = call.resolve(TaskCategory(template.type, template.task_type_version))
            _require_async(entry, "CreateTask")
            input_bytes = request.inputs.ByteSize()
            self._metrics.observe_input_bytes(template.type, input_bytes)
            call.note_size("input_bytes", input_bytes)
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
            return agent_pb2.CreateTaskResponse(resource_meta=sealed)
        raise AssertionError("unreachable")

    async def GetTask(
        self, request: agent_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetTaskResponse:
        async with _Call(context, "get", self._svc) as call:
            entry = call.resolve(_category_of(request))
            _require_async(entry, "GetTask")
            meta, output_types = _decode_meta(entry, request.resource_meta, self._key)
            resource = await call.run("get", {"resource_meta": meta})
            proto = resource_to_proto(resource, output_types, connector=entry.name)
            call.note_size("output_bytes", proto.outputs.ByteSize())
            return agent_pb2.GetTaskResponse(resource=proto)
        raise AssertionError("unreachable")

    async def DeleteTask(
        self, request: agent_pb2.DeleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.DeleteTaskResponse:
        async with _Call(context, "delete", self._svc) as call:
            entry = call.resolve(_category_of(request))
            _require_async(entry, "DeleteTask")
            meta, _ = _decode_meta(entry, request.resource_meta, self._key)
            await call.run("delete", {"resource_meta": meta})
            return agent_pb2.DeleteTaskResponse()
        raise AssertionError("unreachable")

    async def GetTaskMetrics(
        self, request: agent_pb2.GetTaskMetricsRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetTaskMetricsResponse:
        async with _Call(context, "get_metrics", self._svc) as call:
            entry = call.resolve(_category_of(request))
            _require_async(entry, "GetTaskMetrics")
            meta, _ = _decode_meta(entry, request.resource_meta, self._key)
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
            return result
        raise AssertionError("unreachable")

    async def GetTaskLogs(
        self, request: agent_pb2.GetTaskLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.GetTaskLogsResponse]:
        async with _Call(context, "get_logs", self._svc) as call:
            entry = call.resolve(_category_of(request))
            _require_async(entry, "GetTaskLogs")
            meta, _ = _decode_meta(entry, request.resource_meta, self._key)
            result = await call.run(
                "get_logs", {"resource_meta": meta}, {"lines": request.lines, "token": request.token}
            )
            async for message in _log_messages(result, entry.name):
                yield message


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


class SyncAgentServicer(agent_pb2_grpc.SyncAgentServiceServicer):  # type: ignore[misc]
    def __init__(self, registry: ConnectorRegistry, metrics: ConnectorMetrics, settings: Settings) -> None:
        self._svc = _Shared(registry, metrics, settings)
        self._metrics = metrics

    async def ExecuteTaskSync(
        self,
        request_iterator: AsyncIterator[agent_pb2.ExecuteTaskSyncRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.ExecuteTaskSyncResponse]:
        async with _Call(context, "do", self._svc) as call:
            messages = aiter(request_iterator)
            first = await anext(messages, None)
            if first is None or first.WhichOneof("part") != "header":
                raise InvalidRequestError(
                    "ExecuteTaskSync: expected the first message to be a header (template, output_prefix), "
                    f"got {_part(first)}"
                )
            header = first.header
            template = header.template
            call.execution_id = execution_id(header.task_execution_metadata)
            if not template.type:
                raise InvalidRequestError("ExecuteTaskSync: header.template.type is empty")
            entry = call.resolve(TaskCategory(template.type, template.task_type_version))
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
            resource = await call.run(
                "do",
                {"task_template": template, "output_prefix": header.output_prefix, "inputs": inputs},
                {"task_execution_metadata": header.task_execution_metadata},
            )
            proto = resource_to_proto(resource, _types(template), connector=entry.name)
            call.note_size("output_bytes", proto.outputs.ByteSize())
            if not is_terminal_phase(proto.phase):
                raise TypeError(
                    f"{entry.name} do() returned non-terminal phase "
                    f"{agent_pb2.TaskExecution.Phase.Name(proto.phase)}; a sync task must finish in one call"
                )
            yield agent_pb2.ExecuteTaskSyncResponse(header=agent_pb2.ExecuteTaskSyncResponseHeader(resource=proto))


def _types(template: Any) -> dict[str, Any]:
    return {name: v.type for name, v in template.interface.outputs.variables.items()}


def _part(message: agent_pb2.ExecuteTaskSyncRequest | None) -> str:
    if message is None:
        return "end of stream"
    part = message.WhichOneof("part")
    return f"a {part} message" if part else "an empty message"


class AgentMetadataServicer(agent_pb2_grpc.AgentMetadataServiceServicer):  # type: ignore[misc]
    def __init__(self, registry: ConnectorRegistry, metrics: ConnectorMetrics, settings: Settings) -> None:
        self._svc = _Shared(registry, metrics, settings)
        self._registry = registry
        self._list = agent_pb2.ListAgentsResponse(agents=registry.agents())

    async def GetAgent(
        self, request: agent_pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetAgentResponse:
        async with _Call(context, "get_agent", self._svc):
            agent = self._registry.agent(request.name)
            if agent is None:
                raise NotFoundError(f"Cannot find connector for name: {request.name}")
            return agent_pb2.GetAgentResponse(agent=agent)
        raise AssertionError("unreachable")

    async def ListAgents(
        self, request: agent_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ListAgentsResponse:
        # The registry is frozen once serving, so the response is built once.
        return self._list
