"""Flyte 2's connector services over the wire, called with flyteidl2's own stubs as the executor calls them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

pytest.importorskip("flyteidl2")

from flyteidl.admin import agent_pb2  # noqa: E402
from flyteidl.core import literals_pb2, tasks_pb2  # noqa: E402
from flyteidl2.connector import connector_pb2 as v2  # noqa: E402
from flyteidl2.connector import service_pb2_grpc as v2_grpc  # noqa: E402
from flyteidl2.core import execution_pb2 as v2_execution  # noqa: E402
from flyteidl2.core import literals_pb2 as v2_literals  # noqa: E402
from flyteidl2.core import tasks_pb2 as v2_tasks  # noqa: E402
from flyteidl2.task import common_pb2 as v2_common  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402

from connector_service import (  # noqa: E402
    AsyncConnectorBase,
    Connection,
    Phase,
    Resource,
    ResourceMeta,
    SyncConnectorBase,
    get_secret,
)
from connector_service._literals import literal_map_to_python, python_to_literal_map, variable_types  # noqa: E402
from connector_service.servicer_v2 import SERVICE_NAMES_V2  # noqa: E402
from connector_service.testing import task_template  # noqa: E402
from tests.http_server import Answer, HttpTestServer  # noqa: E402
from tests.utils import SAMPLES, Running, create_task, get_task, run_service  # noqa: E402

SUCCEEDED = v2_execution.TaskExecution.SUCCEEDED
THIS = "tests.connector_service.test_servicer_v2"


# -- connectors that read what Flyte 2 sends --------------------------------------------------------


@dataclass
class TokenMeta(ResourceMeta):
    token_length: int
    region: str


class TokenConnector(AsyncConnectorBase):
    """Reads its API token with get_secret() and its region from the connection's configs."""

    name = "Token Connector"

    def __init__(self) -> None:
        super().__init__(metadata_type=TokenMeta, task_type_name="token_job")

    async def create(
        self,
        task_template: Any,
        output_prefix: str,
        inputs: Any = None,
        connection: Connection | None = None,
        **kw: Any,
    ) -> TokenMeta:
        token = get_secret("api_token")
        if token == "fail-loudly":
            raise RuntimeError("the API refused the token")
        region = connection.configs.get("region", "") if connection is not None else ""
        return TokenMeta(token_length=len(token), region=region)

    async def get(self, resource_meta: TokenMeta, **kw: Any) -> Resource:
        token = get_secret("api_token")  # every call carries the connection again
        return Resource(
            phase=Phase.SUCCEEDED,
            outputs={"length": resource_meta.token_length, "same": len(token), "region": resource_meta.region},
        )

    async def delete(self, resource_meta: TokenMeta, **kw: Any) -> None:
        return None


class BigResultConnector(SyncConnectorBase):
    name = "Big Result Connector"

    def __init__(self) -> None:
        super().__init__(task_type_name="big_result")

    async def do(self, task_template: Any, output_prefix: str, inputs: Any = None, **kw: Any) -> Resource:
        return Resource(phase=Phase.SUCCEEDED, outputs={"blob": "x" * 100_000})


CONNECTORS = (SAMPLES, f"{THIS}:TokenConnector", f"{THIS}:BigResultConnector")


# -- the executor's side -----------------------------------------------------------------------------


@dataclass
class V2:
    """flyteidl2 stubs over a running service's channel."""

    running: Running

    @property
    def tasks(self) -> v2_grpc.AsyncConnectorServiceStub:
        return v2_grpc.AsyncConnectorServiceStub(self.running.channel)

    @property
    def metadata(self) -> v2_grpc.ConnectorMetadataServiceStub:
        return v2_grpc.ConnectorMetadataServiceStub(self.running.channel)


def v2_template(template: tasks_pb2.TaskTemplate) -> v2_tasks.TaskTemplate:
    """The v2 TaskTemplate of a v1 one (the same fields on the wire)."""
    return v2_tasks.TaskTemplate.FromString(template.SerializeToString())


def v2_inputs(values: dict[str, Any], template: tasks_pb2.TaskTemplate) -> v2_common.Inputs:
    """Inputs as the executor sends them: name/literal pairs, built here from v2 Literals."""
    lm = python_to_literal_map(values, variable_types(template.interface.inputs))
    return v2_common.Inputs(
        literals=[
            v2_common.NamedLiteral(name=name, value=v2_literals.Literal.FromString(lit.SerializeToString()))
            for name, lit in lm.literals.items()
        ]
    )


def outputs_of(resource: v2.Resource) -> dict[str, Any]:
    """Outputs as the executor reads them (``flyteidl2.task.Outputs``), converted for asserting."""
    pairs = {
        named.name: literals_pb2.Literal.FromString(named.value.SerializeToString())
        for named in resource.outputs.literals
    }
    return literal_map_to_python(literals_pb2.LiteralMap(literals=pairs))


def _category(template: tasks_pb2.TaskTemplate) -> v2.TaskCategory:
    return v2.TaskCategory(name=template.type, version=template.task_type_version)


def _connection(secrets: dict[str, str] | None = None, configs: dict[str, str] | None = None) -> Any:
    from flyteidl2.core import security_pb2

    return security_pb2.Connection(secrets=secrets or {}, configs=configs or {})


async def run_to_end(
    svc: V2,
    template: tasks_pb2.TaskTemplate,
    values: dict[str, Any] | None = None,
    connection: Any = None,
    polls: int = 50,
) -> tuple[bytes, v2.Resource]:
    """CreateTask, then GetTask until a terminal phase, as the executor does; returns (meta, resource)."""
    extra = {"connection": connection} if connection is not None else {}
    created = await svc.tasks.CreateTask(
        v2.CreateTaskRequest(
            template=v2_template(template), inputs=v2_inputs(values or {}, template), output_prefix="s3://b/o", **extra
        ),
        timeout=10,
    )
    for _ in range(polls):
        got = await svc.tasks.GetTask(
            v2.GetTaskRequest(task_category=_category(template), resource_meta=created.resource_meta, **extra),
            timeout=10,
        )
        if got.resource.phase in (SUCCEEDED, v2_execution.TaskExecution.FAILED):
            return created.resource_meta, got.resource
        await asyncio.sleep(0.1)
    raise AssertionError("the task did not finish")


@pytest.fixture
async def svc() -> AsyncIterator[V2]:
    async with run_service(CONNECTORS) as running:
        yield V2(running)


# -- discovery -----------------------------------------------------------------------------------------


async def test_list_connectors_has_every_task_type_and_nothing_v1_only(svc: V2) -> None:
    listed = await svc.metadata.ListConnectors(v2.ListConnectorsRequest(), timeout=5)
    categories = {(c.name, c.version) for connector in listed.connectors for c in connector.supported_task_categories}
    # Sync connectors (echo, webhook) are async task types here: Flyte 2 has no sync path.
    assert {("echo", 0), ("webhook", 0), ("sensor", 0), ("job", 0), ("upper", 2), ("token_job", 0)} <= categories
    from google.protobuf.unknown_fields import UnknownFieldSet

    for connector in listed.connectors:
        # No v1 fields (is_sync, supported_task_types) ride along as unknown fields.
        assert len(UnknownFieldSet(connector)) == 0, connector.name

    got = await svc.metadata.GetConnector(v2.GetConnectorRequest(name="Echo Connector"), timeout=5)
    assert [(c.name, c.version) for c in got.connector.supported_task_categories] == [("echo", 0)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.metadata.GetConnector(v2.GetConnectorRequest(name="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_and_reflection_name_the_v2_services(svc: V2) -> None:
    for name in SERVICE_NAMES_V2:
        response = await svc.running.health_stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(svc.running.channel)
    requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=name) for name in SERVICE_NAMES_V2]
    answers = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=5)]
    assert all(a.HasField("file_descriptor_response") for a in answers), answers


# -- running tasks -------------------------------------------------------------------------------------


async def test_echo_runs_as_an_async_task_and_returns_outputs(svc: V2) -> None:
    from flyteidl.core import types_pb2

    floats = types_pb2.LiteralType(collection_type=types_pb2.LiteralType(simple=types_pb2.SimpleType.FLOAT))
    types = {"a": int, "b": str, "c": floats, "d": dict}
    template = task_template("echo", inputs=types, outputs=types)
    values = {"a": 3, "b": "héllo", "c": [1.5, 2.0], "d": {"k": [1, "x"]}}
    meta, resource = await run_to_end(svc, template, values)
    assert resource.phase == SUCCEEDED, resource.message
    assert outputs_of(resource) == values
    await svc.tasks.DeleteTask(v2.DeleteTaskRequest(task_category=_category(template), resource_meta=meta), timeout=5)


async def test_an_async_connector_is_polled_to_its_outputs(svc: V2) -> None:
    template = task_template("job", inputs={"x": int}, outputs={"y": int}, custom={"seconds": 0.3})
    meta, resource = await run_to_end(svc, template, {"x": 21})
    assert resource.phase == SUCCEEDED
    assert outputs_of(resource) == {"y": 42}
    await svc.tasks.DeleteTask(v2.DeleteTaskRequest(task_category=_category(template), resource_meta=meta), timeout=5)


async def test_flytekits_sensor_template_runs_from_v2(svc: V2, tmp_path: Path) -> None:
    """The FileSensor template and inputs real flytekit made, sent as the v2 executor would."""
    from tests.sensors.test_file_sensor import file_sensor

    target = tmp_path / "arrived.txt"
    template, inputs = file_sensor(str(target))
    request = v2.CreateTaskRequest(
        template=v2_template(template), inputs=v2_common.Inputs.FromString(inputs.SerializeToString())
    )
    created = await svc.tasks.CreateTask(request, timeout=5)
    poll = v2.GetTaskRequest(task_category=_category(template), resource_meta=created.resource_meta)
    assert (await svc.tasks.GetTask(poll, timeout=5)).resource.phase == v2_execution.TaskExecution.RUNNING
    target.write_text("here")
    assert (await svc.tasks.GetTask(poll, timeout=5)).resource.phase == SUCCEEDED


async def test_webhook_runs_from_v2(server: HttpTestServer) -> None:
    server.route("/ping", Answer(json={"ok": True}))
    plugins = {"webhook": {"allowed_hosts": ["127.0.0.1"], "allowed_schemes": ["http"]}}
    async with run_service(CONNECTORS, plugins=plugins) as running:
        template = task_template(
            "webhook", custom={"url": f"{server.base}/ping", "method": "GET"}, outputs={"info": dict}
        )
        _, resource = await run_to_end(V2(running), template)
    assert resource.phase == SUCCEEDED, resource.message
    info = outputs_of(resource)["info"]
    assert info["status_code"] == 200 and info["response_json"] == {"ok": True}
    assert [r.path for r in server.requests] == ["/ping"]  # ran once, at CreateTask; GetTask read the result


async def test_a_result_too_big_for_resource_meta_fails_the_task_saying_so(svc: V2) -> None:
    template = task_template("big_result", outputs={"blob": str})
    meta, resource = await run_to_end(svc, template)
    assert resource.phase == v2_execution.TaskExecution.FAILED
    assert "65,536" in resource.message and "resource_meta" in resource.message
    assert len(meta) < 1024


# -- the connection ------------------------------------------------------------------------------------


async def test_connection_secrets_and_configs_reach_the_connector_and_no_log(
    svc: V2, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    template = task_template("token_job", outputs={"length": int, "same": int, "region": str})
    connection = _connection(secrets={"api_token": "s3cr3t-token-value"}, configs={"region": "eu-west-1"})
    meta, resource = await run_to_end(svc, template, connection=connection)
    assert resource.phase == SUCCEEDED
    assert outputs_of(resource) == {"length": 18, "same": 18, "region": "eu-west-1"}
    assert b"s3cr3t" not in meta
    assert "s3cr3t" not in caplog.text


async def test_without_a_connection_secret_the_service_sources_are_used(
    svc: V2, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Flyte 2's open-source secret manager sends an empty connection today.
    monkeypatch.setenv("_FSEC_API_TOKEN", "from-the-env")
    template = task_template("token_job", outputs={"length": int, "same": int, "region": str})
    _, resource = await run_to_end(svc, template, connection=_connection())
    assert outputs_of(resource) == {"length": 12, "same": 12, "region": ""}


async def test_a_missing_secret_is_failed_precondition_naming_places_not_values(svc: V2) -> None:
    template = task_template("token_job")
    request = v2.CreateTaskRequest(
        template=v2_template(template), connection=_connection(secrets={"other": "hidden-value"})
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.tasks.CreateTask(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details() or ""
    assert "the request's connection" in details and "hidden-value" not in details


async def test_one_calls_connection_is_not_anothers(svc: V2) -> None:
    template = task_template("token_job", outputs={"length": int, "same": int, "region": str})

    async def run(i: int) -> dict[str, Any]:
        _, resource = await run_to_end(svc, template, connection=_connection(secrets={"api_token": "t" * i}))
        return outputs_of(resource)

    results = await asyncio.gather(*(run(i) for i in range(1, 41)))
    assert [r["length"] for r in results] == list(range(1, 41))
    assert all(r["same"] == r["length"] for r in results)


# -- both generations, one registry ------------------------------------------------------------------


async def test_a_task_created_through_one_generation_is_polled_through_the_other(svc: V2) -> None:
    template = task_template("job", inputs={"x": int}, outputs={"y": int})
    meta_v1 = await create_task(svc.running, template, {"x": 5})
    got = await svc.tasks.GetTask(
        v2.GetTaskRequest(task_category=_category(template), resource_meta=meta_v1), timeout=5
    )
    assert outputs_of(got.resource) == {"y": 10}

    meta_v2, _ = await run_to_end(svc, template, {"x": 7})
    resource = await get_task(svc.running, meta_v2, "job")
    assert literal_map_to_python(resource.outputs) == {"y": 14}

    echo = task_template("echo", inputs={"a": int}, outputs={"a": int})
    meta_echo, _ = await run_to_end(svc, echo, {"a": 9})
    assert literal_map_to_python((await get_task(svc.running, meta_echo, "echo")).outputs) == {"a": 9}


async def test_unknown_task_type_and_bad_bytes(svc: V2) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.tasks.CreateTask(v2.CreateTaskRequest(template=v2_template(task_template("nope"))), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope (version 0)" in (err.value.details() or "")
    for meta in (b"\x00FCS\x07garbage", b"\x00FCS\x02\x00not-a-resource\xff\xff", b"not json"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await svc.tasks.GetTask(
                v2.GetTaskRequest(task_category=v2.TaskCategory(name="job"), resource_meta=meta), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (meta, err.value.details())
    # Garbage that is not a message at all.
    call = svc.running.channel.unary_unary(
        "/flyteidl2.connector.AsyncConnectorService/GetTask",
        request_serializer=lambda b: b,
        response_deserializer=v2.GetTaskResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"\xff\xff\xff\xff", timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "GetTaskRequest" in (err.value.details() or "")


async def test_protocols_setting_serves_one_generation_or_both() -> None:
    async with run_service(CONNECTORS, protocols=["v1"]) as running:
        assert running.service.service_names[-1] == "flyteidl.service.AgentMetadataService"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await V2(running).metadata.ListConnectors(v2.ListConnectorsRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    async with run_service(CONNECTORS, protocols=["v2"]) as running:
        assert running.service.service_names == SERVICE_NAMES_V2
        assert (await V2(running).metadata.ListConnectors(v2.ListConnectorsRequest(), timeout=5)).connectors
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_protocols_from_the_command_line_and_env() -> None:
    from connector_service import Settings

    assert Settings.load(["--protocols", "v1,v2"]).protocols == ["v1", "v2"]
    assert Settings.load(["--protocols", "v2"]).protocols == ["v2"]
    assert Settings.load([]).protocols is None
    from connector_service.config import SettingsError

    with pytest.raises(SettingsError):
        Settings.load(["--protocols", "v3"])


def test_a_connector_record_is_exactly_what_flyteidl2_reads() -> None:
    """A Connector as the service sends it parses as flyteidl2 with no unknown fields."""
    from connector_service.servicer_v2 import _connector

    agent = agent_pb2.Agent(name="x", is_sync=True, supported_task_types=["t"])
    agent.supported_task_categories.add(name="t", version=1)
    parsed = v2.Connector.FromString(_connector(agent).SerializeToString())
    assert parsed.name == "x" and [(c.name, c.version) for c in parsed.supported_task_categories] == [("t", 1)]
    assert parsed.SerializeToString() == _connector(agent).SerializeToString()


def test_flyteidl2_is_not_imported_at_start_up() -> None:
    """Serving v2 costs start-up nothing: the handlers speak v1's classes."""
    import subprocess
    import sys

    script = """
import asyncio, sys
from connector_service import ConnectorRegistry, ConnectorService, Settings

async def main():
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0, shutdown_delay=0, protocols=["v1", "v2"])
    service = ConnectorService(settings, ConnectorRegistry.from_settings(settings))
    await service.start()
    print(sorted(name for name in sys.modules if name.split(".")[0] in ("flyteidl2", "buf")))
    await service.stop()

asyncio.run(main())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- templates the real flyte 2.12 SDK serialized (tests/fixtures/flyte2) ---------------------------

FLYTE2 = Path(__file__).resolve().parents[1] / "fixtures" / "flyte2"


def sdk_request(stem: str, **fields: Any) -> v2.CreateTaskRequest:
    """The SDK's own template and inputs, in the request the executor builds around them."""
    return v2.CreateTaskRequest(
        template=v2_tasks.TaskTemplate.FromString((FLYTE2 / f"{stem}_template.pb").read_bytes()),
        inputs=v2_common.Inputs.FromString((FLYTE2 / f"{stem}_inputs.pb").read_bytes()),
        output_prefix="s3://b/o",
        **fields,
    )


def executor_connection(template: v2_tasks.TaskTemplate, secret_values: dict[str, str]) -> Any:
    """What the executor sends: ``connection`` unmarshalled from ``template.custom``, with each
    ``custom["secrets"]`` entry resolved to its value (by the executor's secret manager)."""
    from google.protobuf import json_format

    custom = json_format.MessageToDict(template.custom)
    secrets = {key: secret_values[name] for key, name in custom.get("secrets", {}).items()}
    return _connection(secrets=secrets, configs=custom.get("configs", {}))


@dataclass
class FixtureJobMeta(ResourceMeta):
    job_id: str


class FixtureJobConnector(AsyncConnectorBase):
    """Serves the SDK fixture's ``fixture_job`` (version 1): token from get_secret, endpoint from configs."""

    name = "Fixture Job Connector"

    def __init__(self) -> None:
        super().__init__(metadata_type=FixtureJobMeta, task_type_name="fixture_job", task_type_version=1)

    async def create(
        self,
        task_template: Any,
        output_prefix: str,
        inputs: Any = None,
        connection: Connection | None = None,
        **kw: Any,
    ) -> FixtureJobMeta:
        from connector_service import read_custom, read_inputs

        values = read_inputs(inputs, task_template)
        endpoint = connection.configs.get("endpoint", "") if connection is not None else ""
        command = read_custom(task_template)["job"]["command"]
        return FixtureJobMeta(job_id=f"{command}:{values['label']}:{values['n']}:{get_secret('api_token')}@{endpoint}")

    async def get(self, resource_meta: FixtureJobMeta, **kw: Any) -> Resource:
        return Resource(phase=Phase.SUCCEEDED, outputs={"job_id": resource_meta.job_id})

    async def delete(self, resource_meta: FixtureJobMeta, **kw: Any) -> None:
        return None


async def test_the_sdks_echo_template_runs_from_v2(svc: V2) -> None:
    request = sdk_request("echo")
    created = await svc.tasks.CreateTask(request, timeout=10)
    got = await svc.tasks.GetTask(
        v2.GetTaskRequest(task_category=v2.TaskCategory(name="echo"), resource_meta=created.resource_meta), timeout=5
    )
    assert got.resource.phase == SUCCEEDED, got.resource.message
    sent = {named.name: named.value for named in request.inputs.literals}
    assert {named.name: named.value for named in got.resource.outputs.literals} == sent


async def test_the_sdks_datetime_sensor_template_runs_from_v2(svc: V2) -> None:
    created = await svc.tasks.CreateTask(sdk_request("datetime_sensor_config"), timeout=10)
    got = await svc.tasks.GetTask(
        v2.GetTaskRequest(task_category=v2.TaskCategory(name="sensor"), resource_meta=created.resource_meta), timeout=5
    )
    assert got.resource.phase == SUCCEEDED, got.resource.message


async def test_the_sdks_connector_task_gets_its_secret_and_configs_through_the_connection() -> None:
    async with run_service((*CONNECTORS, f"{THIS}:FixtureJobConnector")) as running:
        svc = V2(running)
        template = v2_tasks.TaskTemplate.FromString((FLYTE2 / "fixture_job_configs_template.pb").read_bytes())
        connection = executor_connection(template, {"FIXTURE_JOB_API_TOKEN": "tok-123"})
        created = await svc.tasks.CreateTask(sdk_request("fixture_job_configs", connection=connection), timeout=10)
        got = await svc.tasks.GetTask(
            v2.GetTaskRequest(
                task_category=v2.TaskCategory(name="fixture_job", version=1),
                resource_meta=created.resource_meta,
                connection=connection,
            ),
            timeout=5,
        )
    assert got.resource.phase == SUCCEEDED, got.resource.message
    (job_id,) = [n.value.scalar.primitive.string_value for n in got.resource.outputs.literals]
    assert job_id.startswith("train:") and job_id.endswith(":tok-123@http://placeholder.invalid/jobs")
