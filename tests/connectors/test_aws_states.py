"""What moto cannot show: every SageMaker and EMR Serverless status, "already exists", AWS's error codes.

Statuses are fed as the APIs' documented answers (``DescribeEndpoint``, ``GetJobRun``). The
error codes, "already exists" and an application that takes its time to start go through the
real stack: the service over gRPC, aiobotocore, and a real HTTP server on loopback
(``tests/http_server.py``) answering exactly as SageMaker (JSON 1.1, ``__type``) and EMR
Serverless (REST-JSON, ``x-amzn-ErrorType``) answer, so botocore parses them as it parses AWS's.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest

from connector_service import Phase
from connectors.aws.states import EMR_STATES, SAGEMAKER_STATUSES, StateMapper
from tests.connectors.aws_moto import ACCOUNT, REGION
from tests.connectors.test_aws import (
    CONNECTORS,
    aws_env,  # noqa: F401
    boto,
    meta_fields,
    result_of,
    rpc_error,
    template,
    with_custom,
)
from tests.http_server import Answer, HttpTestServer, Recorded
from tests.utils import Running, create_task, get_task, run_service, task_execution_metadata

ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ep-fixture"

# DescribeEndpoint's answer (SageMaker API reference), with the fields each status comes with.
DESCRIBED = {
    "EndpointName": "ep-fixture",
    "EndpointArn": ARN,
    "EndpointConfigName": "epc-fixture",
    "ProductionVariants": [
        {
            "VariantName": "variant-1",
            "DeployedImages": [{"SpecifiedImage": "123456789012.dkr.ecr.us-east-2.amazonaws.com/xgboost:1"}],
            "CurrentWeight": 1.0,
            "DesiredWeight": 1.0,
            "CurrentInstanceCount": 1,
            "DesiredInstanceCount": 1,
        }
    ],
    "EndpointStatus": "Creating",
    "CreationTime": 1767225600.123,
    "LastModifiedTime": 1767225660.456,
}
FAILURE = "The primary container for production variant variant-1 did not pass the ping health check."

# GetJobRun's ``jobRun`` (EMR Serverless API reference).
JOB_RUN = {
    "applicationId": "00fixtureapp0001",
    "jobRunId": "00fixturejob0001",
    "name": "etl",
    "arn": f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/00fixtureapp0001/jobruns/00fixturejob0001",
    "createdBy": f"arn:aws:sts::{ACCOUNT}:assumed-role/flyte/connector",
    "createdAt": 1767225600.0,
    "updatedAt": 1767225660.0,
    "executionRole": f"arn:aws:iam::{ACCOUNT}:role/flyte-emr-job",
    "state": "RUNNING",
    "stateDetails": "",
    "releaseLabel": "emr-7.0.0",
    "jobDriver": {"sparkSubmit": {"entryPoint": "s3://scripts/etl.py"}},
    "tags": {},
}


@pytest.mark.parametrize(
    ("status", "phase", "text"),
    [
        ("Creating", Phase.RUNNING, "is being created"),
        ("Updating", Phase.RUNNING, "is being updated"),
        ("SystemUpdating", Phase.RUNNING, "is being updated by SageMaker"),
        ("RollingBack", Phase.RUNNING, "is rolling back an update"),
        ("Deleting", Phase.RUNNING, "is being deleted"),
        ("InService", Phase.SUCCEEDED, "is in service"),
        ("Failed", Phase.FAILED, f"failed: {FAILURE}"),
        ("UpdateRollbackFailed", Phase.FAILED, f"failed to roll back an update: {FAILURE}"),
        ("OutOfService", Phase.FAILED, f"is out of service: {FAILURE}"),
    ],
)
def test_every_endpoint_status_maps(status: str, phase: int, text: str) -> None:
    answer = {**DESCRIBED, "EndpointStatus": status}
    if phase == Phase.FAILED:
        answer["FailureReason"] = FAILURE
    assert StateMapper().endpoint(answer, "ep-fixture") == (phase, f"SageMaker endpoint ep-fixture {text}")


def test_every_documented_status_and_state_has_a_decision() -> None:
    documented_endpoint = {"OutOfService", "Creating", "Updating", "SystemUpdating", "RollingBack", "InService"}
    documented_endpoint |= {"Deleting", "Failed", "UpdateRollbackFailed"}
    documented_job = {"SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "SUCCESS", "FAILED", "CANCELLING", "CANCELLED"}
    documented_job |= {"QUEUED"}
    assert set(SAGEMAKER_STATUSES) == documented_endpoint and set(EMR_STATES) == documented_job


@pytest.mark.parametrize(
    ("state", "phase", "text"),
    [
        ("SUBMITTED", Phase.QUEUED, "was submitted"),
        ("PENDING", Phase.QUEUED, "is pending"),
        ("QUEUED", Phase.QUEUED, "is queued"),
        ("SCHEDULED", Phase.INITIALIZING, "is scheduled"),
        ("RUNNING", Phase.RUNNING, "is running"),
        ("CANCELLING", Phase.RUNNING, "is being cancelled"),
        ("SUCCESS", Phase.SUCCEEDED, "succeeded"),
        ("FAILED", Phase.FAILED, "failed: Job failed, please check complete logs in configured logging destination."),
        ("CANCELLED", Phase.FAILED, "was cancelled: Job cancelled by user"),
    ],
)
def test_every_job_run_state_maps(state: str, phase: int, text: str) -> None:
    details = {
        "FAILED": "Job failed, please check complete logs in configured logging destination. ExitCode: 1.",
        "CANCELLED": "Job cancelled by user",
    }
    job = {**JOB_RUN, "state": state, "stateDetails": details.get(state, "")}
    got_phase, message = StateMapper().job_run(job, "00fixturejob0001")
    assert got_phase == phase
    assert message.startswith(f"EMR Serverless job run 00fixturejob0001 {text}")


def test_an_unknown_word_is_running_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    mapper = StateMapper()
    for _ in range(3):
        phase, message = mapper.endpoint({**DESCRIBED, "EndpointStatus": "Hibernating"}, "ep-fixture")
        assert phase == Phase.RUNNING and "Hibernating, which this connector does not know" in message
        assert mapper.job_run({**JOB_RUN, "state": "PAUSED"}, "j")[0] == Phase.RUNNING
    assert len([r for r in caplog.records if "does not know" in r.getMessage()]) == 2


# --------------------------------------------------------------------------- AWS's answers over real HTTP


def sagemaker_error(code: str, message: str, status: int = 400) -> Answer:
    return Answer(
        status=status,
        body=json.dumps({"__type": code, "message": message}),
        headers={"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "req-1"},
    )


def sagemaker_ok(body: dict[str, Any]) -> Answer:
    return Answer(body=json.dumps(body), headers={"Content-Type": "application/x-amz-json-1.1"})


def by_operation(**answers: Answer | Callable[[Recorded], Answer]) -> Callable[[Recorded], Answer]:
    """SageMaker's one path (``/``): the answer for the request's ``X-Amz-Target`` operation."""

    def answer(request: Recorded) -> Answer:
        operation = request.headers.get("x-amz-target", "").rpartition(".")[2]
        chosen = answers.get(operation)
        if chosen is None:
            return sagemaker_error("UnknownOperationException", operation, 400)
        return chosen(request) if callable(chosen) else chosen

    return answer


@pytest.fixture
def aws() -> Iterator[HttpTestServer]:
    with HttpTestServer() as server:
        yield server


@contextlib.asynccontextmanager
async def service(url: str, **extra: Any) -> AsyncIterator[Running]:
    settings = {"teams": {"default": {}}, "request_timeout": 5, **extra}
    plugins = {
        "boto": {**settings, "endpoint_urls": {"sagemaker": url}, "allowed_methods": ["sagemaker:create_model"]},
        "sagemaker": {**settings, "endpoint_urls": {"sagemaker": url}},
        "emr_serverless": {**settings, "endpoint_urls": {"emr-serverless": url}},
    }
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins) as svc:
        yield svc


ENDPOINT_INPUTS = {"endpoint_name": "ep-fixture", "endpoint_config_name": "epc-fixture"}


async def test_an_existing_endpoint_is_followed_through_its_statuses(aws: HttpTestServer, aws_env: Any) -> None:  # noqa: F811
    exists = f'Cannot create already existing endpoint "{ARN}".'
    statuses = iter(["Updating", "InService"])
    aws.route(
        "/",
        by_operation(
            CreateEndpoint=sagemaker_error("ValidationException", exists),
            DescribeEndpoint=lambda _r: sagemaker_ok({**DESCRIBED, "EndpointStatus": next(statuses)}),
        ),
    )
    async with service(aws.base) as svc:
        meta = await create_task(svc, template("sagemaker_endpoint"), ENDPOINT_INPUTS)
        assert meta_fields(meta)["refused"] == ""
        updating = await get_task(svc, meta, "sagemaker-endpoint")
        done = await get_task(svc, meta, "sagemaker-endpoint")
    assert updating.phase == Phase.RUNNING and "is being updated" in updating.message
    assert done.phase == Phase.SUCCEEDED and result_of(done) == {"EndpointArn": ARN}


async def test_a_failed_endpoint_fails_with_its_failure_reason(aws: HttpTestServer, aws_env: Any) -> None:  # noqa: F811
    aws.route(
        "/",
        by_operation(
            CreateEndpoint=sagemaker_ok({"EndpointArn": ARN}),
            DescribeEndpoint=sagemaker_ok({**DESCRIBED, "EndpointStatus": "Failed", "FailureReason": FAILURE}),
        ),
    )
    async with service(aws.base) as svc:
        meta = await create_task(svc, template("sagemaker_endpoint"), ENDPOINT_INPUTS)
        resource = await get_task(svc, meta, "sagemaker-endpoint")
    assert resource.phase == Phase.FAILED and FAILURE in resource.message


@pytest.mark.parametrize(
    ("answer", "code", "text"),
    [
        (sagemaker_error("ThrottlingException", "Rate exceeded"), grpc.StatusCode.UNAVAILABLE, "Rate exceeded"),
        (
            sagemaker_error("InternalFailure", "We encountered an internal error.", 500),
            grpc.StatusCode.UNAVAILABLE,
            "500",
        ),
        (sagemaker_error("ServiceUnavailable", "Service is unavailable", 503), grpc.StatusCode.UNAVAILABLE, "503"),
        (
            sagemaker_error(
                "AccessDeniedException",
                f"User: arn:aws:sts::{ACCOUNT}:assumed-role/flyte/c is not authorized to perform: "
                "sagemaker:DescribeEndpoint",
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "to the service's default AWS credential chain (AccessDeniedException)",
        ),
        (
            sagemaker_error("UnrecognizedClientException", "The security token included in the request is invalid."),
            grpc.StatusCode.FAILED_PRECONDITION,
            "UnrecognizedClientException",
        ),
        (
            sagemaker_error("ExpiredTokenException", "The security token included in the request is expired", 403),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ExpiredTokenException",
        ),
    ],
)
async def test_awss_error_codes_are_the_right_grpc_status(
    aws: HttpTestServer,
    aws_env: Any,  # noqa: F811
    answer: Answer,
    code: grpc.StatusCode,
    text: str,
) -> None:
    aws.route("/", by_operation(CreateEndpoint=sagemaker_ok({"EndpointArn": ARN}), DescribeEndpoint=answer))
    async with service(aws.base) as svc:
        meta = await create_task(svc, template("sagemaker_endpoint"), ENDPOINT_INPUTS)
        error = await rpc_error(get_task(svc, meta, "sagemaker-endpoint"))
    assert error.code() == code, error.details()
    assert text in (error.details() or "")
    assert "testing" not in (error.details() or "")  # never a credential


async def test_boto_already_existing_model_answers_its_arn(aws: HttpTestServer, aws_env: Any) -> None:  # noqa: F811
    model_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/xgb-0123456789abcdef"
    exists = f'Cannot create already existing model "{model_arn}".'
    aws.route(
        "/",
        by_operation(CreateModel=sagemaker_error("ValidationException", exists)),
    )
    async with service(aws.base) as svc:
        resource = await boto(svc, template("boto_create_model"), {"model_name": "xgb", "model_path": "s3://m"})
    assert resource.phase == Phase.SUCCEEDED, resource.message
    assert result_of(resource) == {"ModelArn": model_arn}
    assert len(resource.outputs.literals["idempotence_token"].scalar.primitive.string_value) == 16


# --------------------------------------------------------------------------- an application that takes its time


class SlowApplication:
    """EMR Serverless's REST API for one application that is STARTING until ``started`` is set."""

    def __init__(self, server: HttpTestServer) -> None:
        self.started = False
        self.submitted: list[dict[str, Any]] = []
        base = "/applications/00slowapp0001"
        server.route(
            base, lambda _r: self._json({"application": {"applicationId": "00slowapp0001", "state": self.state}})
        )
        server.route(f"{base}/jobruns", self._jobruns)
        server.route(
            f"{base}/jobruns/00slowjob0001", lambda _r: self._json({"jobRun": {**JOB_RUN, "state": "RUNNING"}})
        )

    @property
    def state(self) -> str:
        return "STARTED" if self.started else "STARTING"

    @staticmethod
    def _json(body: dict[str, Any]) -> Answer:
        return Answer(body=json.dumps(body), headers={"Content-Type": "application/json"})

    def _jobruns(self, request: Recorded) -> Answer:
        if request.method == "POST":
            self.submitted.append(request.json())
            return self._json({"applicationId": "00slowapp0001", "jobRunId": "00slowjob0001", "arn": "arn"})
        runs = [{"id": "00slowjob0001", "name": body["name"], "state": "RUNNING"} for body in self.submitted]
        return self._json({"jobRuns": runs})


async def test_a_starting_application_gets_its_job_run_once_it_started(aws: HttpTestServer, aws_env: Any) -> None:  # noqa: F811
    app = SlowApplication(aws)
    task = with_custom("emr_spark", application_id="00slowapp0001")
    async with service(aws.base) as svc:
        meta = await create_task(svc, task, task_execution_metadata=task_execution_metadata(name="slow"))
        fields = meta_fields(meta)
        assert fields["job_run_id"] == "" and json.loads(fields["plan"])["executionTimeoutMinutes"] == 30
        for _ in range(3):
            waiting = await get_task(svc, meta, "emr_serverless")
            assert waiting.phase == Phase.INITIALIZING and "is STARTING" in waiting.message
        assert app.submitted == []  # nothing is submitted while the application starts
        app.started = True
        for _ in range(3):
            running = await get_task(svc, meta, "emr_serverless")
            assert running.phase == Phase.RUNNING, running.message
    assert len(app.submitted) == 1  # later polls find the job run by its name
    assert app.submitted[0]["clientToken"] == fields["client_token"]


async def test_boto_throttled_is_unavailable(aws: HttpTestServer, aws_env: Any) -> None:  # noqa: F811
    aws.route("/", by_operation(CreateModel=sagemaker_error("ThrottlingException", "Rate exceeded")))
    async with service(aws.base) as svc:
        error = await rpc_error(boto(svc, template("boto_create_model"), {"model_name": "xgb", "model_path": "s3://m"}))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "ThrottlingException" in (error.details() or "")


async def test_a_region_outside_the_teams_regions_is_refused_before_any_call(
    aws: HttpTestServer,
    aws_env: Any,  # noqa: F811
) -> None:
    async with service(aws.base, teams={"default": {"regions": ["eu-west-1"]}}) as svc:
        error = await rpc_error(create_task(svc, template("sagemaker_endpoint"), ENDPOINT_INPUTS))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "custom.region us-east-2 is not allowed" in (error.details() or "")
    assert "plugins.sagemaker.teams.default.regions" in (error.details() or "")
    assert aws.requests == []
