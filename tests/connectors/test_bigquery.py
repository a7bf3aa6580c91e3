"""The ``bigquery_query_job_task`` connector over gRPC, against bqemulator (a BigQuery emulator) on loopback.

Templates are what flytekitplugins-bigquery 1.16.31 and flyteplugins-bigquery 2.12.1 serialize
(``tests/fixtures/make_bigquery_fixtures.py``). The emulator (``bqemulator.py``) runs the
queries for real, with the typed parameters the service binds; its results are read back to
check each value arrived with its type.

What bqemulator cannot do (authentication, throttling, 5xx, 409 on a known job id, PENDING and
RUNNING jobs, writing a query to its ``destinationTable``) is checked against a real HTTP server
on loopback that answers as BigQuery does (``tests/http_server.py``); the state mapping is unit-tested in
``test_bigquery_states.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service import ConnectorRegistry, RegistryError, TaskCategory
from connector_service._envelope import open_meta
from tests.connectors.bqemulator import TOOL, BqEmulator, bqemulator  # noqa: F401
from tests.http_server import Answer, HttpTestServer
from tests.utils import FIXTURES, Running, create_task, delete_task, get_task, run_service, task_execution_metadata

TOOLS = (TOOL,)
"""Built before the tests run (``tests/conftest.py``)."""

Phase = execution_pb2.TaskExecution
BIGQUERY = FIXTURES / "bigquery"
CONNECTORS = ("connectors.bigquery:BigQueryConnector",)
TASK_TYPE = "bigquery_query_job_task"
PROJECT = "flyte-fixtures"
TERMINAL = {Phase.SUCCEEDED, Phase.FAILED, Phase.RETRYABLE_FAILED, Phase.ABORTED}
_COUNTER = iter(range(1_000_000))


def fixture(stem: str) -> tasks_pb2.TaskTemplate:
    """A template from the fixtures (Flyte 2's flyteidl2 bytes parse as v1's: the same wire)."""
    return tasks_pb2.TaskTemplate.FromString((BIGQUERY / f"{stem}_template.pb").read_bytes())


def inputs_of(stem: str) -> literals_pb2.LiteralMap:
    path = BIGQUERY / f"{stem}_inputs.pb"
    return literals_pb2.LiteralMap.FromString(path.read_bytes()) if path.exists() else literals_pb2.LiteralMap()


def meta_fields(meta: bytes) -> dict[str, Any]:
    return json.loads(open_meta(meta).meta)  # type: ignore[no-any-return]


def execution(**kwargs: Any) -> agent_pb2.TaskExecutionMetadata:
    """A fresh task execution (its id names the job)."""
    kwargs.setdefault("name", f"e{next(_COUNTER)}-{time.monotonic_ns()}")
    return task_execution_metadata(**kwargs)


def team(**extra: Any) -> dict[str, Any]:
    return {"allowed_projects": [PROJECT], "allowed_key_secrets": ["bq-team-key"], **extra}


@contextlib.asynccontextmanager
async def service(endpoint: str, projects: dict[str, Any] | None = None, **settings: Any) -> AsyncIterator[Running]:
    plugins = {
        "bigquery": {
            "endpoint": endpoint,
            "anonymous": True,
            "request_timeout": 8,
            "projects": projects if projects is not None else {"default": team()},
            **settings,
        }
    }
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins) as svc:
        yield svc


async def poll(svc: Running, meta: bytes, seconds: float = 30) -> agent_pb2.Resource:
    deadline = time.monotonic() + seconds
    while True:
        resource = await get_task(svc, meta, TASK_TYPE)
        if resource.phase in TERMINAL or time.monotonic() > deadline:
            return resource
        await asyncio.sleep(0.1)


def console_link(job_id: str, location: str = "US") -> str:
    return f"https://console.cloud.google.com/bigquery?project={PROJECT}&j=bq:{location}:{job_id}&page=queryresults"


# --------------------------------------------------------------------------- queries, for real


@pytest.mark.parametrize("stem", ["fk_query", "f2_query"])
async def test_a_query_binds_typed_parameters_and_returns_its_results(bqemulator: BqEmulator, stem: str) -> None:  # noqa: F811
    template = fixture(stem)
    assert template.type == TASK_TYPE
    async with service(bqemulator.url) as svc:
        meta = await create_task(svc, template, inputs_of(stem), task_execution_metadata=execution())
        done = await poll(svc, meta)
    assert done.phase == Phase.SUCCEEDED, done.message
    fields = meta_fields(meta)
    job_id = fields["job_id"]
    assert re.fullmatch(r"flyte-[0-9a-f]{58}", job_id)  # from the task execution id and attempt
    assert fields["project"] == PROJECT and fields["location"] == "US" and fields["team"] == "default"
    assert [(link.name, link.uri) for link in done.log_links] == [("BigQuery Console", console_link(job_id))]
    [row] = bqemulator.rows(PROJECT, job_id)
    assert row["day"] == "2024-01-01" and row["next"] == "42" and float(row["doubled"]) == 2.5
    assert row["ok"] == "true" and row["n_tags"] == "3"
    assert [v["v"] for v in row["tags"]] == ["a", "b", "c"] and [v["v"] for v in row["ids"]] == ["1", "2"]
    assert row["since"].startswith("2024-01-01T06:30:00")  # a DATETIME, as flytekit sends it
    assert row["on_day"].startswith("2024-02-29")
    result = done.outputs.literals["results"].scalar.structured_dataset
    job = bqemulator.job(PROJECT, job_id)
    table = job["configuration"]["query"]["destinationTable"]
    assert result.uri == f"bq://{table['projectId']}:{table['datasetId']}.{table['tableId']}"
    assert b"2024-01-01" not in open_meta(meta).meta  # no inputs in the meta


async def test_a_configured_task_runs_and_its_results_are_the_jobs_destination(bqemulator: BqEmulator) -> None:  # noqa: F811
    """The config itself reaching BigQuery is checked in ``test_the_job_body_and_the_signed_token``:
    bqemulator 1.4.0 accepts ``destinationTable`` but writes a query's rows to an anonymous table,
    and reports that one, so here ``results`` must be what ``jobs.get`` reports."""
    bqemulator.ensure_dataset(PROJECT, "flyte_out")
    async with service(bqemulator.url) as svc:
        meta = await create_task(
            svc, fixture("fk_configured"), inputs_of("fk_configured"), task_execution_metadata=execution()
        )
        done = await poll(svc, meta)
    assert done.phase == Phase.SUCCEEDED, done.message
    job_id = meta_fields(meta)["job_id"]
    table = bqemulator.job(PROJECT, job_id)["configuration"]["query"]["destinationTable"]
    uri = done.outputs.literals["results"].scalar.structured_dataset.uri
    assert uri == f"bq://{table['projectId']}:{table['datasetId']}.{table['tableId']}"
    assert bqemulator.rows(PROJECT, job_id) == [{"n": "7", "what": "configured"}]


async def test_a_task_without_outputs_succeeds_without_outputs(bqemulator: BqEmulator) -> None:  # noqa: F811
    async with service(bqemulator.url) as svc:
        done = await poll(svc, await create_task(svc, fixture("fk_plain"), task_execution_metadata=execution()))
    assert done.phase == Phase.SUCCEEDED and not done.outputs.literals


async def test_bad_sql_fails_the_task_with_bigquerys_message(bqemulator: BqEmulator) -> None:  # noqa: F811
    template = fixture("fk_plain")
    template.sql.statement = "SELEC nonsense FROM nowhere"
    async with service(bqemulator.url) as svc:
        meta = await create_task(svc, template, task_execution_metadata=execution())
        failed = await get_task(svc, meta, TASK_TYPE)
    assert failed.phase == Phase.FAILED
    assert "invalidQuery" in failed.message and "Syntax error" in failed.message
    assert failed.log_links and failed.log_links[0].name == "BigQuery Console"


async def test_delete_cancels_and_is_idempotent(bqemulator: BqEmulator) -> None:  # noqa: F811
    async with service(bqemulator.url) as svc:
        meta = await create_task(svc, fixture("fk_plain"), task_execution_metadata=execution())
        await delete_task(svc, meta, TASK_TYPE)
        await delete_task(svc, meta, TASK_TYPE)  # propeller may abort twice; the job had finished: fine
        unknown = dict(meta_fields(meta), job_id="flyte-never-inserted")
        await delete_task(svc, json.dumps(unknown).encode(), TASK_TYPE)  # a plain JSON meta, as flytekit's


async def test_a_retried_create_task_gets_the_same_job(bqemulator: BqEmulator) -> None:  # noqa: F811
    first_attempt = execution()
    bqemulator.ensure_dataset(PROJECT, "idem")
    bqemulator.call(
        "POST",
        f"/projects/{PROJECT}/queries",
        {"query": "CREATE TABLE IF NOT EXISTS idem.runs (x INT64)", "useLegacySql": False},
    )
    template = fixture("fk_plain")
    template.sql.statement = "INSERT INTO idem.runs (x) VALUES (1)"
    async with service(bqemulator.url) as svc:
        before = len(bqemulator.jobs(PROJECT))
        metas = [await create_task(svc, template, task_execution_metadata=first_attempt) for _ in range(2)]
        assert meta_fields(metas[0])["job_id"] == meta_fields(metas[1])["job_id"]
        assert len(bqemulator.jobs(PROJECT)) == before + 1
        name = first_attempt.task_execution_id.node_execution_id.execution_id.name
        retry = await create_task(svc, template, task_execution_metadata=task_execution_metadata(name=name, retry=1))
        assert meta_fields(retry)["job_id"] != meta_fields(metas[0])["job_id"]  # a new attempt is a new job
        assert (await poll(svc, metas[0])).phase == Phase.SUCCEEDED
    answer = bqemulator.call(
        "POST", f"/projects/{PROJECT}/queries", {"query": "SELECT COUNT(*) AS n FROM idem.runs", "useLegacySql": False}
    )
    assert answer["rows"][0]["f"][0]["v"] == "2"  # the statement ran once per attempt, not once per call


async def test_a_stopped_emulator_is_unavailable_and_the_task_resumes_on_restart(bqemulator: BqEmulator) -> None:  # noqa: F811
    async with service(bqemulator.url) as svc:
        meta = await create_task(svc, fixture("fk_query"), inputs_of("fk_query"), task_execution_metadata=execution())
        bqemulator.emulator.stop()
        try:
            for call in (get_task, delete_task):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(svc, meta, TASK_TYPE)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "cannot be reached" in (caught.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await create_task(svc, fixture("fk_plain"), task_execution_metadata=execution())
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            bqemulator.emulator.start()  # the same port, the same data directory
        # Started --persistent, the emulator still knows the job: the task goes on where it was.
        done = await poll(svc, meta)
    assert done.phase == Phase.SUCCEEDED, done.message
    assert done.outputs.literals["results"].scalar.structured_dataset.uri.startswith("bq://")


async def test_twenty_concurrent_tasks(bqemulator: BqEmulator) -> None:  # noqa: F811
    async with service(bqemulator.url) as svc:

        async def one() -> int:
            meta = await create_task(
                svc, fixture("fk_query"), inputs_of("fk_query"), task_execution_metadata=execution(), timeout=30
            )
            return (await poll(svc, meta, seconds=60)).phase

        phases = await asyncio.gather(*(one() for _ in range(20)))
        assert phases == [Phase.SUCCEEDED] * 20
        connector = svc.service.registry.find(TASK_TYPE, 0).connector
        assert connector.clients.made == 1  # type: ignore[attr-defined]  # one shared client for every call


async def test_a_job_started_by_flytekits_connector_is_followed(bqemulator: BqEmulator) -> None:  # noqa: F811
    """A switch-over from ``pyflyte serve connector``: its metas are plain JSON (job id, project, location)."""
    flytekit_meta = (BIGQUERY / "fk_meta.json").read_bytes()
    job_id = json.loads(flytekit_meta)["job_id"]
    body = {
        "jobReference": {"projectId": PROJECT, "jobId": job_id, "location": "US"},
        "configuration": {"query": {"query": "SELECT 1 AS one", "useLegacySql": False}},
    }
    bqemulator.call("POST", f"/projects/{PROJECT}/jobs", body)
    async with service(bqemulator.url) as svc:
        done = await get_task(svc, flytekit_meta, TASK_TYPE)
        await delete_task(svc, flytekit_meta, TASK_TYPE)
    assert done.phase == Phase.SUCCEEDED, done.message
    assert [link.uri for link in done.log_links] == [console_link(job_id)]
    assert done.outputs.literals["results"].scalar.structured_dataset.uri.startswith(f"bq://{PROJECT}:")


async def test_flyte_2_over_its_own_protocol(bqemulator: BqEmulator) -> None:  # noqa: F811
    """Flyte 2's executor sends ``connection.secrets`` built from ``custom.secrets``: the secret's *name*."""
    from flyteidl2.connector import connector_pb2 as v2
    from flyteidl2.connector import service_pb2_grpc as v2_grpc
    from flyteidl2.core import security_pb2
    from flyteidl2.core import tasks_pb2 as v2_tasks
    from flyteidl2.task import common_pb2 as v2_common

    connection = security_pb2.Connection(secrets={"google_application_credentials": "bq-team-key"})
    async with service(bqemulator.url) as svc:
        stub = v2_grpc.AsyncConnectorServiceStub(svc.channel)
        created = await stub.CreateTask(
            v2.CreateTaskRequest(
                template=v2_tasks.TaskTemplate.FromString((BIGQUERY / "f2_query_template.pb").read_bytes()),
                inputs=v2_common.Inputs.FromString((BIGQUERY / "f2_query_inputs.pb").read_bytes()),
                output_prefix="s3://b/o",
                connection=connection,
            ),
            timeout=10,
        )
        category = v2.TaskCategory(name=TASK_TYPE, version=0)
        got = await stub.GetTask(
            v2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta, connection=connection),
            timeout=10,
        )
    assert got.resource.phase == execution_pb2.TaskExecution.SUCCEEDED, got.resource.message
    fields = meta_fields(created.resource_meta)
    assert fields["key_secret"] == "bq-team-key"  # named by the template, allowed by the team's entry
    [named] = got.resource.outputs.literals  # Flyte 2's outputs are a list of named literals
    assert named.name == "results" and named.value.scalar.structured_dataset.uri.startswith("bq://")
    [row] = bqemulator.rows(PROJECT, fields["job_id"])
    assert row["next"] == "42" and [v["v"] for v in row["ids"]] == ["1", "2"]


# --------------------------------------------------------------------------- what the operator allows


async def test_a_project_the_team_may_not_use_is_refused(bqemulator: BqEmulator) -> None:  # noqa: F811
    before = len(bqemulator.jobs("someone-else"))
    async with service(bqemulator.url) as svc:
        template = fixture("fk_plain")
        template.custom["ProjectID"] = "someone-else"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, task_execution_metadata=execution())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "custom.ProjectID 'someone-else' is not allowed" in (caught.value.details() or "")

        template = fixture("fk_configured")
        template.custom["destinationTable"]["projectId"] = "someone-else"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("fk_configured"), task_execution_metadata=execution())
        assert "custom.destinationTable.projectId" in (caught.value.details() or "")

        template = fixture("f2_query")
        template.custom["secrets"]["google_application_credentials"] = "someone-elses-key"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("f2_query"), task_execution_metadata=execution())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "custom.secrets.google_application_credentials" in (caught.value.details() or "")
    assert len(bqemulator.jobs("someone-else")) == before


async def test_each_team_gets_its_entry_and_other_teams_are_refused(bqemulator: BqEmulator) -> None:  # noqa: F811
    async with service(bqemulator.url, {"ml/prod": team()}) as svc:
        meta = await create_task(svc, fixture("fk_plain"), task_execution_metadata=execution())
        assert meta_fields(meta)["team"] == "ml/prod"
        assert (await poll(svc, meta)).phase == Phase.SUCCEEDED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, fixture("fk_plain"), task_execution_metadata=execution(project="finance"))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "plugins.bigquery.projects has no entry for project/domain finance/prod" in (
            caught.value.details() or ""
        )


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"anonymous": True}, "anonymous is set without endpoint"),
        ({"endpoint": "http://127.0.0.1:1"}, "in clear"),
        ({"projects": {"default": {"allowed_projects": ["Not A Project"]}}}, "is not a Google Cloud project id"),
        ({"projects": {"a/b/c": {}}}, "is not 'default'"),
    ],
)
async def test_settings_that_cannot_work_stop_the_service_at_start_up(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(RegistryError, match=problem):
        async with run_service(CONNECTORS, entry_points=False, plugins={"bigquery": settings}):
            pass


def test_the_bundled_entry_point_registers_the_task_type() -> None:
    entry = ConnectorRegistry.build().lookup(TaskCategory(TASK_TYPE, 0))
    assert not entry.is_sync and entry.connector.settings_key == "bigquery"


# --------------------------------------------------------------------------- what bqemulator cannot show


@pytest.fixture(scope="module")
def service_account_key() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "fixture-key-1",
        "private_key": pem.decode(),
        "client_email": f"flyte@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service_account_key: dict[str, str]) -> Path:
    where = tmp_path / "secrets"
    where.mkdir()
    (where / "bigquery_service_account").write_text(json.dumps(service_account_key))
    (where / "bq-team-key").write_text(json.dumps(dict(service_account_key, private_key_id="team-key-2")))
    (where / "not-a-key").write_text("hunter2-not-json")
    monkeypatch.setenv("CONNECTOR_SECRETS_DIR", str(where))
    return where


@pytest.fixture
def google(secrets: Path) -> Iterator[HttpTestServer]:
    """A real HTTP server answering as BigQuery's REST API does, for what bqemulator never answers."""
    with HttpTestServer() as running:
        yield running


JOBS = f"/bigquery/v2/projects/{PROJECT}/jobs"


def job_answer(job_id: str, state: str, **status: Any) -> dict[str, Any]:
    return {
        "kind": "bigquery#job",
        "id": f"{PROJECT}:US.{job_id}",
        "jobReference": {"projectId": PROJECT, "jobId": job_id, "location": "US"},
        "configuration": {
            "query": {
                "query": "SELECT 1",
                "destinationTable": {"projectId": PROJECT, "datasetId": "_anon", "tableId": "anon1"},
            }
        },
        "status": {"state": state, **status},
    }


def not_found(job_id: str) -> Answer:
    message = f"Not found: Job {PROJECT}:US.{job_id}"
    return Answer(
        status=404,
        json={
            "error": {
                "code": 404,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": "notFound"}],
                "status": "NOT_FOUND",
            }
        },
    )


@contextlib.asynccontextmanager
async def signed_service(google: HttpTestServer) -> AsyncIterator[Running]:
    """The service calling ``google`` with signed tokens (plain http on loopback: ``allow_http``)."""
    async with service(google.base, anonymous=False, allow_http=True) as svc:
        yield svc


def bearer_claims(request: Any) -> dict[str, Any]:
    """The claims of the self-signed JWT a request carried."""
    token = request.headers["authorization"].removeprefix("Bearer ")
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


async def test_the_job_body_and_the_signed_token(google: HttpTestServer, service_account_key: dict[str, str]) -> None:
    seen: list[str] = []

    def inserted(request: Any) -> Answer:
        job_id = request.json()["jobReference"]["jobId"]
        seen.append(job_id)
        return Answer(json=job_answer(job_id, "RUNNING"))

    google.route(JOBS, inserted)
    async with signed_service(google) as svc:
        meta = await create_task(
            svc, fixture("fk_configured"), inputs_of("fk_configured"), task_execution_metadata=execution()
        )
        template = fixture("f2_query")
        await create_task(svc, template, inputs_of("f2_query"), task_execution_metadata=execution())
    job_id = meta_fields(meta)["job_id"]
    gets = [r for r in google.requests if r.method == "GET"]
    assert [r.path for r in gets][0] == f"{JOBS}/{job_id}" and gets[0].params == {"location": ["US"]}
    configured, flyte2 = google.of(JOBS)
    body = configured.json()
    assert body["jobReference"] == {"projectId": PROJECT, "jobId": job_id, "location": "US"}
    query = body["configuration"]["query"]
    assert query["destinationTable"] == {"projectId": PROJECT, "datasetId": "flyte_out", "tableId": "daily"}
    assert query["priority"] == "BATCH" and query["writeDisposition"] == "WRITE_TRUNCATE"
    assert query["maximumBytesBilled"] == "10000000" and query["useLegacySql"] is False
    assert query["queryParameters"] == [
        {"name": "n", "parameterType": {"type": "INT64"}, "parameterValue": {"value": "7"}}
    ]
    params = {p["name"]: p for p in flyte2.json()["configuration"]["query"]["queryParameters"]}
    assert params["tags"]["parameterType"] == {"type": "ARRAY", "arrayType": {"type": "STRING"}}
    assert params["tags"]["parameterValue"] == {"arrayValues": [{"value": "a"}, {"value": "b"}, {"value": "c"}]}
    assert params["since"]["parameterType"] == {"type": "DATETIME"}
    assert params["since"]["parameterValue"] == {"value": "2024-01-01 06:30:00.000000"}
    assert params["ratio"]["parameterValue"] == {"value": "1.25"}
    assert params["ok"]["parameterValue"] == {"value": "true"}
    claims = bearer_claims(configured)
    assert claims["iss"] == service_account_key["client_email"]
    assert claims["scope"] == "https://www.googleapis.com/auth/bigquery"
    header = flyte2.headers["authorization"].removeprefix("Bearer ").split(".")[0]
    headers = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    assert headers["kid"] == "team-key-2"  # Flyte 2's template named the team's key secret, which is allowed
    assert service_account_key["private_key"].encode() not in open_meta(meta).meta


async def test_a_409_on_insert_reads_the_existing_job(google: HttpTestServer) -> None:
    exists = {
        "error": {
            "code": 409,
            "message": "Already Exists: Job flyte-fixtures:US.x",
            "errors": [
                {"message": "Already Exists: Job flyte-fixtures:US.x", "domain": "global", "reason": "duplicate"}
            ],
        }
    }
    calls = iter(range(10))

    def get(request: Any) -> Answer:
        job_id = request.path.rsplit("/", 1)[1]
        return not_found(job_id) if next(calls) == 0 else Answer(json=job_answer(job_id, "DONE"))

    execution_meta = execution()
    from connectors._scoped import execution_token

    job_id = execution_token(execution_meta, prefix="flyte", length=64)
    google.route(f"{JOBS}/{job_id}", get)
    google.route(JOBS, Answer(status=409, json=exists))
    async with signed_service(google) as svc:
        meta = await create_task(svc, fixture("fk_plain"), task_execution_metadata=execution_meta)
        done = await get_task(svc, meta, TASK_TYPE)
    assert meta_fields(meta)["job_id"] == job_id and not meta_fields(meta)["refused"]
    assert done.phase == Phase.SUCCEEDED
    assert len(google.of(JOBS)) == 1 and len(google.of(f"{JOBS}/{job_id}")) == 3  # look, insert (409), read


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (400, "invalid", "Invalid value for type: DATE is not a valid value"),
        (404, "notFound", "Not found: Dataset flyte-fixtures:flyte_out"),
    ],
)
async def test_a_job_bigquery_will_not_take_fails_the_task_with_its_message(
    google: HttpTestServer, status: int, reason: str, message: str
) -> None:
    body = {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}}
    google.route(JOBS, Answer(status=status, json=body))
    async with signed_service(google) as svc:
        meta = await create_task(svc, fixture("fk_plain"))
        failed = await get_task(svc, meta, TASK_TYPE)
        await delete_task(svc, meta, TASK_TYPE)  # there is no job: nothing to cancel
    assert failed.phase == Phase.FAILED
    assert reason in failed.message and message in failed.message
    assert len(google.of(JOBS)) == 1 and not [r for r in google.requests if r.path.endswith("/cancel")]


@pytest.mark.parametrize(("status", "reason"), [(401, "authError"), (403, "accessDenied")])
async def test_a_refused_key_is_failed_precondition_naming_the_secret(
    google: HttpTestServer, status: int, reason: str
) -> None:
    body = {
        "error": {
            "code": status,
            "message": "Request had invalid authentication credentials.",
            "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": reason}],
        }
    }
    google.route(JOBS, Answer(status=status, json=body))
    async with signed_service(google) as svc:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, fixture("fk_plain"))  # no execution id: a random job id, no look-up first
    details = caught.value.details() or ""
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "secret 'bigquery_service_account'" in details and "BEGIN PRIVATE KEY" not in details


async def test_a_secret_that_is_not_a_key_is_failed_precondition_naming_it(google: HttpTestServer) -> None:
    async with service(google.base, {"default": team(key_secret="not-a-key")}, anonymous=False, allow_http=True) as svc:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, fixture("fk_plain"))
    details = caught.value.details() or ""
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'not-a-key'" in details and "hunter2" not in details
    assert not google.requests


@pytest.mark.parametrize(
    "answer",
    [
        Answer(status=429, json={"error": {"code": 429, "message": "slow down"}}),
        Answer(status=503, json={"error": {"code": 503, "message": "backend", "errors": [{"reason": "backendError"}]}}),
        Answer(
            status=403,
            json={
                "error": {
                    "code": 403,
                    "message": "Exceeded rate limits",
                    "errors": [{"reason": "rateLimitExceeded", "message": "Exceeded rate limits"}],
                }
            },
        ),
    ],
)
async def test_throttling_and_server_errors_are_unavailable(google: HttpTestServer, answer: Answer) -> None:
    job_id = "flyte-throttled"
    google.route(JOBS, Answer(json=job_answer(job_id, "PENDING")))
    google.route(f"{JOBS}/{job_id}", answer)
    google.route(f"{JOBS}/{job_id}/cancel", answer)
    async with signed_service(google) as svc:
        meta = await create_task(svc, fixture("fk_plain"))
        fields = dict(meta_fields(meta), job_id=job_id)
        meta = json.dumps(fields).encode()  # a plain JSON meta, as flytekit's connector issues
        for call in (get_task, delete_task):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(svc, meta, TASK_TYPE)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert str(answer.status) in (caught.value.details() or "")


async def test_states_bqemulator_never_shows_each_with_the_log_link(google: HttpTestServer) -> None:
    execution_meta = execution()
    from connectors._scoped import execution_token

    job_id = execution_token(execution_meta, prefix="flyte", length=64)
    google.route(
        f"{JOBS}/{job_id}",
        not_found(str(job_id)),
        Answer(json=job_answer(str(job_id), "PENDING")),
        Answer(json=job_answer(str(job_id), "RUNNING")),
        Answer(json=job_answer(str(job_id), "HIBERNATING")),
        Answer(json=job_answer(str(job_id), "DONE", errorResult={"reason": "backendError", "message": "try again"})),
    )
    google.route(JOBS, Answer(json=job_answer(str(job_id), "PENDING")))
    async with signed_service(google) as svc:
        meta = await create_task(
            svc, fixture("fk_query"), inputs_of("fk_query"), task_execution_metadata=execution_meta
        )
        seen = [await get_task(svc, meta, TASK_TYPE) for _ in range(4)]
    assert [r.phase for r in seen] == [Phase.QUEUED, Phase.RUNNING, Phase.RUNNING, Phase.RETRYABLE_FAILED]
    assert "HIBERNATING" in seen[2].message and "try again" in seen[3].message
    for resource in seen:
        assert [link.uri for link in resource.log_links] == [console_link(str(job_id))]
