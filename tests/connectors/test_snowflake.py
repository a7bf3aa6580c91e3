"""The ``snowflake`` connector over gRPC, against fakesnow's server (a real process on loopback).

Templates and inputs are what flytekitplugins-snowflake 1.16.31 and flyteplugins-snowflake
2.12.1 serialize (``tests/fixtures/make_snowflake_fixtures.py``). The service talks to fakesnow
with the real snowflake-connector-python and key-pair auth. fakesnow runs queries
synchronously and has no cancel: the cancel call is checked with a recording fake at the client
boundary (``test_delete_cancels_with_the_query_id_bound``), and the statuses fakesnow cannot
show (QUEUED, RESUMING_WAREHOUSE, BLOCKED...) by the mapping's unit tests
(``test_snowflake_states.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, identifier_pb2, literals_pb2, tasks_pb2
from google.protobuf import json_format

from connector_service import ConnectorTestHarness, RegistryError
from connectors.snowflake import SnowflakeConnector, SnowflakeSettings
from connectors.snowflake._client import SnowflakeClient
from tests import tool_venv
from tests.connectors.snowflake_emulator import TOOL, fakesnow, make_emulator, private_key_pem  # noqa: F401
from tests.emulator import Emulator
from tests.utils import ENV, FIXTURES, Remote, Running, Stubs, delete_task, get_task, run_service, serve_process

TOOLS = (TOOL,)
"""Built before the tests run (``tests/conftest.py``)."""

# Without the conftest hook (a single test), the first test builds fakesnow's venv in its set-up.
pytestmark = pytest.mark.timeout(tool_venv.BUILD_TIMEOUT + 120)

Phase = execution_pb2.TaskExecution
SNOWFLAKE = FIXTURES / "snowflake"
CONNECTORS = ("connectors.snowflake:SnowflakeConnector",)
TERMINAL = {Phase.SUCCEEDED, Phase.FAILED, Phase.RETRYABLE_FAILED, Phase.ABORTED}
ACCOUNT = {"account": "myorg-analytics", "user": "FLYTE_RUNNER"}


def template(stem: str) -> tasks_pb2.TaskTemplate:
    return tasks_pb2.TaskTemplate.FromString((SNOWFLAKE / f"{stem}_template.pb").read_bytes())


def inputs(stem: str) -> literals_pb2.LiteralMap:
    return literals_pb2.LiteralMap.FromString((SNOWFLAKE / f"{stem}_inputs.pb").read_bytes())


def execution(project: str = "fixtures", domain: str = "development", name: str = "run1", attempt: int = 0) -> Any:
    wf = identifier_pb2.WorkflowExecutionIdentifier(project=project, domain=domain, name=name)
    return agent_pb2.TaskExecutionMetadata(
        task_execution_id=identifier_pb2.TaskExecutionIdentifier(
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(node_id="n0", execution_id=wf),
            retry_attempt=attempt,
        )
    )


async def create(
    svc: Stubs, tmpl: tasks_pb2.TaskTemplate, values: literals_pb2.LiteralMap | None = None, metadata: Any = None
) -> bytes:
    """CreateTask with propeller's task execution metadata (which picks the team's account entry)."""
    request = agent_pb2.CreateTaskRequest(
        template=tmpl,
        inputs=values or literals_pb2.LiteralMap(),
        output_prefix="s3://bucket/prefix",
        task_execution_metadata=metadata or execution(),
    )
    return bytes((await svc.async_stub.CreateTask(request, timeout=15)).resource_meta)


async def finish(svc: Stubs, meta: bytes) -> agent_pb2.Resource:
    """Poll until a terminal phase (fakesnow's queries are done at submission)."""
    for _ in range(50):
        resource = await get_task(svc, meta, "snowflake")
        if resource.phase in TERMINAL:
            return resource
        await asyncio.sleep(0.1)
    raise AssertionError(f"no terminal phase: {resource}")


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def plugins_for(emulator: Emulator, **changes: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "accounts": {"default": dict(ACCOUNT)},
        "host": "127.0.0.1",
        "port": emulator.port,
        "protocol": "http",
        "connect_timeout": 5,
        "call_timeout": 5,
    }
    settings.update(changes)
    return {"snowflake": settings}


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch, private_key_pem: str) -> str:  # noqa: F811
    monkeypatch.setenv("_FSEC_SNOWFLAKE_PRIVATE_KEY", private_key_pem)
    return private_key_pem


@pytest.fixture
async def svc(fakesnow: Emulator, secret: str) -> AsyncIterator[Running]:  # noqa: F811
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins_for(fakesnow)) as running:
        yield running


def results_uri(resource: agent_pb2.Resource) -> str:
    return str(resource.outputs.literals["results"].scalar.structured_dataset.uri)


def fetch(emulator: Emulator, query_id: str, pem: str) -> list[tuple[Any, ...]]:
    """The rows of a finished query, read back with a client of our own (what a downstream task sees)."""
    import snowflake.connector
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem.encode(), password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    conn = snowflake.connector.connect(
        account="myorg-analytics",
        user="FLYTE_RUNNER",
        private_key=der,
        database="FLYTE_DB",
        schema="PUBLIC",
        host="127.0.0.1",
        port=emulator.port,
        protocol="http",
        login_timeout=10,
    )
    try:
        cursor = conn.cursor()
        cursor.get_results_from_sfqid(query_id)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        conn.close()


# --------------------------------------------------------------------------- success


async def test_flytekit_query_binds_inputs_and_returns_results(svc: Running, fakesnow: Emulator, secret: str) -> None:  # noqa: F811
    meta = await create(svc, template("flytekit_query"), inputs("flytekit_query"))
    resource = await finish(svc, meta)
    assert resource.phase == Phase.SUCCEEDED, resource.message
    uri = results_uri(resource)
    query_id = uri.rsplit("/", 1)[1]
    assert uri == f"snowflake://FLYTE_RUNNER:myorg-analytics/COMPUTE_WH/FLYTE_DB/PUBLIC/{query_id}"
    # The literal is the one flytekit's own connector returns (same type metadata), for this query id.
    expected = json.loads((SNOWFLAKE / "flytekit_results.json").read_text())["literal"]
    expected["scalar"]["structuredDataset"]["uri"] = uri
    assert json_format.MessageToDict(resource.outputs.literals["results"]) == expected
    [link] = resource.log_links
    assert link.uri == f"https://app.snowflake.com/myorg/analytics/#/compute/history/queries/{query_id}/detail"
    # Bound, not formatted: the values come back typed, and '100%%' is a literal '100%'.
    rows = await asyncio.to_thread(fetch, fakesnow, query_id, secret)
    day, following, ok, since, pct = rows[0]
    assert (day, following, ok, pct) == ("2024-01-01", 42, True, "100%")
    assert since.isoformat().startswith("2024-01-01T06:30:00")
    # DeleteTask of a finished query is fine, and repeatable (fakesnow has no SYSTEM$CANCEL_QUERY: it refuses).
    await delete_task(svc, meta, "snowflake")
    await delete_task(svc, meta, "snowflake")


async def test_an_input_cannot_change_the_statement(svc: Running, fakesnow: Emulator, secret: str) -> None:  # noqa: F811
    tmpl = template("flytekit_query")
    values = inputs("flytekit_query")
    hostile = "x' AS day, 1 AS next, TRUE AS ok, NULL AS since, '' AS pct; DROP TABLE t; --"
    values.literals["day"].scalar.primitive.string_value = hostile
    resource = await finish(svc, await create(svc, tmpl, values))
    assert resource.phase == Phase.SUCCEEDED, resource.message
    rows = await asyncio.to_thread(fetch, fakesnow, results_uri(resource).rsplit("/", 1)[1], secret)
    assert rows[0][0] == hostile


async def test_flyte2_template_reads_settings_from_custom(svc: Running) -> None:
    resource = await finish(svc, await create(svc, template("flyte2_query"), inputs("flyte2_query")))
    assert resource.phase == Phase.SUCCEEDED, resource.message
    query_id = results_uri(resource).rsplit("/", 1)[1]
    # flyteplugins-snowflake's DataFrame reader splits user/account/warehouse/database/schema/query id on '/'.
    assert results_uri(resource) == f"snowflake://FLYTE_RUNNER/myorg-analytics/COMPUTE_WH/FLYTE_DB/PUBLIC/{query_id}"


async def test_flyte2_executor_over_v2_with_the_key_in_the_connection(
    fakesnow: Emulator,  # noqa: F811
    private_key_pem: str,  # noqa: F811
) -> None:
    """Flyte 2's executor: flyteidl2 services, inputs as name/literal pairs, the key in ``connection.secrets``."""
    from flyteidl2.connector import connector_pb2 as v2
    from flyteidl2.connector import service_pb2_grpc as v2_grpc
    from flyteidl2.core import security_pb2
    from flyteidl2.core import tasks_pb2 as v2_tasks
    from flyteidl2.task import common_pb2 as v2_common

    connection = security_pb2.Connection(secrets={"snowflake_private_key": private_key_pem})
    category = v2.TaskCategory(name="snowflake", version=0)
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins_for(fakesnow)) as running:
        stub = v2_grpc.AsyncConnectorServiceStub(running.channel)
        created = await stub.CreateTask(
            v2.CreateTaskRequest(
                template=v2_tasks.TaskTemplate.FromString((SNOWFLAKE / "flyte2_query_template.pb").read_bytes()),
                inputs=v2_common.Inputs.FromString((SNOWFLAKE / "flyte2_query_inputs.pb").read_bytes()),
                output_prefix="s3://bucket/prefix",
                connection=connection,
            ),
            timeout=15,
        )
        got = await stub.GetTask(
            v2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta, connection=connection),
            timeout=15,
        )
    assert got.resource.phase == Phase.SUCCEEDED, got.resource.message
    [named] = got.resource.outputs.literals
    assert named.name == "results"
    assert named.value.scalar.structured_dataset.uri.startswith("snowflake://FLYTE_RUNNER/myorg-analytics/")
    assert private_key_pem.encode()[40:80] not in created.resource_meta


async def test_no_declared_output_means_no_outputs(svc: Running) -> None:
    resource = await finish(svc, await create(svc, template("flytekit_plain")))
    assert resource.phase == Phase.SUCCEEDED, resource.message
    assert not resource.outputs.literals
    assert resource.log_links and "/#/compute/history/queries/" in resource.log_links[0].uri


# --------------------------------------------------------------------------- failures


async def test_bad_sql_fails_with_snowflakes_message(svc: Running) -> None:
    tmpl = template("flytekit_plain")
    tmpl.sql.statement = "SELEC nonsense FROM nowhere"
    meta = await create(svc, tmpl)
    resource = await get_task(svc, meta, "snowflake")
    assert resource.phase == Phase.FAILED
    assert "Snowflake refused the query" in resource.message
    assert "Unexpected token" in resource.message  # fakesnow's (Snowflake's) own words
    await delete_task(svc, meta, "snowflake")  # nothing to cancel: fine


async def test_missing_object_fails_with_snowflakes_message(svc: Running) -> None:
    tmpl = template("flytekit_plain")
    tmpl.sql.statement = "SELECT * FROM no_such_table"
    resource = await finish(svc, await create(svc, tmpl))
    assert resource.phase == Phase.FAILED
    assert "no_such_table" in resource.message.lower()


async def test_bad_templates_are_invalid_argument_naming_the_field(svc: Running) -> None:
    tmpl = template("flytekit_query")
    del tmpl.config["user"]
    error = await rpc_error(create(svc, tmpl, inputs("flytekit_query")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.user" in error.details()

    tmpl = template("flytekit_query")
    tmpl.sql.statement = "SELECT %(nope)s"
    error = await rpc_error(create(svc, tmpl, inputs("flytekit_query")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "%(nope)s" in error.details()

    tmpl = template("flyte2_query")
    tmpl.custom["connection_kwargs"]["host"] = "evil.example"
    error = await rpc_error(create(svc, tmpl, inputs("flyte2_query")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "connection_kwargs.host" in error.details()

    error = await rpc_error(
        get_task(
            svc,
            json.dumps(
                {
                    "query_id": "x",
                    "account": "a",
                    "user": "u",
                    "database": "d",
                    "schema": "s",
                    "warehouse": "w",
                    "has_output": False,
                }
            ).encode(),
            "snowflake",
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_refused_account_and_unconfigured_team(fakesnow: Emulator, secret: str) -> None:  # noqa: F811
    accounts = {"fixtures/development": dict(ACCOUNT), "other": {"account": "otherorg-x", "user": "FLYTE_RUNNER"}}
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins_for(fakesnow, accounts=accounts)) as svc:
        # The team's entry allows myorg-analytics only: a template naming another account is refused.
        tmpl = template("flytekit_query")
        tmpl.config["account"] = "otherorg-x"
        error = await rpc_error(create(svc, tmpl, inputs("flytekit_query")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "config.account 'otherorg-x'" in error.details()
        assert "plugins.snowflake.accounts.fixtures/development" in error.details()
        # Another user than the key's is refused too.
        tmpl = template("flytekit_query")
        tmpl.config["user"] = "ADMIN"
        error = await rpc_error(create(svc, tmpl, inputs("flytekit_query")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "config.user 'ADMIN'" in error.details()
        # A team with no entry (and no default) runs nothing.
        error = await rpc_error(create(svc, template("flytekit_plain"), metadata=execution(project="nobody")))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "plugins.snowflake.accounts has no entry for project/domain nobody/development" in error.details()
        # The configured team's tasks run.
        resource = await finish(svc, await create(svc, template("flytekit_plain")))
        assert resource.phase == Phase.SUCCEEDED, resource.message


async def test_bad_key_is_failed_precondition_naming_the_secret(
    fakesnow: Emulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = "-----BEGIN PRIVATE KEY-----\nTOPSECRETVALUE\n-----END PRIVATE KEY-----"
    monkeypatch.setenv("_FSEC_TEAM_KEY", value)
    accounts = {"default": {**ACCOUNT, "private_key_secret": "team_key"}}
    async with run_service(CONNECTORS, entry_points=False, plugins=plugins_for(fakesnow, accounts=accounts)) as svc:
        error = await rpc_error(create(svc, template("flytekit_plain")))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'team_key'" in error.details()
        assert "TOPSECRETVALUE" not in error.details()
        monkeypatch.delenv("_FSEC_TEAM_KEY")
        error = await rpc_error(create(svc, template("flytekit_plain")))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "team_key" in error.details()


# --------------------------------------------------------------------------- idempotency, restarts, concurrency


async def test_recreate_starts_a_second_query_as_documented(svc: Running) -> None:
    """Snowflake takes no idempotency token: a retried CreateTask runs the query again (README says so)."""
    first = await create(svc, template("flytekit_query"), inputs("flytekit_query"), execution(name="same"))
    second = await create(svc, template("flytekit_query"), inputs("flytekit_query"), execution(name="same"))
    done = [await finish(svc, meta) for meta in (first, second)]
    assert [r.phase for r in done] == [Phase.SUCCEEDED, Phase.SUCCEEDED]
    assert results_uri(done[0]) != results_uri(done[1])


async def test_emulator_down_is_unavailable_then_the_service_resumes(
    tmp_path: Path,
    secret: str,  # noqa: F811
) -> None:
    emulator = make_emulator(tmp_path)
    with emulator:
        plugins = plugins_for(emulator, no_data_grace=0, call_timeout=3, connect_timeout=3)
        async with run_service(CONNECTORS, entry_points=False, plugins=plugins) as svc:
            before = await create(svc, template("flytekit_plain"))
            assert (await finish(svc, before)).phase == Phase.SUCCEEDED
            emulator.stop()
            for call in (
                get_task(svc, before, "snowflake"),
                create(svc, template("flytekit_plain")),
                delete_task(svc, before, "snowflake", timeout=10),
            ):
                error = await rpc_error(call)
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            emulator.start()  # same port, empty: it has forgotten every query
            resource = None
            for _ in range(5):  # the first call may still meet the old session
                try:
                    resource = await get_task(svc, before, "snowflake")
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert resource is not None
            # A query Snowflake has no record of (past no_data_grace) is retried by propeller, not lost silently.
            assert resource.phase == Phase.RETRYABLE_FAILED
            assert "no record" in resource.message
            after = await finish(svc, await create(svc, template("flytekit_query"), inputs("flytekit_query")))
            assert after.phase == Phase.SUCCEEDED, after.message


async def test_concurrent_tasks_on_the_default_loop_share_one_session(
    fakesnow: Emulator,  # noqa: F811
    secret: str,
    tmp_path: Path,
) -> None:
    """The daemon as operators run it (its own process, uvloop): 30 tasks at once, one Snowflake session."""
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"plugins": plugins_for(fakesnow)}))
    env = {**ENV, "_FSEC_SNOWFLAKE_PRIVATE_KEY": secret}
    args = ("--connector", CONNECTORS[0], "--no-entry-points", "--log-level", "error", "--config-file", str(config))
    tmpl = template("flytekit_query")
    tmpl.config["database"] = "CONCURRENT_DB"
    async with serve_process(*args, env=env) as served, grpc.aio.insecure_channel(served.address) as channel:
        svc = Remote(channel)
        metas = await asyncio.gather(
            *(create(svc, tmpl, inputs("flytekit_query"), execution(name=f"c{i}")) for i in range(30))
        )
        done = await asyncio.gather(*(finish(svc, meta) for meta in metas))
    assert {r.phase for r in done} == {Phase.SUCCEEDED}, [r.message for r in done if r.phase != Phase.SUCCEEDED][:3]
    assert len({results_uri(r) for r in done}) == 30
    logins = [
        line
        for line in fakesnow.log.read_text().splitlines()
        if "Session login" in line and "concurrent_db" in line.lower()
    ]
    assert len(logins) == 1, logins


async def test_flytekit_meta_from_before_a_switch_over(svc: Running) -> None:
    """flytekit's connector stored this meta; the query is unknown to the emulator, so it waits (NO_DATA)."""
    resource = await get_task(svc, (SNOWFLAKE / "flytekit_meta.json").read_bytes(), "snowflake")
    assert resource.phase == Phase.QUEUED
    assert "NO_DATA" in resource.message
    assert resource.log_links[0].uri.startswith("https://app.snowflake.com/myorg/analytics/")


# --------------------------------------------------------------------------- the client boundary


class _Recorder:
    """A snowflake-connector-python connection stand-in: records what the connector sends."""

    def __init__(self, statuses: list[str]) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.statuses = statuses
        self.rest = self

    def cursor(self) -> _Recorder:
        return self

    def execute_async(self, sql: str, params: Any = None, _statement_params: Any = None) -> None:
        self.calls.append(("execute_async", sql, (params, _statement_params)))
        self.sfqid = "01b2c3d4-0000-1111-0000-00000000abcd"

    def execute(self, sql: str, params: Any = None) -> None:
        self.calls.append(("execute", sql, params))

    def fetchall(self) -> list[tuple[str]]:
        return [("Identified SQL statement is not currently executing.",)]

    def request(self, url: str, method: str, client: str) -> dict[str, Any]:
        self.calls.append(("request", url, method))
        status = self.statuses.pop(0)
        return {"data": {"queries": [{"status": status}]}, "success": True}

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(secret: str) -> Iterator[tuple[ConnectorTestHarness, _Recorder, list[dict[str, Any]]]]:
    recorder = _Recorder(["RUNNING", "SOMETHING_NEW", "SOMETHING_NEW"])
    logins: list[dict[str, Any]] = []

    def connect(**kwargs: Any) -> _Recorder:
        logins.append(kwargs)
        return recorder

    connector = SnowflakeConnector()
    settings = SnowflakeSettings(accounts={"default": ACCOUNT}, host="snowflake.internal", port=8443)
    connector.configure(settings)
    connector.use_client(SnowflakeClient(settings, connect=connect))
    yield ConnectorTestHarness(connector), recorder, logins


async def test_delete_cancels_with_the_query_id_bound(recorded: Any) -> None:
    harness, recorder, logins = recorded
    meta = await harness.create(
        template("flytekit_query"), inputs("flytekit_query"), task_execution_metadata=execution(name="exec7", attempt=2)
    )
    await harness.delete(meta)
    await harness.delete(meta)  # idempotent
    kind, sql, (params, statement_params) = recorder.calls[0]
    assert sql == "SELECT ? AS day, ? + 1 AS next, ? AS ok, ? AS since, '100%' AS pct"
    assert params[:3] == ["2024-01-01", 41, True] and params[3][0] == "TIMESTAMP_TZ"
    assert statement_params == {"QUERY_TAG": "flyte:fixtures/development/exec7/n0/2"}
    cancels = [call for call in recorder.calls if call[0] == "execute"]
    assert cancels == [("execute", "SELECT SYSTEM$CANCEL_QUERY(?)", ["01b2c3d4-0000-1111-0000-00000000abcd"])] * 2
    [login] = logins  # one session for all three calls
    assert (login["host"], login["port"], login["paramstyle"]) == ("snowflake.internal", 8443, "qmark")
    assert isinstance(login["private_key"], bytes) and b"PRIVATE" not in login["private_key"]


async def test_unknown_status_is_running_and_logged_once(recorded: Any, caplog: pytest.LogCaptureFixture) -> None:
    harness, _, _ = recorded
    meta = await harness.create(template("flytekit_plain"))
    assert (await harness.get(meta)).phase == Phase.RUNNING
    with caplog.at_level(logging.WARNING, logger="connectors.snowflake.states"):
        first, second = await harness.get(meta), await harness.get(meta)
    assert first.phase == second.phase == Phase.RUNNING
    assert "SOMETHING_NEW" in first.message
    assert len([r for r in caplog.records if "SOMETHING_NEW" in r.getMessage()]) == 1


async def test_an_ended_session_is_made_again_once(secret: str) -> None:
    """Snowflake ends idle sessions (390112): the call logs in again and is retried once, not failed."""
    from snowflake.connector import errors

    sessions: list[_Recorder] = []

    def connect(**kwargs: Any) -> _Recorder:
        session = _Recorder(["RUNNING", "SUCCESS"])
        if not sessions:

            def expired(url: str, method: str, client: str) -> dict[str, Any]:
                raise errors.ProgrammingError(
                    msg="Session no longer exists.  New login required to access the service.", errno=390112
                )

            session.request = expired  # type: ignore[method-assign]
        sessions.append(session)
        return session

    connector = SnowflakeConnector()
    settings = SnowflakeSettings(accounts={"default": ACCOUNT})
    connector.configure(settings)
    connector.use_client(SnowflakeClient(settings, connect=connect))
    harness = ConnectorTestHarness(connector)
    meta = await harness.create(template("flytekit_plain"))
    assert (await harness.get(meta)).phase == Phase.RUNNING
    assert (await harness.get(meta)).phase == Phase.SUCCEEDED
    assert len(sessions) == 2


@pytest.mark.parametrize(
    ("plugins", "expected"),
    [
        (
            {"accounts": {"default": {"account": "bad account!", "user": "U"}}},
            "plugins.snowflake.accounts.default.account",
        ),
        ({"accounts": {"a/b/c": dict(ACCOUNT)}}, "plugins.snowflake.accounts"),
        ({"port": 8080}, "needs a host"),
        ({"acounts": {}}, "plugins.snowflake.acounts"),
    ],
)
async def test_bad_settings_stop_the_start(plugins: dict[str, Any], expected: str) -> None:
    with pytest.raises(RegistryError) as info:
        async with run_service(CONNECTORS, entry_points=False, plugins={"snowflake": plugins}):
            pass
    assert expected in str(info.value)
