"""``boto``, ``sagemaker-endpoint`` and ``emr_serverless`` over gRPC, against moto's server on loopback.

Templates and inputs are what flytekitplugins-awssagemaker and -awsemrserverless 1.16.31
serialize (``tests/fixtures/make_aws_fixtures.py``). moto runs as a real process
(``aws_moto.py``) and records every request it receives. moto's endpoints are InService at
once, its job runs SUCCESS at once, and it accepts duplicates silently: the statuses it never
shows, "already exists" and AWS's error codes are tested in ``test_aws_states.py`` with real
response shapes (botocore parsing real HTTP answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import msgpack
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2
from google.protobuf import struct_pb2

from connector_service import ConnectorRegistry, RegistryError, TaskCategory
from connector_service._envelope import open_meta
from tests.connectors.aws_moto import ACCOUNT, CREDENTIALS, REGION, Moto
from tests.emulator import Outage
from tests.utils import (
    FIXTURES,
    Remote,
    Running,
    Stubs,
    create_task,
    delete_task,
    get_task,
    run_service,
    serve_process,
    sync_requests,
    task_execution_metadata,
)

Phase = execution_pb2.TaskExecution
AWS = FIXTURES / "aws"
CONNECTORS = (
    "connectors.aws:BotoConnector",
    "connectors.aws:SageMakerEndpointConnector",
    "connectors.aws:EmrServerlessConnector",
)
TERMINAL = {Phase.SUCCEEDED, Phase.FAILED, Phase.RETRYABLE_FAILED, Phase.ABORTED}
ROLE = f"arn:aws:iam::{ACCOUNT}:role/flyte-sagemaker"
_COUNTER = iter(range(1_000_000))


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with Moto(tmp_path_factory.mktemp("moto")) as emulator:
        yield emulator


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """moto's dummy credentials as the default chain's first link; a developer's own AWS set-up is never read."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    return CREDENTIALS


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_COUNTER)}-{time.monotonic_ns() % 10**9}"


def template(stem: str) -> tasks_pb2.TaskTemplate:
    return tasks_pb2.TaskTemplate.FromString((AWS / f"{stem}_template.pb").read_bytes())


def with_custom(stem: str, **changes: Any) -> tasks_pb2.TaskTemplate:
    """A fixture template with some of ``custom``'s keys changed (as another BotoTask would serialize)."""
    task = template(stem)
    custom = json.loads(json.dumps(dict(task.custom.items()), default=_plain))
    custom.update(changes)
    task.custom.Clear()
    task.custom.update(custom)
    return task


def _plain(value: Any) -> Any:
    if isinstance(value, struct_pb2.Struct):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, struct_pb2.ListValue):
        return [_plain(v) for v in value]
    return value


def aws_settings(moto_url: str, **extra: Any) -> dict[str, Any]:
    endpoints = {"sagemaker": moto_url, "emr-serverless": moto_url, "sts": moto_url}
    return {"teams": {"default": {}}, "endpoint_urls": endpoints, "request_timeout": 5, **extra}


@contextlib.asynccontextmanager
async def aws_service(moto_url: str, allowed: tuple[str, ...] = (), **extra: Any) -> AsyncIterator[Running]:
    plugins = {
        "boto": aws_settings(moto_url, allowed_methods=list(allowed), **extra),
        "sagemaker": aws_settings(moto_url, **extra),
        "emr_serverless": aws_settings(moto_url, **extra),
    }
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins) as svc:
        yield svc


async def boto(svc: Stubs, task: tasks_pb2.TaskTemplate, inputs: dict[str, Any], timeout: float = 10) -> Any:
    from connector_service._literals import python_to_literal_map, variable_types

    literals = python_to_literal_map(inputs, variable_types(task.interface.inputs))
    responses = [r async for r in svc.sync_stub.ExecuteTaskSync(iter(sync_requests(task, literals)), timeout=timeout)]
    assert len(responses) == 1
    return responses[0].header.resource


def result_of(resource: agent_pb2.Resource) -> dict[str, Any]:
    literal = resource.outputs.literals["result"]
    assert literal.scalar.binary.tag == "msgpack"
    return dict(msgpack.unpackb(literal.scalar.binary.value))


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def poll(svc: Stubs, meta: bytes, task_type: str, seconds: float = 30) -> agent_pb2.Resource:
    deadline = time.monotonic() + seconds
    while True:
        resource = await get_task(svc, meta, task_type)
        if resource.phase in TERMINAL or time.monotonic() > deadline:
            return resource
        await asyncio.sleep(0.05)


def endpoint_config(moto: Moto) -> str:
    """A model and an endpoint config in moto (what the workflow's boto tasks make first)."""
    sm = moto.client("sagemaker")
    model = unique("model")
    sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img:1"})
    name = unique("epc")
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "v1", "ModelName": model, "InitialInstanceCount": 1, "InstanceType": "ml.m4.xlarge"}
        ],
    )
    return name


# --------------------------------------------------------------------------- boto


async def test_boto_create_model_fills_placeholders_and_answers_the_arn_and_token(moto: Moto, aws_env: Any) -> None:
    async with aws_service(moto.url, ("sagemaker:create_model",)) as svc:
        name = unique("xgb")
        resource = await boto(svc, template("boto_create_model"), {"model_name": name, "model_path": "s3://m/x.tgz"})
    assert resource.phase == Phase.SUCCEEDED, resource.message
    token = resource.outputs.literals["idempotence_token"].scalar.primitive.string_value
    assert len(token) == 16 and int(token, 16) >= 0
    arn = result_of(resource)["ModelArn"]
    assert arn == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{name}-{token}"
    model = moto.client("sagemaker").describe_model(ModelName=f"{name}-{token}")
    assert model["PrimaryContainer"]["Image"] == "123456789012.dkr.ecr.us-east-2.amazonaws.com/xgboost:1"
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://m/x.tgz"


async def test_boto_the_same_request_twice_has_the_same_token(moto: Moto, aws_env: Any) -> None:
    inputs = {"model_name": unique("same"), "model_path": "s3://m/x.tgz"}
    async with aws_service(moto.url, ("sagemaker:create_model",)) as svc:
        first = await boto(svc, template("boto_create_model"), inputs)
        second = await boto(svc, template("boto_create_model"), inputs)
    assert result_of(first) == result_of(second)
    tokens = {r.outputs.literals["idempotence_token"].scalar.primitive.string_value for r in (first, second)}
    assert len(tokens) == 1


async def test_boto_answers_with_datetimes_become_iso_strings(moto: Moto, aws_env: Any) -> None:
    name = unique("described")
    moto.client("sagemaker").create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "i:1"})
    task = with_custom("boto_delete_model", method="describe_model", region=REGION)
    async with aws_service(moto.url, ("sagemaker:describe_model",)) as svc:
        resource = await boto(svc, task, {"model_name": name})
    assert resource.phase == Phase.SUCCEEDED, resource.message
    result = result_of(resource)
    assert result["ModelName"] == name
    assert isinstance(result["CreationTime"], str) and result["CreationTime"][:2] == "20"
    assert resource.outputs.literals["idempotence_token"].scalar.primitive.string_value == ""


async def test_boto_a_method_outside_the_allow_list_is_refused_and_nothing_reaches_aws(
    moto: Moto, aws_env: Any
) -> None:
    before = len(moto.requests())
    async with aws_service(moto.url, ("sagemaker:describe_model",)) as svc:
        error = await rpc_error(boto(svc, template("boto_create_model"), {"model_name": "x", "model_path": "s3://m"}))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "sagemaker:create_model is not allowed" in (error.details() or "")
        assert "plugins.boto.allowed_methods" in (error.details() or "")
        nothing = await rpc_error(boto(svc, with_custom("boto_delete_model", region=REGION), {"model_name": "x"}))
        assert "sagemaker:delete_model is not allowed" in (nothing.details() or "")
    async with aws_service(moto.url) as svc:  # the default: nothing allowed
        error = await rpc_error(boto(svc, template("boto_create_model"), {"model_name": "x", "model_path": "s3://m"}))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(moto.requests()) == before


async def test_boto_a_refused_call_fails_with_awss_message(moto: Moto, aws_env: Any) -> None:
    task = with_custom("boto_delete_model", region=REGION)
    async with aws_service(moto.url, ("sagemaker:delete_model",)) as svc:
        resource = await boto(svc, task, {"model_name": unique("missing")})
    assert resource.phase == Phase.FAILED
    assert "AWS refused sagemaker.delete_model" in resource.message and "Could not find model" in resource.message


async def test_boto_bad_templates_are_invalid_argument_naming_the_field(moto: Moto, aws_env: Any) -> None:
    cases = [
        (with_custom("boto_delete_model", region=REGION, config="x"), "custom.config must be an object"),
        (with_custom("boto_delete_model", region="mars-1"), "custom.region 'mars-1' is not an AWS region"),
        (with_custom("boto_delete_model", region=None), "custom.region is not set"),
        (with_custom("boto_delete_model", region=REGION, config={"ModelName": "{inputs.nope}"}), "{inputs.nope}"),
        (with_custom("boto_delete_model", region=REGION, service="Bad Service"), "custom.service"),
    ]
    async with aws_service(moto.url, ("sagemaker:delete_model",)) as svc:
        for task, text in cases:
            error = await rpc_error(boto(svc, task, {"model_name": "m"}))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, text
            assert text in (error.details() or ""), error.details()
        bad = with_custom("boto_delete_model", region=REGION, config={"ModelName": 5})
        error = await rpc_error(boto(svc, bad, {"model_name": "m"}))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "ModelName" in (error.details() or "")


async def test_boto_with_aws_gone_is_unavailable(moto: Moto, aws_env: Any) -> None:
    outage = Outage(moto.port)
    async with aws_service(outage.url, ("sagemaker:delete_model",), request_timeout=2) as svc:
        error = await rpc_error(boto(svc, with_custom("boto_delete_model", region=REGION), {"model_name": "m"}))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "sagemaker in us-east-2 at http://127.0.0.1" in (error.details() or "")


# --------------------------------------------------------------------------- sagemaker-endpoint


def meta_fields(meta: bytes) -> dict[str, Any]:
    return dict(json.loads(open_meta(meta).meta))


async def test_an_endpoint_is_created_and_its_arn_is_the_result(moto: Moto, aws_env: Any) -> None:
    config, name = endpoint_config(moto), unique("ep")
    inputs = {"endpoint_name": name, "endpoint_config_name": config}
    async with aws_service(moto.url) as svc:
        meta = await create_task(
            svc, template("sagemaker_endpoint"), inputs, task_execution_metadata=task_execution_metadata()
        )
        assert meta_fields(meta) == {"endpoint_name": name, "region": REGION, "team": "default", "refused": ""}
        resource = await poll(svc, meta, "sagemaker-endpoint")
    assert resource.phase == Phase.SUCCEEDED, resource.message
    assert result_of(resource) == {"EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}"}
    assert resource.log_links[0].uri.endswith(f"#/endpoints/{name}")
    assert "is in service" in resource.message


async def test_an_endpoint_created_again_follows_the_same_endpoint(moto: Moto, aws_env: Any) -> None:
    config, name = endpoint_config(moto), unique("ep")
    inputs = {"endpoint_name": name, "endpoint_config_name": config}
    async with aws_service(moto.url) as svc:
        first = await create_task(svc, template("sagemaker_endpoint"), inputs)
        second = await create_task(svc, template("sagemaker_endpoint"), inputs)
        assert meta_fields(first) == meta_fields(second)
        resource = await poll(svc, second, "sagemaker-endpoint")
    assert resource.phase == Phase.SUCCEEDED, resource.message


async def test_a_refused_endpoint_fails_with_sagemakers_message(moto: Moto, aws_env: Any) -> None:
    inputs = {"endpoint_name": unique("ep"), "endpoint_config_name": unique("no-such-config")}
    async with aws_service(moto.url) as svc:
        meta = await create_task(svc, template("sagemaker_endpoint"), inputs)
        resource = await get_task(svc, meta, "sagemaker-endpoint")
        await delete_task(svc, meta, "sagemaker-endpoint")  # there is nothing to delete: fine
    assert resource.phase == Phase.FAILED
    assert "Could not find endpoint configuration" in resource.message


async def test_delete_deletes_the_endpoint_and_is_idempotent(moto: Moto, aws_env: Any) -> None:
    config, name = endpoint_config(moto), unique("ep")
    async with aws_service(moto.url) as svc:
        meta = await create_task(
            svc, template("sagemaker_endpoint"), {"endpoint_name": name, "endpoint_config_name": config}
        )
        await delete_task(svc, meta, "sagemaker-endpoint")
        names = [e["EndpointName"] for e in moto.client("sagemaker").list_endpoints()["Endpoints"]]
        assert name not in names
        await delete_task(svc, meta, "sagemaker-endpoint")
        resource = await get_task(svc, meta, "sagemaker-endpoint")
    assert resource.phase == Phase.FAILED and "does not exist" in resource.message


async def test_aws_gone_mid_task_is_unavailable_then_the_task_resumes(moto: Moto, aws_env: Any) -> None:
    outage = Outage(moto.port)
    await outage.up()
    config, name = endpoint_config(moto), unique("ep")
    try:
        async with aws_service(outage.url, request_timeout=2) as svc:
            meta = await create_task(
                svc, template("sagemaker_endpoint"), {"endpoint_name": name, "endpoint_config_name": config}
            )
            await outage.down()
            error = await rpc_error(get_task(svc, meta, "sagemaker-endpoint"))
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert "sagemaker in us-east-2" in (error.details() or "")
            await outage.up()
            resource = await poll(svc, meta, "sagemaker-endpoint")
            assert resource.phase == Phase.SUCCEEDED, resource.message
    finally:
        await outage.down()


async def test_a_team_without_an_entry_is_refused(moto: Moto, aws_env: Any) -> None:
    plugins = {"sagemaker": {**aws_settings(moto.url), "teams": {"ml/prod": {}}}}
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins) as svc:
        inputs = {"endpoint_name": "ep", "endpoint_config_name": "c"}
        other = task_execution_metadata(project="other", domain="prod")
        error = await rpc_error(create_task(svc, template("sagemaker_endpoint"), inputs, task_execution_metadata=other))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "plugins.sagemaker.teams has no entry for project/domain other/prod" in (error.details() or "")


async def test_a_teams_role_is_assumed_for_its_calls(moto: Moto, aws_env: Any) -> None:
    team_role = f"arn:aws:iam::{ACCOUNT}:role/team-ml"
    plugins = {"sagemaker": {**aws_settings(moto.url), "teams": {"ml": {"role_arn": team_role}}}}
    config, name = endpoint_config(moto), unique("ep")
    before = len(moto.requests())
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins) as svc:
        meta = await create_task(
            svc,
            template("sagemaker_endpoint"),
            {"endpoint_name": name, "endpoint_config_name": config},
            task_execution_metadata=task_execution_metadata(project="ml"),
        )
        resource = await poll(svc, meta, "sagemaker-endpoint")
    assert resource.phase == Phase.SUCCEEDED, resource.message
    made = moto.requests()[before:]
    assume = [r for r in made if "AssumeRole" in (r.get("body") or "") and "team-ml" in (r.get("body") or "")]
    assert len(assume) == 1  # once, then the credentials are reused
    signed = [r for r in made if r["headers"].get("X-Amz-Target", "").startswith("SageMaker.")]
    assert signed and all("testing" not in r["headers"]["Authorization"] for r in signed)


# --------------------------------------------------------------------------- emr_serverless


EMR_ROLE = f"arn:aws:iam::{ACCOUNT}:role/flyte-emr-job"


def application(moto: Moto, state: str = "STARTED", kind: str = "SPARK") -> tuple[str, str]:
    """An application in moto (its id and name), STARTED or STOPPED."""
    emr = moto.client("emr-serverless")
    name = unique("app")
    app_id = str(emr.create_application(name=name, releaseLabel="emr-7.0.0", type=kind)["applicationId"])
    if state == "STOPPED":
        emr.stop_application(applicationId=app_id)
    return app_id, name


def emr_calls(moto: Moto, since: int, operation: str) -> list[dict[str, Any]]:
    """The EMR Serverless requests moto received since ``since`` for one REST operation."""
    method, path = {
        "StartJobRun": ("POST", r"/applications/[^/]+/jobruns$"),
        "StartApplication": ("POST", r"/applications/[^/]+/start$"),
        "CancelJobRun": ("DELETE", r"/applications/[^/]+/jobruns/[^/]+$"),
    }[operation]
    return [r for r in moto.requests()[since:] if r["method"] == method and re.search(path, r["url"].split("?")[0])]


async def test_a_spark_job_starts_its_stopped_application_and_succeeds(moto: Moto, aws_env: Any) -> None:
    app_id, _ = application(moto, "STOPPED")
    before = len(moto.requests())
    task = with_custom("emr_spark", application_id=app_id)
    tem = task_execution_metadata(name="emr-run-1")
    async with aws_service(moto.url) as svc:
        meta = await create_task(svc, task, task_execution_metadata=tem)
        fields = meta_fields(meta)
        assert fields["job_run_id"] and fields["plan"] == "" and fields["application_id"] == app_id
        resource = await poll(svc, meta, "emr_serverless")
    assert resource.phase == Phase.SUCCEEDED, resource.message
    assert resource.log_links[0].uri.endswith(f"#/serverless/{app_id}/jobs/{fields['job_run_id']}")
    assert len(emr_calls(moto, before, "StartApplication")) == 1
    (submitted,) = emr_calls(moto, before, "StartJobRun")
    body = json.loads(submitted["body"])
    from connectors._scoped import execution_token

    assert body["clientToken"] == fields["client_token"] == execution_token(tem, prefix="flyte", length=40)
    assert body["executionTimeoutMinutes"] == 30 and body["executionRoleArn"] == EMR_ROLE
    spark = body["jobDriver"]["sparkSubmit"]
    assert spark["entryPoint"] == "s3://scripts/etl.py" and spark["entryPointArguments"] == ["--day", "2026-01-01"]
    assert spark["sparkSubmitParameters"].startswith("--conf spark.executor.memory=4g --conf ")
    assert "spark.emr-serverless.driverEnv.FLYTE_INTERNAL_EXECUTION_ID=emr-run-1" in spark["sparkSubmitParameters"]
    assert body["tags"] == {"Application": "flyte", "ManagedBy": "flyte-connector", "team": "ml"}


async def test_a_hive_job_finds_its_application_by_name(moto: Moto, aws_env: Any) -> None:
    app_id, name = application(moto, kind="HIVE")
    async with aws_service(moto.url) as svc:
        meta = await create_task(svc, with_custom("emr_hive", application_id=name))
        assert meta_fields(meta)["application_id"] == app_id
        resource = await poll(svc, meta, "emr_serverless")
    assert resource.phase == Phase.SUCCEEDED, resource.message


async def test_a_retried_create_sends_the_same_client_token(moto: Moto, aws_env: Any) -> None:
    # AWS returns the job run the first call started for the same clientToken; moto makes a
    # second one, so what is checked here is what AWS's idempotency rests on: the token.
    app_id, _ = application(moto)
    before = len(moto.requests())
    task, tem = with_custom("emr_spark", application_id=app_id), task_execution_metadata(name="emr-retried")
    async with aws_service(moto.url) as svc:
        first = await create_task(svc, task, task_execution_metadata=tem)
        second = await create_task(svc, task, task_execution_metadata=tem)
        other = await create_task(
            svc, task, task_execution_metadata=task_execution_metadata(name="emr-retried", retry=1)
        )
    tokens = [json.loads(r["body"])["clientToken"] for r in emr_calls(moto, before, "StartJobRun")]
    assert len(tokens) == 3 and tokens[0] == tokens[1] != tokens[2]
    assert meta_fields(first)["client_token"] == meta_fields(second)["client_token"] == tokens[0]
    assert meta_fields(other)["client_token"] == tokens[2]


async def test_delete_cancels_the_job_run_and_is_idempotent(moto: Moto, aws_env: Any) -> None:
    app_id, _ = application(moto)
    async with aws_service(moto.url) as svc:
        meta = await create_task(svc, with_custom("emr_spark", application_id=app_id))
        before = len(moto.requests())
        await delete_task(svc, meta, "emr_serverless")
        await delete_task(svc, meta, "emr_serverless")
        resource = await get_task(svc, meta, "emr_serverless")
    assert len(emr_calls(moto, before, "CancelJobRun")) == 2
    assert not emr_calls(moto, before, "StartJobRun")  # a delete never submits
    assert resource.phase == Phase.FAILED and "was cancelled" in resource.message


async def test_a_missing_or_terminated_application_fails_the_task(moto: Moto, aws_env: Any) -> None:
    app_id, _ = application(moto, "STOPPED")
    moto.client("emr-serverless").delete_application(applicationId=app_id)
    async with aws_service(moto.url) as svc:
        meta = await create_task(svc, with_custom("emr_hive", application_id=unique("nobody")))
        missing = await get_task(svc, meta, "emr_serverless")
        meta = await create_task(svc, with_custom("emr_spark", application_id=app_id))
        gone = await get_task(svc, meta, "emr_serverless")
    assert missing.phase == Phase.FAILED and "no active EMR Serverless application is named" in missing.message
    assert gone.phase == Phase.FAILED and "terminated" in gone.message


async def test_bad_emr_templates_are_invalid_argument_naming_the_field(moto: Moto, aws_env: Any) -> None:
    cases = [
        (with_custom("emr_spark", spark_job_driver=None), "custom.spark_job_driver (or hive_job_driver) is required"),
        (with_custom("emr_spark", execution_role_arn="admin"), "custom.execution_role_arn"),
        (with_custom("emr_spark", application_id=None), "custom.application_id (or application_name) is required"),
        (with_custom("emr_spark", execution_timeout_minutes=0), "custom.execution_timeout_minutes"),
        (with_custom("emr_spark", application_type="PRESTO"), "custom.application_type"),
    ]
    before = len(moto.requests())
    async with aws_service(moto.url) as svc:
        for task, text in cases:
            error = await rpc_error(create_task(svc, task))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, text
            assert text in (error.details() or ""), error.details()
    assert len(moto.requests()) == before


async def test_emr_with_aws_gone_is_unavailable_then_the_task_resumes(moto: Moto, aws_env: Any) -> None:
    app_id, _ = application(moto)
    outage = Outage(moto.port)
    await outage.up()
    try:
        async with aws_service(outage.url, request_timeout=2) as svc:
            meta = await create_task(svc, with_custom("emr_spark", application_id=app_id))
            await outage.down()
            error = await rpc_error(get_task(svc, meta, "emr_serverless"))
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            await outage.up()
            resource = await poll(svc, meta, "emr_serverless")
            assert resource.phase == Phase.SUCCEEDED, resource.message
    finally:
        await outage.down()


# --------------------------------------------------------------------------- the daemon as operators run it


async def test_many_endpoints_and_boto_calls_at_once_on_the_daemons_own_loop(moto: Moto, tmp_path: Path) -> None:
    """The daemon in its own process (uvloop): 20 endpoints, 20 boto calls and 20 EMR job runs at once."""
    plugins = {
        "boto": aws_settings(moto.url, allowed_methods=["sagemaker:create_model"]),
        "sagemaker": aws_settings(moto.url),
        "emr_serverless": aws_settings(moto.url),
    }
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"plugins": plugins}))
    args = [arg for name in CONNECTORS for arg in ("--connector", name)]
    args += ["--no-entry-points", "--log-level", "error", "--no-access-log", "--config-file", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **CREDENTIALS}
    configs = [endpoint_config(moto) for _ in range(20)]
    app_id, _ = application(moto, "STOPPED")

    async def endpoint(svc: Stubs, i: int) -> str:
        name = unique(f"load{i}")
        meta = await create_task(
            svc, template("sagemaker_endpoint"), {"endpoint_name": name, "endpoint_config_name": configs[i]}
        )
        done = await poll(svc, meta, "sagemaker-endpoint")
        assert done.phase == Phase.SUCCEEDED, done.message
        return str(result_of(done)["EndpointArn"])

    async def model(svc: Stubs, i: int) -> str:
        inputs = {"model_name": unique(f"m{i}"), "model_path": "s3://m/x.tgz"}
        done = await boto(svc, template("boto_create_model"), inputs)
        assert done.phase == Phase.SUCCEEDED, done.message
        return str(result_of(done)["ModelArn"])

    async def job(svc: Stubs, i: int) -> str:
        tem = task_execution_metadata(name=f"load-{i}")
        meta = await create_task(svc, with_custom("emr_spark", application_id=app_id), task_execution_metadata=tem)
        done = await poll(svc, meta, "emr_serverless")
        assert done.phase == Phase.SUCCEEDED, done.message
        return str(meta_fields(meta)["job_run_id"])

    async with serve_process(*args, env=env) as served:
        async with grpc.aio.insecure_channel(served.address) as channel:
            svc = Remote(channel)
            ids = await asyncio.gather(
                *(endpoint(svc, i) for i in range(20)),
                *(model(svc, i) for i in range(20)),
                *(job(svc, i) for i in range(20)),
            )
    assert len(set(ids)) == 60


# --------------------------------------------------------------------------- settings and registration


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"allowed_methods": ["create_model"]}, "is not 'service:method'"),
        ({"teams": {"default": {"role_arn": "team-role"}}}, "is not an IAM role ARN"),
        ({"teams": {"default": {"regions": ["moon"]}}}, "is not an AWS region name"),
        ({"endpoint_urls": {"sagemaker": "localhost:5000"}}, "is not an http(s)://host[:port] URL"),
        ({"aws_secret_access_key": "x"}, "aws_secret_access_key"),
    ],
)
async def test_bad_settings_stop_start_up_naming_the_field(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError) as info:
        async with run_service(CONNECTORS, entry_points=False, plugins={"boto": settings}):
            pass
    assert message in str(info.value)


def test_the_entry_points_register_the_aws_connectors() -> None:
    registry = ConnectorRegistry.build()
    assert registry.lookup(TaskCategory("boto", 0)).is_sync
    assert not registry.lookup(TaskCategory("sagemaker-endpoint", 0)).is_sync
    assert not registry.lookup(TaskCategory("emr_serverless", 0)).is_sync


def test_the_fixture_inputs_are_the_plugins() -> None:
    inputs = literals_pb2.LiteralMap.FromString((AWS / "sagemaker_endpoint_inputs.pb").read_bytes())
    assert set(inputs.literals) == {"endpoint_name", "endpoint_config_name"}


def test_the_result_literal_is_the_one_flytekit_writes() -> None:
    from connectors.aws._values import dict_literal

    flytekit = literals_pb2.Literal.FromString((AWS / "boto_result_literal.pb").read_bytes())
    result = {"ModelArn": "arn:aws:sagemaker:us-east-2:123456789012:model/xgb-0123456789abcdef", "Count": 3}
    assert dict_literal(result) == flytekit


async def test_no_credentials_is_failed_precondition_and_nothing_is_sent(
    moto: Moto, aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    before = len(moto.requests())
    async with aws_service(moto.url) as svc:
        error = await rpc_error(
            create_task(svc, template("sagemaker_endpoint"), {"endpoint_name": "ep", "endpoint_config_name": "c"})
        )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert "no usable AWS credentials" in (error.details() or "") and "default AWS credential chain" in (
        error.details() or ""
    )
    assert len(moto.requests()) == before


async def test_a_pickled_flytekit_meta_is_refused(moto: Moto, aws_env: Any) -> None:
    # flytekit's SageMaker connector cloudpickles its meta (config and inputs); it is never unpickled here.
    pickled = b"\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94."
    async with aws_service(moto.url) as svc:
        error = await rpc_error(get_task(svc, pickled, "sagemaker-endpoint"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
