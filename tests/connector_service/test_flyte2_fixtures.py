"""What the real Flyte 2 SDK (flyte 2.12.1, flyteidl2 2.0.51) serializes, read as flyteidl2 and as flyteidl v1.

The fixtures in tests/fixtures/flyte2 are made by make_flyte2_fixtures.py with the SDK's own
serializer and type engine. These tests pin down the wire facts the Flyte 2 services build on:
each file parses as its flyteidl2 message, the same bytes parse as the v1 counterpart with
exactly the v1-unknown fields listed here, and today's v1 service already runs the echo,
webhook and sensor templates when they arrive in v1 messages.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2
from flyteidl2.connector import connector_pb2 as v2_connector_pb2
from flyteidl2.core import security_pb2 as v2_security_pb2
from flyteidl2.core import tasks_pb2 as v2_tasks_pb2
from flyteidl2.task import common_pb2 as v2_common_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from connector_service._literals import literal_map_to_python
from tests.http_server import Answer, HttpTestServer
from tests.utils import FIXTURES, Running, create_task, get_task, run_service, sync_requests

Phase = execution_pb2.TaskExecution
FLYTE2 = FIXTURES / "flyte2"
PLACEHOLDER = "http://placeholder.invalid"
INDEX = json.loads((FLYTE2 / "index.json").read_text(encoding="utf-8"))
ENTRIES = {entry["stem"]: entry for entry in INDEX["fixtures"]}
STEMS = sorted(ENTRIES)

# Every field of a CreateTaskRequest (and the messages inside it) that flyteidl2 2.0.51 has and
# flyteidl 1.16 does not know: a v1 parser keeps them as unknown fields, nothing else differs
# on the wire (see test_flyteidl2_is_a_wire_superset_of_v1).
UNKNOWN_TO_V1 = {
    "flyteidl2.connector.CreateTaskRequest.connection=5",
    "flyteidl2.task.Inputs.context=2",
    "flyteidl2.core.Literal.artifact_id=9",
    "flyteidl2.core.TaskTemplate.reuse_policy=19",
    "flyteidl2.core.TaskTemplate.worker_kind=20",
    "flyteidl2.core.TaskMetadata.debuggable=17",
    "flyteidl2.core.TaskMetadata.log_links=18",
    "flyteidl2.core.TaskMetadata.image_build_run=19",
    "flyteidl2.core.TaskMetadata.is_entrypoint=20",
    "flyteidl2.core.TaskMetadata.code_bundle_uri=21",
    "flyteidl2.core.TaskMetadata.timeouts=22",
    "flyteidl2.core.TaskMetadata.produces_artifacts=23",
    "flyteidl2.core.TaskMetadata.cache_max_age=24",
    "flyteidl2.core.RetryStrategy.backoff=6",
    "flyteidl2.core.DataLoadingConfig.file_input_layout=6",
    "flyteidl2.core.GPUAccelerator.device_class=4",
    "flyteidl2.core.GPUAccelerator.accelerator_model=5",
    "flyteidl2.core.TimePartition.key=3",
}
# Same number, same wire shape, another name: flyteidl2.task.Inputs is `repeated NamedLiteral
# {name = 1; value = 2}` where v1's LiteralMap is `map<string, Literal>`, i.e. repeated
# `{key = 1; value = 2}` entries. Order is kept in v2 only; a repeated name is last-wins in v1.
RENAMED_IN_V2 = {"flyteidl2.task.NamedLiteral.name=1 (v1 flyteidl.core.LiteralMap.LiteralsEntry.key)"}


def _bytes(name: str) -> bytes:
    return (FLYTE2 / name).read_bytes()


def v2_template(stem: str) -> v2_tasks_pb2.TaskTemplate:
    return v2_tasks_pb2.TaskTemplate.FromString(_bytes(ENTRIES[stem]["template"]))


def v2_inputs(stem: str) -> v2_common_pb2.Inputs:
    return v2_common_pb2.Inputs.FromString(_bytes(ENTRIES[stem]["inputs"]))


def v1_template(stem: str) -> tasks_pb2.TaskTemplate:
    return tasks_pb2.TaskTemplate.FromString(_bytes(ENTRIES[stem]["template"]))


def v1_inputs(stem: str) -> literals_pb2.LiteralMap:
    return literals_pb2.LiteralMap.FromString(_bytes(ENTRIES[stem]["inputs"]))


def unknown_fields(message: Message, path: str = "") -> set[str]:
    """Paths (``.field`` / ``[key]`` / ``#number``) of every unknown field in ``message``, recursively."""
    found = {f"{path}#{field.field_number}" for field in UnknownFieldSet(message)}
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        where = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    found |= unknown_fields(item, f"{where}[{key}]")
        elif field.is_repeated:
            for i, item in enumerate(value):
                found |= unknown_fields(item, f"{where}[{i}]")
        else:
            found |= unknown_fields(value, where)
    return found


def wire_diff(v2: Descriptor, v1: Descriptor) -> tuple[set[str], set[str], set[str], set[str]]:
    """Compare two message trees field number by field number: (unknown to v1, v1 only, renamed, conflicting)."""
    unknown: set[str] = set()
    v1_only: set[str] = set()
    renamed: set[str] = set()
    conflicts: set[str] = set()
    seen: set[tuple[str, str]] = set()

    def walk(new: Descriptor, old: Descriptor) -> None:
        if (new.full_name, old.full_name) in seen:
            return
        seen.add((new.full_name, old.full_name))
        by_number = {f.number: f for f in old.fields}
        for f in new.fields:
            name = f"{new.full_name}.{f.name}={f.number}"
            o = by_number.get(f.number)
            if o is None:
                unknown.add(name)
            elif f.type != o.type or f.is_repeated != o.is_repeated:
                conflicts.add(f"{name} (v1 {old.full_name}.{o.name})")
            else:
                if f.name != o.name:
                    renamed.add(f"{name} (v1 {old.full_name}.{o.name})")
                if f.type == FieldDescriptor.TYPE_MESSAGE:
                    walk(f.message_type, o.message_type)
        numbers = {f.number for f in new.fields}
        v1_only.update(f"{old.full_name}.{f.name}={f.number}" for f in old.fields if f.number not in numbers)

    walk(v2, v1)
    return unknown, v1_only, renamed, conflicts


# -- the files -------------------------------------------------------------------------------------


def test_index_names_every_file_and_the_sdk_that_made_them() -> None:
    assert INDEX["sdk"]["flyte"] == "2.12.1"
    assert INDEX["sdk"]["flyteidl2"] == "2.0.51"
    named = {entry[kind] for entry in INDEX["fixtures"] for kind in ("template", "inputs")}
    on_disk = {p.name for p in FLYTE2.glob("*.pb")}
    assert named == on_disk
    assert {"echo", "webhook_get", "webhook_post", "file_sensor", "fixture_job", "bigquery"} <= set(STEMS)


@pytest.mark.parametrize("stem", STEMS)
def test_template_parses_as_flyteidl2(stem: str) -> None:
    entry = ENTRIES[stem]
    raw = _bytes(entry["template"])
    template = v2_tasks_pb2.TaskTemplate.FromString(raw)
    assert (template.type, template.task_type_version) == (entry["task_type"], entry["task_type_version"])
    ident = template.id
    assert (ident.project, ident.domain, ident.name) == ("fixtures", "development", entry["task_name"])
    assert template.metadata.runtime.version == "2.12.1"
    assert template.metadata.runtime.type == v2_tasks_pb2.RuntimeMetadata.FLYTE_SDK
    assert not unknown_fields(template)
    assert template.SerializeToString(deterministic=True) == raw  # written canonically
    # The .json twin is the same message.
    assert json_format.MessageToJson(template, sort_keys=True, ensure_ascii=False) + "\n" == (
        FLYTE2 / f"{stem}_template.json"
    ).read_text(encoding="utf-8")
    # The interface is a repeated entry in flyteidl2, which the SDK sorts by name (types_serde.py);
    # Inputs keep the declaration order (next test). Variables have no description (flytekit's do).
    assert [v.key for v in template.interface.inputs.variables] == sorted(entry["input_values"])
    assert [v.key for v in template.interface.outputs.variables] == sorted(entry["output_names"])
    assert not any(v.value.description for v in template.interface.inputs.variables)
    secrets = entry["custom_secrets"]
    if secrets is not None:
        assert dict(template.custom["secrets"]) == secrets


@pytest.mark.parametrize("stem", STEMS)
def test_inputs_parse_as_flyteidl2(stem: str) -> None:
    raw = _bytes(ENTRIES[stem]["inputs"])
    inputs = v2_common_pb2.Inputs.FromString(raw)
    assert [literal.name for literal in inputs.literals] == list(ENTRIES[stem]["input_values"])
    assert not inputs.context
    assert not unknown_fields(inputs)
    assert inputs.SerializeToString(deterministic=True) == raw


# -- the same bytes as flyteidl v1 -----------------------------------------------------------------


def test_flyteidl2_is_a_wire_superset_of_v1() -> None:
    unknown, v1_only, renamed, conflicts = wire_diff(
        v2_connector_pb2.CreateTaskRequest.DESCRIPTOR, agent_pb2.CreateTaskRequest.DESCRIPTOR
    )
    assert conflicts == set()  # no field number means another type in the other version
    assert unknown == UNKNOWN_TO_V1
    # The executor never sends what v1 alone has: propeller's per-node overrides.
    assert v1_only == {"flyteidl.admin.TaskExecutionMetadata.overrides=10"}
    assert renamed == RENAMED_IN_V2


@pytest.mark.parametrize("stem", STEMS)
def test_template_reads_the_same_as_v1(stem: str) -> None:
    new, old = v2_template(stem), v1_template(stem)
    # What the SDK sets here is all known to v1: none of the fields above is in these templates.
    assert unknown_fields(old) == set()
    assert (old.type, old.task_type_version) == (new.type, new.task_type_version)
    assert old.id.SerializeToString(deterministic=True) == new.id.SerializeToString(deterministic=True)
    assert json_format.MessageToDict(old.custom) == json_format.MessageToDict(new.custom)
    assert old.HasField("custom") == new.HasField("custom")
    assert old.sql.statement == new.sql.statement
    assert old.metadata.timeout == new.metadata.timeout
    for v1_vars, v2_vars in (
        (old.interface.inputs.variables, new.interface.inputs.variables),
        (old.interface.outputs.variables, new.interface.outputs.variables),
    ):
        assert sorted(v1_vars) == sorted(v.key for v in v2_vars)
        for entry in v2_vars:
            assert v1_vars[entry.key].type.SerializeToString(deterministic=True) == entry.value.type.SerializeToString(
                deterministic=True
            )


def _expected_values(stem: str) -> dict[str, Any]:
    values: dict[str, Any] = ENTRIES[stem]["input_values"]
    return values


@pytest.mark.parametrize("stem", STEMS)
def test_inputs_read_as_a_v1_literal_map(stem: str) -> None:
    new, old = v2_inputs(stem), v1_inputs(stem)
    assert unknown_fields(old) == set()
    assert sorted(old.literals) == sorted(literal.name for literal in new.literals)
    for named in new.literals:
        assert old.literals[named.name].SerializeToString(deterministic=True) == named.value.SerializeToString(
            deterministic=True
        )
    # The service's own literal reader gets back the values the SDK was given.
    types = {k: v.type for k, v in v1_template(stem).interface.inputs.variables.items()}
    assert literal_map_to_python(old, types) == _expected_values(stem)


def test_only_the_connection_is_lost_when_a_v1_server_reads_a_flyte2_request() -> None:
    """The executor's CreateTaskRequest, as a flyteidl v1 server would parse it."""
    stem = "fixture_job"
    template = v2_template(stem)
    request = v2_connector_pb2.CreateTaskRequest(
        inputs=v2_inputs(stem),
        template=template,
        output_prefix="s3://bucket/prefix",
        connection=v2_security_pb2.Connection(
            task_type=template.type,
            secrets={key: "value" for key in template.custom["secrets"]},
        ),
    )
    old = agent_pb2.CreateTaskRequest.FromString(request.SerializeToString())
    assert unknown_fields(old) == {"#5"}  # connection; flyteidl 1.16's CreateTaskRequest has no field 5
    assert old.template == v1_template(stem)
    assert old.inputs == v1_inputs(stem)
    assert old.output_prefix == "s3://bucket/prefix"


def test_the_sdk_puts_connector_secrets_in_custom_secrets() -> None:
    """custom["secrets"] maps the connector's keyword argument to a secret or env-var name."""
    assert ENTRIES["bigquery"]["custom_secrets"] == {"google_application_credentials": "gcp-credentials"}
    assert ENTRIES["snowflake"]["custom_secrets"] == {
        "snowflake_private_key": "SNOWFLAKE_PRIVATE_KEY",
        "snowflake_private_key_passphrase": "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
    }
    local = ENTRIES["fixture_job"]["sdk_local_run"]
    assert local["create_kwargs"] == local["get_kwargs"] == ["api_token"]
    assert "configs" not in v2_template("fixture_job").custom
    assert dict(v2_template("fixture_job_configs").custom["configs"]) == {
        "region": "eu-west-1",
        "endpoint": "http://placeholder.invalid/jobs",
    }


# -- today's v1 service runs them ------------------------------------------------------------------


async def execute(
    svc: Running, template: tasks_pb2.TaskTemplate, inputs: literals_pb2.LiteralMap
) -> agent_pb2.Resource:
    responses = [r async for r in svc.sync_stub.ExecuteTaskSync(iter(sync_requests(template, inputs)), timeout=10)]
    assert len(responses) == 1
    return responses[0].header.resource


async def test_echo_template_runs_on_the_v1_service(svc: Running) -> None:
    inputs = v1_inputs("echo")
    resource = await execute(svc, v1_template("echo"), inputs)
    assert resource.phase == Phase.SUCCEEDED, resource.message
    assert resource.outputs == inputs


@pytest.mark.parametrize("stem", ["webhook_get", "webhook_post"])
async def test_webhook_template_sends_what_flytekits_does(server: HttpTestServer, stem: str) -> None:
    """The Flyte 2 webhook template makes the v1 service send the request flytekit's own template makes."""
    answer = Answer(json={"ok": True})
    sent = []
    async with run_service(
        ("connectors.webhook:WebhookConnector",),
        entry_points=False,
        plugins={"webhook": {"allowed_hosts": ["127.0.0.1"], "allowed_schemes": ["http"]}},
    ) as hook:
        for template_bytes, inputs_bytes in (
            (_bytes(f"{stem}_template.pb"), _bytes(f"{stem}_inputs.pb")),
            (
                (FIXTURES / "flytekit" / f"{stem}_template.pb").read_bytes(),
                (FIXTURES / "flytekit" / f"{stem}_inputs.pb").read_bytes(),
            ),
        ):
            template = tasks_pb2.TaskTemplate.FromString(template_bytes)
            url = template.custom["url"]
            assert isinstance(url, str) and url.startswith(PLACEHOLDER)
            template.custom["url"] = url.replace(PLACEHOLDER, server.base)
            server.route(ENTRIES[stem]["expected"]["path"], answer)
            resource = await execute(hook, template, literals_pb2.LiteralMap.FromString(inputs_bytes))
            assert resource.phase == Phase.SUCCEEDED, resource.message
            assert sorted(resource.outputs.literals) == ["info"]
            (request,) = server.requests
            server.requests.clear()
            sent.append(
                (request.method, request.path, request.query, request.body, request.headers.get("authorization"))
            )
    assert sent[0] == sent[1]
    assert sent[0][:2] == (ENTRIES[stem]["expected"]["method"], ENTRIES[stem]["expected"]["path"])


async def test_file_sensor_template_runs_on_the_v1_service(svc: Running, tmp_path: Path) -> None:
    target = tmp_path / "ready.csv"
    inputs = v1_inputs("file_sensor")
    assert inputs.literals["path"].scalar.primitive.string_value == "/tmp/placeholder"
    inputs.literals["path"].scalar.primitive.string_value = str(target)
    meta = await create_task(svc, v1_template("file_sensor"), inputs)
    assert (await get_task(svc, meta, "sensor")).phase == Phase.RUNNING
    target.write_text("a,b\n")
    done = await get_task(svc, meta, "sensor")
    assert done.phase == Phase.SUCCEEDED, done.message


async def test_datetime_sensor_with_config_runs_on_the_v1_service(svc: Running) -> None:
    assert json_format.MessageToDict(v1_template("datetime_sensor_config").custom)["sensor_config"] == {
        "target_time": "2024-01-01T00:00:00Z"
    }
    assert datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC) < datetime.datetime.now(datetime.UTC)
    meta = await create_task(svc, v1_template("datetime_sensor_config"), v1_inputs("datetime_sensor_config"))
    done = await get_task(svc, meta, "sensor")
    assert done.phase == Phase.SUCCEEDED, done.message
