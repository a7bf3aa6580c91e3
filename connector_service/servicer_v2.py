"""Flyte 2's connector services (``flyteidl2.connector``), served by the same handlers as v1.

Flyte 2's executor calls ``AsyncConnectorService`` (CreateTask, GetTask, DeleteTask,
GetTaskMetrics, GetTaskLogs) and ``ConnectorMetadataService`` (GetConnector, ListConnectors).
Their messages are v1's on the wire, field for field, plus a ``connection`` (field 5) on the
requests (``tests/connector_service/test_protocols.py`` holds that to the pinned packages). So
these services parse requests with the v1 classes and run the v1 servicers' handlers: one
request path, one registry, one envelope, one conversion. What differs is small:

- ``connection`` (kept by the v1 classes as an unknown field) is read, made the current
  call's (``get_secret`` looks there first) and handed to methods that name it;
- v2 has no synchronous service, so sync connectors' task types are served here as async
  ones: ``do`` runs at CreateTask and GetTask answers from the result in ``resource_meta``;
- ``Connector`` records leave out v1's ``is_sync`` and ``supported_task_types``.

Served when ``flyteidl2`` is installed (``.[flyte2]``); flyteidl2 itself is imported only to
read a request's connection and for reflection, never at start-up.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import grpc
from flyteidl.admin import agent_pb2
from google.protobuf.unknown_fields import UnknownFieldSet

from connector_service._access_log import AccessLog
from connector_service._decoding import UndecodableRequest
from connector_service.config import Settings
from connector_service.connection import Connection, use_connection
from connector_service.metrics import ConnectorMetrics
from connector_service.registry import ConnectorRegistry
from connector_service.servicer import AgentMetadataServicer, AsyncAgentServicer, _Call

__all__ = [
    "ASYNC_SERVICE", "DESCRIPTOR_MODULES", "METADATA_SERVICE", "SERVICE_NAMES_V2", "add_v2_services", "available",
]  # fmt: skip

ASYNC_SERVICE = "flyteidl2.connector.AsyncConnectorService"
METADATA_SERVICE = "flyteidl2.connector.ConnectorMetadataService"
SERVICE_NAMES_V2 = (ASYNC_SERVICE, METADATA_SERVICE)
DESCRIPTOR_MODULES = ("flyteidl2.connector.service_pb2",)
"""Where the v2 service descriptors live (for reflection)."""

_CONNECTION_FIELD = 5
"""``connection`` in v2's Create/Get/DeleteTaskRequest; v1 has no field 5 there."""
_LENGTH_DELIMITED = 2


def available() -> bool:
    """Whether ``flyteidl2`` is installed (the ``flyte2`` extra)."""
    return importlib.util.find_spec("flyteidl2") is not None


def connection_of(request: Any) -> Connection | None:
    """The ``flyteidl2.core.Connection`` a v2 request carried, or None when it sent none."""
    fields = [f for f in UnknownFieldSet(request) if f.field_number == _CONNECTION_FIELD]  # type: ignore[attr-defined]
    if not fields:
        return None
    from flyteidl2.core import security_pb2

    proto = security_pb2.Connection()
    for field in fields:  # protobuf merges repeated occurrences of a message field
        if field.wire_type == _LENGTH_DELIMITED:
            proto.MergeFromString(field.data)
    return Connection.of(proto)


class AsyncConnectorServicer(AsyncAgentServicer):
    """``flyteidl2.connector.AsyncConnectorService``: the v1 handlers, reading ``connection``."""

    runs_sync_connectors = True

    def _begin(self, call: _Call, request: Any) -> None:
        if isinstance(request, UndecodableRequest):
            request.raise_it()
        connection = connection_of(request)
        if connection is not None:
            use_connection(connection)  # this call's task only: each RPC runs in its own
            call.connection = connection


def _connector(agent: agent_pb2.Agent) -> agent_pb2.Agent:
    """An Agent with only what v2's ``Connector`` has (name, categories): the same bytes."""
    return agent_pb2.Agent(name=agent.name, supported_task_categories=agent.supported_task_categories)


class ConnectorMetadataServicer(AgentMetadataServicer):
    """``flyteidl2.connector.ConnectorMetadataService``: GetConnector and ListConnectors."""

    def __init__(
        self,
        registry: ConnectorRegistry,
        metrics: ConnectorMetrics,
        settings: Settings,
        access_log: AccessLog | None = None,
    ) -> None:
        super().__init__(registry, metrics, settings, access_log)
        self._ops = {"GetConnector": self._get_agent}
        self._connectors = {agent.name: _connector(agent) for agent in registry.agents()}
        self._list = agent_pb2.ListAgentsResponse(agents=list(self._connectors.values()))

    def _agent(self, name: str) -> agent_pb2.Agent | None:
        return self._connectors.get(name)


def _unary(method: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )


def add_v2_services(
    server: Any,
    registry: ConnectorRegistry,
    metrics: ConnectorMetrics,
    settings: Settings,
    access_log: AccessLog | None = None,
) -> tuple[str, ...]:
    """Register the two flyteidl2 services on ``server``; returns their names.

    Nothing of flyteidl2 is imported here: the handlers speak v1's classes, and reflection
    loads ``DESCRIPTOR_MODULES`` when first asked.
    """
    tasks = AsyncConnectorServicer(registry, metrics, settings, access_log)
    a = agent_pb2
    server.add_registered_method_handlers(
        ASYNC_SERVICE,
        {
            "CreateTask": _unary(tasks.CreateTask, a.CreateTaskRequest, a.CreateTaskResponse),
            "GetTask": _unary(tasks.GetTask, a.GetTaskRequest, a.GetTaskResponse),
            "DeleteTask": _unary(tasks.DeleteTask, a.DeleteTaskRequest, a.DeleteTaskResponse),
            "GetTaskMetrics": _unary(tasks.GetTaskMetrics, a.GetTaskMetricsRequest, a.GetTaskMetricsResponse),
            "GetTaskLogs": grpc.unary_stream_rpc_method_handler(
                tasks.GetTaskLogs,
                request_deserializer=a.GetTaskLogsRequest.FromString,
                response_serializer=a.GetTaskLogsResponse.SerializeToString,
            ),
        },
    )
    meta = ConnectorMetadataServicer(registry, metrics, settings, access_log)
    server.add_registered_method_handlers(
        METADATA_SERVICE,
        {
            "GetConnector": _unary(meta.GetAgent, a.GetAgentRequest, a.GetAgentResponse),
            "ListConnectors": _unary(meta.ListAgents, a.ListAgentsRequest, a.ListAgentsResponse),
        },
    )
    return SERVICE_NAMES_V2
