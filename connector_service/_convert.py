"""From what a connector returns to what propeller reads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, types_pb2
from google.protobuf import struct_pb2

from connector_service._literals import LiteralConversionError, python_to_literal_map
from connector_service.connector import Phase, Resource

__all__ = ["ConnectorContractError", "fill_resource", "get_task_response", "resource_to_proto"]

_VALID_PHASES = frozenset(Phase.Phase.values()) - {Phase.UNDEFINED}


class ConnectorContractError(TypeError):
    """The connector returned something the SDK contract does not allow (a connector bug)."""


_PHASE_ONLY = {
    phase: agent_pb2.GetTaskResponse(resource=agent_pb2.Resource(phase=phase)) for phase in sorted(_VALID_PHASES)
}
"""Prebuilt answers for a Resource that is only a phase (never mutated: grpc only serializes them)."""


def get_task_response(
    resource: Any,
    output_types: Mapping[str, types_pb2.LiteralType] | None,
    *,
    connector: str,
) -> agent_pb2.GetTaskResponse:
    """GetTask's answer for ``resource``.

    Most polls of a running task answer a bare phase (RUNNING, no message or outputs yet);
    that answer is prebuilt, as building a response costs more server CPU than the rest of
    the poll's conversion.
    """
    if (
        type(resource) is Resource
        and type(resource.phase) is int
        and resource.outputs is None
        and not resource.message
        and not resource.log_links
        and not resource.custom_info
    ):
        prebuilt = _PHASE_ONLY.get(resource.phase)
        if prebuilt is not None:
            return prebuilt
    response = agent_pb2.GetTaskResponse()
    fill_resource(response.resource, resource, output_types, connector=connector)
    return response


def resource_to_proto(
    resource: Any,
    output_types: Mapping[str, types_pb2.LiteralType] | None,
    *,
    connector: str,
) -> agent_pb2.Resource:
    proto = agent_pb2.Resource()
    fill_resource(proto, resource, output_types, connector=connector)
    return proto


def fill_resource(
    proto: agent_pb2.Resource,
    resource: Any,
    output_types: Mapping[str, types_pb2.LiteralType] | None,
    *,
    connector: str,
) -> None:
    """Write ``resource`` into ``proto``: an empty Resource, usually already inside the response
    (filling it in place saves copying it into the response on every poll)."""
    if not isinstance(resource, Resource):
        raise ConnectorContractError(f"{connector} returned {type(resource).__name__}, expected a Resource")
    phase = resource.phase
    if phase not in _VALID_PHASES:
        # An unset phase reads as a retryable failure in propeller: refuse it loudly here.
        raise ConnectorContractError(f"{connector} returned a Resource with phase {phase!r}; set a TaskExecution phase")
    proto.phase = phase
    if resource.message:
        proto.message = resource.message
    if resource.log_links:
        for link in resource.log_links:
            if not isinstance(link, execution_pb2.TaskLog):
                raise ConnectorContractError(f"{connector}: log_links must be TaskLog messages")
        proto.log_links.extend(resource.log_links)
    if resource.custom_info:
        proto.custom_info.CopyFrom(_to_struct(resource.custom_info))
    outputs = resource.outputs
    if outputs is None:
        return
    if isinstance(outputs, literals_pb2.LiteralMap):
        proto.outputs.CopyFrom(outputs)
    elif isinstance(outputs, Mapping):
        try:
            proto.outputs.CopyFrom(python_to_literal_map(outputs, output_types))
        except LiteralConversionError as exc:
            # The job ran, but its outputs cannot be what the task promised: a failed
            # task with the reason is what the workflow author needs to see.
            proto.ClearField("outputs")
            proto.phase = Phase.FAILED
            proto.message = f"{connector} returned outputs that do not match the task's interface: {exc}"
    else:
        kind = type(outputs).__name__
        raise ConnectorContractError(f"{connector}: outputs must be a LiteralMap or a dict, got {kind}")


def _to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    from google.protobuf import json_format  # on first use: start-up memory

    struct = struct_pb2.Struct()
    # default=str keeps a stray datetime from failing the whole call; custom_info is for display.
    json_format.ParseDict(json.loads(json.dumps(dict(values), default=str)), struct)
    return struct
