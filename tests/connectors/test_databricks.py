"""The ``databricks`` and ``spark`` connectors over gRPC, against minilake (a Databricks emulator) running scripts.

Templates are what flytekitplugins-spark 1.16.31 and flyteplugins-databricks 2.12.1 serialize
(``tests/fixtures/make_databricks_fixtures.py``); their container args are rendered as
propeller renders them, and become the run's parameters. The emulator (``minilake.py``) runs
the run's entrypoint file for real as a Python script, which reports its argv and environment
to a file and succeeds, fails or waits according to the rendered args.

What minilake cannot do (authentication, throttling, 5xx, a refused submit, OAuth) is checked
against a real HTTP server on loopback that answers as Databricks does (``tests/http_server.py``);
run states it never shows are unit-tested in ``test_databricks_states.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service import ConnectorRegistry, RegistryError, TaskCategory
from connector_service._envelope import open_meta
from tests.connectors.minilake import TOOL, Minilake, minilake  # noqa: F401
from tests.http_server import Answer, HttpTestServer
from tests.utils import FIXTURES, Running, create_task, delete_task, get_task, run_service, task_execution_metadata

TOOLS = (TOOL,)
"""Built before the tests run (``tests/conftest.py``)."""

Phase = execution_pb2.TaskExecution
DATABRICKS = FIXTURES / "databricks"
CONNECTORS = ("connectors.databricks:DatabricksConnector", "connectors.databricks:DatabricksSparkConnector")
TERMINAL = {Phase.SUCCEEDED, Phase.FAILED, Phase.RETRYABLE_FAILED, Phase.ABORTED}
STARTED = {Phase.INITIALIZING, Phase.RUNNING}  # minilake: PENDING until its scheduler picks the run up
HOST = "fixture.cloud.databricks.com"
TOKEN = "dapi-service-token-0123456789"
TEAM_TOKEN = "dapi-team-token-9876543210"

# The run's entrypoint: stdlib only, run by minilake as `python3 FILE PARAMETERS...`.
ENTRYPOINT = r"""
import json, os, pathlib, re, sys, time
args = sys.argv[1:]
mode, ident = "ok", "none"
for arg in args:
    found = re.match(r"^dbx:(\w+):([\w.-]+):", arg)
    if found:
        mode, ident = found.group(1), found.group(2)
        break
reports = pathlib.Path(os.environ["DBX_TEST_REPORTS"])
report = {"argv": args, "script": sys.argv[0], "fail_on_error": os.environ.get("FLYTE_FAIL_ON_ERROR")}
(reports / f"{ident}.json").write_text(json.dumps(report))
if mode == "fail":
    print("ValueError: failing on purpose", file=sys.stderr)
    sys.exit(3)
if mode == "wait":
    deadline = time.time() + 120
    while not (reports / f"go-{ident}").exists() and time.time() < deadline:
        time.sleep(0.05)
"""
ENTRYPOINTS = (
    "flytekitplugins/databricks/entrypoint.py",
    "flytekitplugins/databricks/entrypoint_serverless.py",
    "flyteplugins/databricks/entrypoint.py",
    "Shared/flyte/notebook",
)
_COUNTER = iter(range(1_000_000))


def fixture(stem: str) -> tasks_pb2.TaskTemplate:
    """A template from the fixtures (Flyte 2's flyteidl2 bytes parse as v1's: the same wire)."""
    return tasks_pb2.TaskTemplate.FromString((DATABRICKS / f"{stem}_template.pb").read_bytes())


def inputs_of(stem: str) -> literals_pb2.LiteralMap:
    return literals_pb2.LiteralMap.FromString((DATABRICKS / f"{stem}_inputs.pb").read_bytes())


def rendered(template: tasks_pb2.TaskTemplate, mode: str = "ok") -> tuple[tasks_pb2.TaskTemplate, str]:
    """The template with its args rendered as propeller does, each placeholder naming the script's mode."""
    ident = f"t{next(_COUNTER)}-{time.monotonic_ns()}"
    out = tasks_pb2.TaskTemplate()
    out.CopyFrom(template)
    del out.container.args[:]
    for arg in template.container.args:
        out.container.args.append(re.sub(r"\{\{\s*\.(\w+)\s*\}\}", rf"dbx:{mode}:{ident}:\1", arg))
    return out, ident


def meta_fields(meta: bytes) -> dict[str, Any]:
    return json.loads(open_meta(meta).meta)  # type: ignore[no-any-return]


def instance(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"host": HOST, "endpoint": endpoint, "allowed_token_secrets": ["team-databricks-token"], **extra}


@contextlib.asynccontextmanager
async def service(instances: dict[str, Any], **settings: Any) -> AsyncIterator[Running]:
    # request_timeout within get_task's 10 s deadline, generous for a loaded machine.
    plugins = {"databricks": {"allow_http": True, "request_timeout": 8, "instances": instances, **settings}}
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins) as svc:
        yield svc


async def poll(svc: Running, meta: bytes, task_type: str = "databricks", seconds: float = 60) -> agent_pb2.Resource:
    deadline = time.monotonic() + seconds
    while True:
        resource = await get_task(svc, meta, task_type)
        if resource.phase in TERMINAL or time.monotonic() > deadline:
            return resource
        await asyncio.sleep(0.1)


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "secrets"
    where.mkdir()
    (where / "databricks_token").write_text(TOKEN + "\n")
    (where / "team-databricks-token").write_text(TEAM_TOKEN)
    monkeypatch.setenv("CONNECTOR_SECRETS_DIR", str(where))
    return where


@pytest.fixture
def lake(minilake: Minilake, secrets: Path) -> Minilake:  # noqa: F811
    for path in ENTRYPOINTS:
        minilake.put_file(path, ENTRYPOINT)
    return minilake


def report(lake: Minilake, ident: str) -> dict[str, Any]:
    return json.loads((lake.reports / f"{ident}.json").read_text())  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- runs, for real


@pytest.mark.parametrize(
    ("stem", "task_type"),
    [
        ("fk_v2_new_cluster", "databricks"),
        ("fk_v2_existing_cluster", "databricks"),
        ("fk_v2_serverless", "databricks"),
        ("fk_spark_deprecated", "spark"),
        ("f2_databricks", "databricks"),
    ],
)
async def test_a_template_runs_its_rendered_args_and_succeeds(lake: Minilake, stem: str, task_type: str) -> None:
    template, ident = rendered(fixture(stem))
    assert template.type == task_type
    async with service({"default": instance(lake.url)}) as svc:
        execution = task_execution_metadata(name=ident)  # the run's idempotency token comes from it
        meta = await create_task(svc, template, inputs_of(stem), task_execution_metadata=execution)
        done = await poll(svc, meta, task_type)
    assert done.phase == Phase.SUCCEEDED, done.message
    seen = report(lake, ident)
    assert seen["argv"] == list(template.container.args)  # the rendered args are the run's parameters
    entry = "flyteplugins" if stem.startswith("f2") else "flytekitplugins"
    assert seen["script"].endswith(f"{entry}/databricks/entrypoint{'_serverless' if 'serverless' in stem else ''}.py")
    if "new_cluster" in stem or "deprecated" in stem or stem.startswith("f2"):
        assert seen["fail_on_error"] == "true"  # Flyte's env vars reach a new cluster, as flytekit sends them
    fields = meta_fields(meta)
    assert set(fields) >= {"run_id", "instance", "token_secret"}
    assert fields["instance"] == "default" and fields["run_id"].isdigit()
    raw = open_meta(meta).meta
    assert TOKEN.encode() not in raw and TEAM_TOKEN.encode() not in raw  # flytekit stores the token there
    expected_secret = "team-databricks-token" if stem == "fk_v2_new_cluster" else "databricks_token"
    assert fields["token_secret"] == expected_secret
    [link] = done.log_links
    assert link.name == "Databricks Console" and link.uri.endswith(f"/run/{fields['run_id']}")


async def test_a_notebook_task_runs_the_notebook_with_its_base_parameters(lake: Minilake) -> None:
    template = fixture("fk_v2_notebook")
    async with service({"default": instance(lake.url)}) as svc:
        meta = await create_task(svc, template, inputs_of("fk_v2_notebook"))
        done = await poll(svc, meta)
    assert done.phase == Phase.SUCCEEDED, done.message
    assert sorted(report(lake, "none")["argv"]) == ["day=2024-01-01", "limit=10"]


async def test_a_failing_script_fails_the_task_with_databricks_message(lake: Minilake) -> None:
    template, ident = rendered(fixture("fk_v2_existing_cluster"), "fail")
    async with service({"default": instance(lake.url)}) as svc:
        done = await poll(svc, await create_task(svc, template, inputs_of("fk_v2_existing_cluster")))
    assert done.phase == Phase.FAILED
    assert "ended FAILED" in done.message and "Task exited with code 3" in done.message
    assert "task flyte_task" in done.message
    assert report(lake, ident)["argv"]  # it did run


async def test_delete_cancels_the_run_and_is_idempotent(lake: Minilake) -> None:
    template, ident = rendered(fixture("fk_v2_existing_cluster"), "wait")
    async with service({"default": instance(lake.url)}) as svc:
        meta = await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
        running = await get_task(svc, meta, "databricks")
        assert running.phase in (Phase.RUNNING, Phase.INITIALIZING, Phase.QUEUED), running.message
        await delete_task(svc, meta, "databricks")
        await delete_task(svc, meta, "databricks")  # propeller may abort twice
        (lake.reports / f"go-{ident}").touch()  # minilake's cancel lands when the script ends
        done = await poll(svc, meta)
        assert done.phase == Phase.FAILED and "CANCELED" in done.message
        await delete_task(svc, meta, "databricks")  # a finished run: still fine


async def test_a_retried_create_task_gets_the_same_run(lake: Minilake) -> None:
    template, _ = rendered(fixture("fk_v2_existing_cluster"))
    first_attempt = task_execution_metadata(name=f"idem-{time.monotonic_ns()}")
    async with service({"default": instance(lake.url)}) as svc:
        before = len(lake.runs())
        metas = [
            await create_task(svc, template, inputs_of("fk_v2_existing_cluster"), task_execution_metadata=first_attempt)
            for _ in range(2)
        ]
        assert meta_fields(metas[0])["run_id"] == meta_fields(metas[1])["run_id"]
        assert len(lake.runs()) == before + 1
        retry = task_execution_metadata(
            name=first_attempt.task_execution_id.node_execution_id.execution_id.name, retry=1
        )  # a new attempt is a new run
        other = await create_task(svc, template, inputs_of("fk_v2_existing_cluster"), task_execution_metadata=retry)
        assert meta_fields(other)["run_id"] != meta_fields(metas[0])["run_id"]
        assert (await poll(svc, metas[0])).phase == Phase.SUCCEEDED


async def test_a_frozen_workspace_is_unavailable_then_the_task_resumes(lake: Minilake) -> None:
    template, ident = rendered(fixture("fk_v2_existing_cluster"), "wait")
    async with service({"default": instance(lake.url)}, request_timeout=1) as svc:
        meta = await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
        lake.freeze()
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await get_task(svc, meta, "databricks")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert HOST in (caught.value.details() or "")
        finally:
            lake.thaw()
        assert (await get_task(svc, meta, "databricks")).phase in STARTED
        (lake.reports / f"go-{ident}").touch()
        assert (await poll(svc, meta)).phase == Phase.SUCCEEDED


async def test_a_stopped_workspace_is_unavailable_and_reached_again_on_restart(lake: Minilake) -> None:
    template, ident = rendered(fixture("fk_v2_existing_cluster"), "wait")
    async with service({"default": instance(lake.url)}) as svc:
        meta = await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
        assert (await get_task(svc, meta, "databricks")).phase in STARTED
        lake.emulator.stop()
        try:
            for call in (get_task, delete_task):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(svc, meta, "databricks")
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "cannot be reached" in (caught.value.details() or "")
        finally:
            lake.emulator.start()  # the same port
        # minilake keeps runs in memory only: the restarted emulator no longer knows the run,
        # which is a phase (the outcome cannot be known), not an RPC error.
        lost = await get_task(svc, meta, "databricks")
        assert lost.phase == Phase.FAILED and "unknown to" in lost.message
        await delete_task(svc, meta, "databricks")  # unknown: fine
        template, _ = rendered(fixture("fk_v2_existing_cluster"))
        again = await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
        assert (await poll(svc, again)).phase == Phase.SUCCEEDED


async def test_twenty_concurrent_tasks(lake: Minilake) -> None:
    async with service({"default": instance(lake.url)}) as svc:

        async def one() -> int:
            template, _ = rendered(fixture("fk_v2_existing_cluster"))
            meta = await create_task(svc, template, inputs_of("fk_v2_existing_cluster"), timeout=30)
            return (await poll(svc, meta, seconds=120)).phase

        phases = await asyncio.gather(*(one() for _ in range(20)))
        assert phases == [Phase.SUCCEEDED] * 20
        registry = svc.service.registry
        made = [registry.find(name, 0).connector.clients.made for name in ("databricks", "spark")]  # type: ignore[attr-defined]
        assert made == [1, 0]  # one shared client for every call of the databricks task type


# --------------------------------------------------------------------------- what the operator allows


async def test_a_template_may_not_name_another_workspace_or_secret(lake: Minilake) -> None:
    before = len(lake.runs())
    async with service({"default": instance(lake.url)}) as svc:
        template, _ = rendered(fixture("fk_v2_new_cluster"))
        template.custom["databricksInstance"] = "attacker.example.com"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("fk_v2_new_cluster"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "custom.databricksInstance" in (caught.value.details() or "")

        template, _ = rendered(fixture("fk_v2_new_cluster"))
        template.custom["databricksTokenSecret"] = "someone-elses-token"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("fk_v2_new_cluster"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "custom.databricksTokenSecret" in (caught.value.details() or "")

        template, _ = rendered(fixture("f2_databricks"))
        template.custom["secrets"]["databricks_token"] = "someone-elses-token"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("f2_databricks"))
        assert "custom.secrets.databricks_token" in (caught.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as caught:  # no OAuth client configured for this team
            await create_task(svc, rendered(fixture("fk_v2_oauth"))[0], inputs_of("fk_v2_oauth"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "custom.databricksAuthType" in (caught.value.details() or "")
    assert len(lake.runs()) == before  # nothing reached the workspace


async def test_each_team_gets_its_own_workspace_and_others_are_refused(lake: Minilake, secrets: Path) -> None:
    instances = {"ml/prod": instance(lake.url, token_secret="team-databricks-token")}
    async with service(instances) as svc:
        template, ident = rendered(fixture("fk_v2_existing_cluster"))
        meta = await create_task(
            svc,
            template,
            inputs_of("fk_v2_existing_cluster"),
            task_execution_metadata=task_execution_metadata(name=ident),
        )
        assert meta_fields(meta)["instance"] == "ml/prod"
        assert meta_fields(meta)["token_secret"] == "team-databricks-token"
        assert (await poll(svc, meta)).phase == Phase.SUCCEEDED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(
                svc,
                template,
                inputs_of("fk_v2_existing_cluster"),
                task_execution_metadata=task_execution_metadata(project="finance"),
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "plugins.databricks.instances has no entry for project/domain finance/prod" in (
            caught.value.details() or ""
        )


async def test_bad_templates_are_invalid_argument_naming_the_field(lake: Minilake) -> None:
    async with service({"default": instance(lake.url)}) as svc:
        unrendered = fixture("fk_v2_existing_cluster")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, unrendered, inputs_of("fk_v2_existing_cluster"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "{{.input}}" in (caught.value.details() or "")
        template, _ = rendered(fixture("fk_v2_existing_cluster"))
        del template.custom["databricksConf"]["existing_cluster_id"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
        assert "custom.databricksConf has no compute" in (caught.value.details() or "")


# --------------------------------------------------------------------------- what minilake cannot show


@pytest.fixture
def workspace(secrets: Path) -> Any:
    """A real HTTP server answering as a Databricks workspace does, for what minilake never answers."""
    with HttpTestServer() as running:
        yield running


async def test_the_submitted_body_is_the_tasks_form_with_ints_and_an_idempotency_token(
    workspace: HttpTestServer,
) -> None:
    workspace.route("/api/2.2/jobs/runs/submit", Answer(json={"run_id": 77}))
    async with service({"default": instance(workspace.base)}) as svc:
        template, _ = rendered(fixture("fk_v2_new_cluster"))
        template.custom["sparkConf"].update({"spark.speculation": True, "spark.executor.cores": 4})
        execution = task_execution_metadata()
        await create_task(svc, template, inputs_of("fk_v2_new_cluster"), task_execution_metadata=execution)
        template, _ = rendered(fixture("fk_v2_serverless"))
        await create_task(svc, template, inputs_of("fk_v2_serverless"))
    classic, serverless = (r.json() for r in workspace.of("/api/2.2/jobs/runs/submit"))
    [task] = classic["tasks"]
    assert "new_cluster" not in classic and "spark_python_task" not in classic  # not the legacy body
    assert task["new_cluster"]["num_workers"] == 1 and isinstance(task["new_cluster"]["num_workers"], int)
    spark_conf = {"spark.driver.memory": "1g", "spark.speculation": "true", "spark.executor.cores": "4"}
    assert task["new_cluster"]["spark_conf"] == spark_conf  # Spark's spellings, not a Struct's True and 4.0
    assert task["new_cluster"]["docker_image"] == {"url": template.container.image}
    assert task["spark_python_task"]["python_file"] == "flytekitplugins/databricks/entrypoint.py"
    assert classic["git_source"]["git_url"] == "https://github.com/flyteorg/flytetools"
    assert classic["timeout_seconds"] == 3600 and classic["run_name"] == "flyte-fixture"
    assert re.fullmatch(r"flyte-[0-9a-f]{58}", classic["idempotency_token"])
    assert serverless["idempotency_token"].startswith("flyte-") and len(serverless["idempotency_token"]) <= 64
    [task] = serverless["tasks"]
    assert task["environment_key"] == "flyte-env"
    [env] = serverless["environments"]
    assert env["spec"]["dependencies"] == ["pandas==2.2.2"]
    assert env["spec"]["environment_vars"]["FLYTE_FAIL_ON_ERROR"] == "true"
    for request in workspace.of("/api/2.2/jobs/runs/submit"):
        assert request.headers["content-type"] == "application/json"
    assert workspace.of("/api/2.2/jobs/runs/submit")[0].headers["authorization"] == f"Bearer {TEAM_TOKEN}"


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_token_is_failed_precondition_naming_the_secret(workspace: HttpTestServer, status: int) -> None:
    body = {"error_code": "PERMISSION_DENIED", "message": "Invalid access token."}
    workspace.route("/api/2.2/jobs/runs/submit", Answer(status=status, json=body))
    async with service({"default": instance(workspace.base)}) as svc:
        template, _ = rendered(fixture("fk_v2_existing_cluster"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
    details = caught.value.details() or ""
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "secret 'databricks_token'" in details and TOKEN not in details


async def test_a_missing_secret_is_failed_precondition_naming_it(workspace: HttpTestServer, secrets: Path) -> None:
    (secrets / "databricks_token").unlink()
    async with service({"default": instance(workspace.base)}) as svc:
        template, _ = rendered(fixture("fk_v2_existing_cluster"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "databricks_token" in (caught.value.details() or "")
    assert not workspace.requests


@pytest.mark.parametrize("answer", [Answer(status=429, json={"error_code": "TOO_MANY_REQUESTS"}), Answer(status=503)])
async def test_throttling_and_server_errors_are_unavailable(workspace: HttpTestServer, answer: Answer) -> None:
    workspace.route("/api/2.2/jobs/runs/submit", Answer(json={"run_id": 5}))
    workspace.route("/api/2.2/jobs/runs/get", answer)
    workspace.route("/api/2.2/jobs/runs/cancel", answer)
    async with service({"default": instance(workspace.base)}) as svc:
        template, _ = rendered(fixture("fk_v2_existing_cluster"))
        meta = await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
        for call in (get_task, delete_task):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(svc, meta, "databricks")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert str(answer.status) in (caught.value.details() or "")


async def test_a_refused_run_fails_the_task_with_databricks_message(workspace: HttpTestServer) -> None:
    refusal = {"error_code": "INVALID_PARAMETER_VALUE", "message": "Cluster 0101-fixture-cluster does not exist"}
    workspace.route("/api/2.2/jobs/runs/submit", Answer(status=400, json=refusal))
    async with service({"default": instance(workspace.base)}) as svc:
        template, _ = rendered(fixture("fk_v2_existing_cluster"))
        meta = await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
        failed = await get_task(svc, meta, "databricks")
        await delete_task(svc, meta, "databricks")  # there is no run: nothing to cancel
    assert failed.phase == Phase.FAILED
    assert "INVALID_PARAMETER_VALUE" in failed.message and "does not exist" in failed.message
    assert len(workspace.of("/api/2.2/jobs/runs/submit")) == 1 and not workspace.of("/api/2.2/jobs/runs/cancel")


async def test_states_minilake_never_shows_and_the_log_link(workspace: HttpTestServer) -> None:
    run = {"job_id": 4242, "run_id": 9, "state": {"life_cycle_state": "QUEUED", "state_message": "Queued"}}
    unknown = {"job_id": 4242, "run_id": 9, "state": {"life_cycle_state": "HIBERNATING"}}
    workspace.route("/api/2.2/jobs/runs/submit", Answer(json={"run_id": 9}))
    workspace.route("/api/2.2/jobs/runs/get", Answer(json=run), Answer(json=unknown))
    async with service({"default": instance(workspace.base)}) as svc:
        template, _ = rendered(fixture("fk_v2_existing_cluster"))
        meta = await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
        queued = await get_task(svc, meta, "databricks")
        odd = await get_task(svc, meta, "databricks")
    assert queued.phase == Phase.QUEUED
    assert [link.uri for link in queued.log_links] == [f"https://{HOST}/#job/4242/run/9"]
    assert odd.phase == Phase.RUNNING and "HIBERNATING" in odd.message
    assert [link.uri for link in odd.log_links] == [f"https://{HOST}/#job/4242/run/9"]
    assert workspace.of("/api/2.2/jobs/runs/get")[0].params == {"run_id": ["9"]}


async def test_oauth_m2m_fetches_a_token_once_and_uses_it(workspace: HttpTestServer, secrets: Path) -> None:
    (secrets / "dbx-client-id").write_text("client-1")
    (secrets / "dbx-client-secret").write_text("s3cr3t-client")
    workspace.route("/oidc/v1/token", Answer(json={"access_token": "oauth-token-1", "expires_in": 3600}))
    workspace.route("/api/2.2/jobs/runs/submit", Answer(json={"run_id": 12}))
    workspace.route("/api/2.2/jobs/runs/get", Answer(json={"run_id": 12, "state": {"life_cycle_state": "RUNNING"}}))
    oauth = {"oauth_client_id_secret": "dbx-client-id", "oauth_client_secret_secret": "dbx-client-secret"}
    async with service({"default": instance(workspace.base, **oauth)}) as svc:
        template, _ = rendered(fixture("fk_v2_oauth"))
        meta = await create_task(svc, template, inputs_of("fk_v2_oauth"))
        assert (await get_task(svc, meta, "databricks")).phase == Phase.RUNNING
    assert meta_fields(meta)["auth_type"] == "oauth_m2m"
    [token_call] = workspace.of("/oidc/v1/token")
    assert token_call.body == b"grant_type=client_credentials&scope=all-apis"
    assert token_call.headers["authorization"].startswith("Basic ")
    calls = workspace.of("/api/2.2/jobs/runs/submit") + workspace.of("/api/2.2/jobs/runs/get")
    assert [c.headers["authorization"] for c in calls] == ["Bearer oauth-token-1"] * 2
    assert b"oauth-token-1" not in open_meta(meta).meta


async def test_a_workspace_nobody_answers_on_is_unavailable(secrets: Path) -> None:
    with HttpTestServer() as server:
        closed = server.base  # stopped when the block ends: nothing listens there any more
    async with service({"default": instance(closed)}) as svc:
        template, _ = rendered(fixture("fk_v2_existing_cluster"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"instances": {"default": {"host": HOST, "endpoint": "http://127.0.0.1:1"}}}, "allow_http"),
        ({"instances": {"default": {"host": HOST, "auth_type": "oauth_m2m"}}}, "oauth_client_id_secret"),
        ({"instances": {"default": {"host": "https://x.example.com/path"}}}, "is not a host name"),
        ({"instances": {"a/b/c": {"host": HOST}}}, "is not 'default'"),
    ],
)
async def test_settings_that_cannot_work_stop_the_service_at_start_up(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(RegistryError, match=problem):
        async with run_service(CONNECTORS, entry_points=False, plugins={"databricks": settings}):
            pass


def test_the_bundled_entry_points_register_both_task_types() -> None:
    registry = ConnectorRegistry.build()
    for name in ("databricks", "spark"):
        entry = registry.lookup(TaskCategory(name, 0))
        assert not entry.is_sync and entry.connector.settings_key == "databricks"


async def test_flyte_2_over_its_own_protocol_uses_the_operators_token(workspace: HttpTestServer) -> None:
    """Flyte 2's executor sends ``connection.secrets`` built from ``custom.secrets``: today the secret's *name*."""
    from flyteidl2.connector import connector_pb2 as v2
    from flyteidl2.connector import service_pb2_grpc as v2_grpc
    from flyteidl2.core import security_pb2
    from flyteidl2.core import tasks_pb2 as v2_tasks
    from flyteidl2.task import common_pb2 as v2_common

    workspace.route("/api/2.2/jobs/runs/submit", Answer(json={"run_id": 31}))
    run = {"job_id": 8, "run_id": 31, "state": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}}
    workspace.route("/api/2.2/jobs/runs/get", Answer(json=run))
    template, _ = rendered(fixture("f2_databricks"))
    connection = security_pb2.Connection(secrets={"databricks_token": "databricks_token"})
    async with service({"default": instance(workspace.base)}) as svc:
        stub = v2_grpc.AsyncConnectorServiceStub(svc.channel)
        created = await stub.CreateTask(
            v2.CreateTaskRequest(
                template=v2_tasks.TaskTemplate.FromString(template.SerializeToString()),
                inputs=v2_common.Inputs.FromString((DATABRICKS / "f2_databricks_inputs.pb").read_bytes()),
                output_prefix="s3://b/o",
                connection=connection,
            ),
            timeout=10,
        )
        category = v2.TaskCategory(name="databricks", version=0)
        got = await stub.GetTask(
            v2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta, connection=connection),
            timeout=10,
        )
    assert got.resource.phase == execution_pb2.TaskExecution.SUCCEEDED
    assert [link.uri for link in got.resource.log_links] == [f"https://{HOST}/#job/8/run/31"]
    calls = workspace.of("/api/2.2/jobs/runs/submit") + workspace.of("/api/2.2/jobs/runs/get")
    assert [c.headers["authorization"] for c in calls] == [f"Bearer {TOKEN}"] * 2
    [submitted] = workspace.of("/api/2.2/jobs/runs/submit")
    assert submitted.json()["tasks"][0]["spark_python_task"]["python_file"] == "flyteplugins/databricks/entrypoint.py"


async def test_a_redirect_is_failed_precondition_naming_the_setting(workspace: HttpTestServer) -> None:
    workspace.route("/api/2.2/jobs/runs/submit", Answer(status=302, headers={"Location": "https://login.example/"}))
    async with service({"default": instance(workspace.base)}) as svc:
        template, _ = rendered(fixture("fk_v2_existing_cluster"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("fk_v2_existing_cluster"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "plugins.databricks.instances.default" in (caught.value.details() or "")


async def test_a_spark_on_kubernetes_task_is_refused_saying_where_it_belongs(secrets: Path) -> None:
    template, _ = rendered(fixture("fk_spark_deprecated"))
    template.custom.Clear()
    template.custom.update({"sparkConf": {"spark.driver.memory": "1g"}, "mainApplicationFile": "local:///x.py"})
    async with service({"default": instance("https://unused.invalid")}) as svc:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_task(svc, template, inputs_of("fk_spark_deprecated"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "custom.databricksConf is missing" in (caught.value.details() or "")
    assert "default-for-task-types" in (caught.value.details() or "")


async def test_a_run_started_by_flytekits_connector_is_followed_with_the_operators_token(
    workspace: HttpTestServer,
) -> None:
    """A switch-over from ``pyflyte serve connector``: its metas are plain JSON holding the token itself."""
    flytekit_meta = (DATABRICKS / "fk_resource_meta.json").read_bytes()
    run = {"job_id": 3, "run_id": 31, "state": {"life_cycle_state": "RUNNING"}}
    workspace.route("/api/2.2/jobs/runs/get", Answer(json=run))
    workspace.route("/api/2.2/jobs/runs/cancel", Answer(json={}))
    async with service({"default": instance(workspace.base)}) as svc:
        got = await get_task(svc, flytekit_meta, "databricks")
        await delete_task(svc, flytekit_meta, "databricks")
    assert got.phase == Phase.RUNNING
    calls = workspace.of("/api/2.2/jobs/runs/get") + workspace.of("/api/2.2/jobs/runs/cancel")
    assert [c.headers["authorization"] for c in calls] == [f"Bearer {TOKEN}"] * 2  # never the meta's token
    assert workspace.of("/api/2.2/jobs/runs/cancel")[0].json() == {"run_id": 31}
