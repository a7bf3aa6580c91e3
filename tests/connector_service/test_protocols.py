"""flyteidl (v1) and flyteidl2 connector messages are the same on the wire, field by field.

The Flyte 2 services parse requests with the v1 classes and answer with v1 messages: one
request path for both generations. That holds only while every field the two share has the
same number and wire type. This compares the descriptors of the two pinned packages,
recursively through every message a call carries, against the differences known (and
handled) today: a flyteidl2 release that changes anything else fails here, not in a user's
executor.
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

flyteidl2_connector = pytest.importorskip("flyteidl2.connector.connector_pb2")

from flyteidl.admin import agent_pb2 as v1  # noqa: E402

PAIRS = [
    ("CreateTaskRequest", "CreateTaskRequest"),
    ("CreateTaskResponse", "CreateTaskResponse"),
    ("GetTaskRequest", "GetTaskRequest"),
    ("GetTaskResponse", "GetTaskResponse"),
    ("DeleteTaskRequest", "DeleteTaskRequest"),
    ("DeleteTaskResponse", "DeleteTaskResponse"),
    ("GetAgentRequest", "GetConnectorRequest"),
    ("GetAgentResponse", "GetConnectorResponse"),
    ("ListAgentsRequest", "ListConnectorsRequest"),
    ("ListAgentsResponse", "ListConnectorsResponse"),
    ("GetTaskMetricsRequest", "GetTaskMetricsRequest"),
    ("GetTaskMetricsResponse", "GetTaskMetricsResponse"),
    ("GetTaskLogsRequest", "GetTaskLogsRequest"),
    ("GetTaskLogsResponse", "GetTaskLogsResponse"),
]

# Each known difference, and why it is harmless.
KNOWN = {
    # v2 request fields the v1 classes keep as unknown fields: passed through, or read by the v2 adapter.
    "CreateTaskRequest.connection#5: only in v2",  # read from the unknown fields (connection_of)
    "GetTaskRequest.connection#5: only in v2",
    "DeleteTaskRequest.connection#5: only in v2",
    "CreateTaskRequest.inputs.context#2: only in v2",
    "CreateTaskRequest.inputs.literals.value.artifact_id#9: only in v2",
    "CreateTaskRequest.template.metadata.retries.backoff#6: only in v2",
    "CreateTaskRequest.template.metadata.debuggable#17: only in v2",
    "CreateTaskRequest.template.metadata.log_links#18: only in v2",
    "CreateTaskRequest.template.metadata.image_build_run#19: only in v2",
    "CreateTaskRequest.template.metadata.is_entrypoint#20: only in v2",
    "CreateTaskRequest.template.metadata.code_bundle_uri#21: only in v2",
    "CreateTaskRequest.template.metadata.timeouts#22: only in v2",
    "CreateTaskRequest.template.metadata.produces_artifacts#23: only in v2",
    "CreateTaskRequest.template.metadata.cache_max_age#24: only in v2",
    "CreateTaskRequest.template.interface.inputs.variables.value.artifact_partial_id.time_partition.key#3: only in v2",
    "CreateTaskRequest.template.interface.inputs.variables.value.artifact_partial_id.time_partition.granularity: "
    "enum values only in v2: [5]",
    "CreateTaskRequest.template.container.data_config.file_input_layout#6: only in v2",
    "CreateTaskRequest.template.extended_resources.gpu_accelerator.device_class#4: only in v2",
    "CreateTaskRequest.template.extended_resources.gpu_accelerator.accelerator_model#5: only in v2",
    "CreateTaskRequest.template.reuse_policy#19: only in v2",
    "CreateTaskRequest.template.worker_kind#20: only in v2",
    # v1 request fields v2 never sends: their defaults are what v1 sees.
    "CreateTaskRequest.task_execution_metadata.overrides#10: only in v1",
    "GetTaskRequest.task_type#1: only in v1",  # deprecated; task_category is read first
    "DeleteTaskRequest.task_type#1: only in v1",
    "GetTaskMetricsRequest.task_type#1: only in v1",
    "GetTaskLogsRequest.task_type#1: only in v1",
    # v1 response fields the service never sets on a v2 answer.
    "GetTaskResponse.resource.state#1: only in v1",  # never set by the service
    "GetTaskResponse.resource.agent_error#7: only in v1",  # never set by the service
    "GetAgentResponse.agent.supported_task_types#2: only in v1",  # left out of v2 answers
    "GetAgentResponse.agent.is_sync#3: only in v1",  # left out of v2 answers (no sync path in v2)
    "ListAgentsResponse.agents.supported_task_types#2: only in v1",
    "ListAgentsResponse.agents.is_sync#3: only in v1",
    # v2 response fields a connector may fill through raw protos; a v1 answer leaves them unset.
    "GetTaskResponse.resource.outputs.literals.value.artifact_id#9: only in v2",
    "GetTaskResponse.resource.outputs.produced_artifacts#3: only in v2",
    "GetTaskResponse.resource.log_links.link_type#7: only in v2",
    "GetTaskResponse.resource.log_links.ready#8: only in v2",
    "GetTaskResponse.resource.log_links.icon_uri#9: only in v2",
    "GetTaskLogsResponse.body.structured_lines.short_pod_name#4: only in v2",
}


def _differences(d1: Descriptor, d2: Descriptor, path: str, seen: set[tuple[str, str]], out: list[str]) -> None:
    if (d1.full_name, d2.full_name) in seen:
        return
    seen.add((d1.full_name, d2.full_name))
    by_number_1 = {f.number: f for f in d1.fields}
    by_number_2 = {f.number: f for f in d2.fields}
    for number in sorted(by_number_1.keys() | by_number_2.keys()):
        a, b = by_number_1.get(number), by_number_2.get(number)
        where = f"{path}.{(a or b).name}"  # type: ignore[union-attr]
        if a is None or b is None:
            out.append(f"{where}#{number}: only in {'v2' if a is None else 'v1'}")
            continue
        if a.type != b.type or a.is_repeated != b.is_repeated:
            out.append(f"{where}#{number}: type {a.type}/{b.type}, repeated {a.is_repeated}/{b.is_repeated}")
            continue
        if a.type == FieldDescriptor.TYPE_MESSAGE:
            _differences(a.message_type, b.message_type, where, seen, out)
        elif a.type == FieldDescriptor.TYPE_ENUM:
            values_1 = {v.number for v in a.enum_type.values}
            values_2 = {v.number for v in b.enum_type.values}
            if values_1 - values_2:
                out.append(f"{where}: enum values only in v1: {sorted(values_1 - values_2)}")
            if values_2 - values_1:
                out.append(f"{where}: enum values only in v2: {sorted(values_2 - values_1)}")


def test_v1_and_v2_connector_messages_differ_only_where_known() -> None:
    found: list[str] = []
    for name_1, name_2 in PAIRS:
        _differences(
            getattr(v1, name_1).DESCRIPTOR, getattr(flyteidl2_connector, name_2).DESCRIPTOR, name_1, set(), found
        )
    assert sorted(set(found) - KNOWN) == [], "new differences between flyteidl and flyteidl2"
    assert sorted(KNOWN - set(found)) == [], "known differences that are gone: update KNOWN"


def test_the_phase_enum_is_the_same() -> None:
    from flyteidl.core import execution_pb2 as e1
    from flyteidl2.core import execution_pb2 as e2

    phases_1 = {v.number: v.name for v in e1.TaskExecution.Phase.DESCRIPTOR.values}
    phases_2 = {v.number: v.name for v in e2.TaskExecution.Phase.DESCRIPTOR.values}
    assert phases_1 == phases_2


def test_flyteidl2s_top_level_buf_package_collides_with_nothing_here() -> None:
    """flyteidl2 depends on protovalidate, which installs a top-level ``buf`` package."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.find_spec("buf")
    assert spec is not None
    locations = [Path(p).resolve() for p in spec.submodule_search_locations or []]
    assert locations and all("site-packages" in p.parts for p in locations), locations  # installed, not ours
    assert not (root / "buf").exists() and not list(root.glob("*/buf"))
    # Both generations load into one descriptor pool without a clash.
    import flyteidl.service.agent_pb2  # noqa: F401
    import flyteidl2.connector.service_pb2  # noqa: F401
