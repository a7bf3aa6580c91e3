"""SqlSensor end to end: flytekit-made templates over gRPC, a real PostgreSQL server and a real SQLite file.

The PostgreSQL server (``tests/postgres.py``) is started once per session; the sensor logs in
as ``reader`` with a scram-sha-256 password that reaches it only through ``get_secret``. The
reader may write to the tables, so the read-only tests test the sensor, not the role.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import sqlite3
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2
from google.protobuf import json_format

from connector_service import ConnectorRegistry, RegistryError
from sensors.sql_sensor import APPLICATION_NAME, is_truthy
from tests.postgres import PostgresServer, postgres  # noqa: F401
from tests.utils import ENV, FIXTURES, Running, create_task, free_port, get_task, run_cli, run_service

Phase = execution_pb2.TaskExecution
SQL_SENSOR = "sensors.sql_sensor:SqlSensor"
SECRET = "warehouse_password"
SECRET_ENV = "_FSEC_WAREHOUSE_PASSWORD"

create = create_task
get = functools.partial(get_task, name="sensor")
FLYTEKIT = FIXTURES / "flytekit"


# -- the flytekit tasks --------------------------------------------------------------------------


def flytekit_task(stem: str, **config: Any) -> tuple[tasks_pb2.TaskTemplate, literals_pb2.LiteralMap]:
    """A template and inputs flytekit made; ``config`` changes its sensor_config (None removes a key)."""
    template = tasks_pb2.TaskTemplate.FromString((FLYTEKIT / f"{stem}_template.pb").read_bytes())
    inputs = literals_pb2.LiteralMap.FromString((FLYTEKIT / f"{stem}_inputs.pb").read_bytes())
    if config:
        custom = json_format.MessageToDict(template.custom)
        sensor_config = dict(custom["sensor_config"])
        for key, value in config.items():
            if value is None:
                sensor_config.pop(key, None)
            else:
                sensor_config[key] = value
        custom["sensor_config"] = sensor_config
        template.custom.Clear()
        template.custom.update(custom)
    return template, inputs


def pg_task(table: str, **config: Any) -> tuple[tasks_pb2.TaskTemplate, literals_pb2.LiteralMap]:
    """flytekit's PostgreSQL SqlSensor (``... FROM events WHERE day = $1 AND source = $2``) on ``table``."""
    template, inputs = flytekit_task("sql_sensor_pg", **config)
    if "sql" not in config:
        sensor_config = template.custom.fields["sensor_config"].struct_value
        sql = sensor_config.fields["sql"].string_value
        assert sql == "SELECT count(*) > 0 FROM events WHERE day = $1 AND source = $2"
        sensor_config.fields["sql"].string_value = sql.replace("events", table)
    return template, inputs


def string_parameters(*values: str) -> literals_pb2.LiteralMap:
    """flytekit's inputs for ``parameters: list[str] | None`` with other strings."""
    inputs = literals_pb2.LiteralMap.FromString((FLYTEKIT / "sql_sensor_pg_inputs.pb").read_bytes())
    collection = inputs.literals["parameters"].scalar.union.value.collection
    assert [lit.scalar.primitive.string_value for lit in collection.literals] == ["2024-01-01", "web"]
    del collection.literals[:]
    for value in values:
        collection.literals.add().scalar.primitive.string_value = value
    return inputs


def no_parameters() -> literals_pb2.LiteralMap:
    return literals_pb2.LiteralMap.FromString((FLYTEKIT / "sql_sensor_named_inputs.pb").read_bytes())


async def poke(svc: Running, meta: bytes, timeout: float = 10) -> int:
    return (await get(svc, meta, timeout=timeout)).phase


async def refused(svc: Running, meta: bytes, timeout: float = 10) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get(svc, meta, timeout=timeout)
    return err.value.code(), err.value.details() or ""


async def refused_at_create(svc: Running, template: Any, inputs: Any) -> tuple[grpc.StatusCode, str]:
    """A task that can never succeed is refused by CreateTask, not on every poll."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(svc, template, inputs)
    return err.value.code(), err.value.details() or ""


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE jobs (name TEXT PRIMARY KEY, done INTEGER)")
        db.execute("INSERT INTO jobs VALUES ('weekly', 1)")
    yield path


def sqlite_add(path: Path, name: str, done: Any) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?)", (name, done))


def sqlite_count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


def settings(server: PostgresServer | None, sqlite_db: Path | None, **extra: Any) -> dict[str, Any]:
    connections: dict[str, Any] = {}
    if server is not None:
        connections["warehouse"] = {"url": server.url, "password_secret": SECRET}
    if sqlite_db is not None:
        connections["local"] = {"url": f"sqlite:///{sqlite_db}"}
    return {"sql_sensor": {"connections": connections, **extra}}


@contextlib.asynccontextmanager
async def serve(plugins: dict[str, Any]) -> AsyncIterator[Running]:
    async with run_service((SQL_SENSOR,), entry_points=False, plugins=plugins) as svc:
        yield svc


@pytest.fixture
async def svc(postgres: PostgresServer, sqlite_db: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:  # noqa: F811
    monkeypatch.setenv(SECRET_ENV, postgres.password)
    async with serve(settings(postgres, sqlite_db)) as running:
        yield running


@pytest.fixture
async def sqlite_svc(sqlite_db: Path) -> AsyncIterator[Running]:
    async with serve(settings(None, sqlite_db)) as running:
        yield running


@pytest.fixture
async def admin(postgres: PostgresServer) -> AsyncIterator[asyncpg.Connection]:  # noqa: F811
    conn = await postgres.admin()
    try:
        yield conn
    finally:
        conn.terminate()


@pytest.fixture
async def events(admin: asyncpg.Connection) -> AsyncIterator[str]:
    """A fresh ``events``-shaped table, with one row that matches nothing the tests wait for."""
    table = f"events_{uuid.uuid4().hex[:10]}"
    await admin.execute(f"CREATE TABLE {table} (day date, source text)")
    await admin.execute(f"INSERT INTO {table} VALUES ('2023-12-31', 'web')")
    yield table
    with contextlib.suppress(Exception):
        await admin.execute(f"DROP TABLE IF EXISTS {table}")


async def backends(admin: asyncpg.Connection, state: str | None = None) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
    if state is not None:
        return int(await admin.fetchval(query + " AND state = $2", APPLICATION_NAME, state))
    return int(await admin.fetchval(query, APPLICATION_NAME))


async def wait_for_backends(admin: asyncpg.Connection, expected: int, state: str | None = None) -> None:
    """Backends leave pg_stat_activity shortly after their client closes: wait (bounded) for it."""
    deadline = time.monotonic() + 10
    while (count := await backends(admin, state)) != expected:
        assert time.monotonic() < deadline, f"{count} sensor backend(s) ({state or 'any state'}), expected {expected}"
        await asyncio.sleep(0.05)


# -- PostgreSQL: the condition -------------------------------------------------------------------


async def test_postgres_not_yet_then_the_row_arrives(svc: Running, admin: asyncpg.Connection, events: str) -> None:
    meta = await create(svc, *pg_task(events))  # parameters ["2024-01-01", "web"], as flytekit sent them
    assert await poke(svc, meta) == Phase.RUNNING
    await admin.execute(f"INSERT INTO {events} VALUES ('2024-01-01', 'app')")  # right day, other source
    assert await poke(svc, meta) == Phase.RUNNING
    await admin.execute(f"INSERT INTO {events} VALUES ('2024-01-01', 'web')")
    done = await get(svc, meta)
    assert done.phase == Phase.SUCCEEDED
    assert "SqlSensor" in done.message


async def test_no_password_travels_in_the_meta(svc: Running, postgres: PostgresServer, events: str) -> None:  # noqa: F811
    meta = await create(svc, *pg_task(events))
    assert await poke(svc, meta) == Phase.RUNNING
    assert postgres.password.encode() not in meta
    assert b"warehouse" in meta and b"127.0.0.1" not in meta  # the name, never the address or login


async def test_parameters_are_bound_not_formatted(svc: Running, admin: asyncpg.Connection, events: str) -> None:
    attack = f"web'; DROP TABLE {events}; --"
    meta = await create(svc, pg_task(events)[0], string_parameters("2024-01-01", attack))
    assert await poke(svc, meta) == Phase.RUNNING
    assert await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", events)  # the table survived
    await admin.execute(f"INSERT INTO {events} VALUES ('2024-01-01', $1)", attack)
    assert await poke(svc, meta) == Phase.SUCCEEDED  # the text was compared as a value, quote and all


async def test_strings_and_json_numbers_take_the_parameter_types(
    svc: Running, admin: asyncpg.Connection, events: str
) -> None:
    await admin.execute(f"ALTER TABLE {events} ADD COLUMN n int, ADD COLUMN ok bool, ADD COLUMN at timestamptz")
    sql = f"SELECT count(*) FROM {events} WHERE n > $1 AND ok = $2 AND at >= $3 AND day = $4"
    template, _ = pg_task(events, sql=sql, parameters=[2, True, "2024-01-01T00:00:00Z", "2024-01-01"])
    meta = await create(svc, template, no_parameters())  # config numbers arrive as floats: 2.0
    assert await poke(svc, meta) == Phase.RUNNING
    await admin.execute(f"INSERT INTO {events} VALUES ('2024-01-01', 'x', 3, true, '2024-01-01 06:00+00')")
    assert await poke(svc, meta) == Phase.SUCCEEDED
    # Strings from a flytekit List[str] input are converted the same way.
    meta = await create(svc, template, string_parameters("2", "yes", "2024-01-01 00:00:00+00:00", "2024-01-01"))
    assert await poke(svc, meta) == Phase.SUCCEEDED


async def test_a_parameter_that_does_not_fit_its_type_names_it(svc: Running, events: str) -> None:
    meta = await create(svc, pg_task(events)[0], string_parameters("yesterday", "web"))
    code, details = await refused(svc, meta)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameter $1" in details and "date" in details


async def test_wrong_number_of_parameters(svc: Running, events: str) -> None:
    meta = await create(svc, pg_task(events)[0], string_parameters("2024-01-01"))
    code, details = await refused(svc, meta)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "takes 2 parameter(s)" in details and "1 given" in details


async def test_postgres_refuses_named_parameters(svc: Running, events: str) -> None:
    meta = await create(svc, pg_task(events, parameters={"day": "2024-01-01"})[0], no_parameters())
    code, details = await refused(svc, meta)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "positional" in details and "$1" in details


@pytest.mark.parametrize(
    ("expression", "done"),
    [
        ("false", False),
        ("true", True),
        ("NULL::int", False),
        ("0::numeric", False),
        ("0.5::numeric", True),
        ("'f'::text", False),
        ("'ready'::text", True),
        ("now()", True),
    ],
)
async def test_postgres_first_cell_truthiness(svc: Running, expression: str, done: bool) -> None:
    template, _ = pg_task("unused", sql=f"SELECT {expression}, 'ignored'")
    meta = await create(svc, template, no_parameters())
    assert await poke(svc, meta) == (Phase.SUCCEEDED if done else Phase.RUNNING)


# -- PostgreSQL: read-only and bounded -----------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM {t} RETURNING 1",
        "WITH gone AS (DELETE FROM {t} RETURNING 1) SELECT count(*) FROM gone",
        "INSERT INTO {t} VALUES ('2024-01-01', 'web') RETURNING 1",
        "UPDATE {t} SET source = 'x' RETURNING 1",
        "CREATE TABLE {t}_copy AS SELECT * FROM {t}",
        "SELECT 1; DELETE FROM {t}",
    ],
)
async def test_postgres_queries_cannot_write(svc: Running, admin: asyncpg.Connection, events: str, sql: str) -> None:
    template, _ = pg_task(events, sql=sql.format(t=events))
    meta = await create(svc, template, no_parameters())
    code, details = await refused(svc, meta)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert await admin.fetchval(f"SELECT array_agg(source) FROM {events}") == ["web"]  # unchanged
    assert await admin.fetchval("SELECT to_regclass($1)", f"{events}_copy") is None


async def test_a_query_cannot_turn_later_pokes_writable(svc: Running, admin: asyncpg.Connection, events: str) -> None:
    for sql in ("COMMIT", "SELECT set_config('default_transaction_read_only', 'off', false)"):
        template, _ = pg_task(events, sql=sql)
        await get(svc, await create(svc, template, no_parameters()))  # ends or changes its own transaction only
        template, _ = pg_task(events, sql=f"DELETE FROM {events} RETURNING 1")
        code, details = await refused(svc, await create(svc, template, no_parameters()))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "read-only transaction" in details
    assert await admin.fetchval(f"SELECT count(*) FROM {events}") == 1


async def test_statement_timeout_answers_running_and_stops_the_query(
    postgres: PostgresServer,  # noqa: F811
    admin: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, postgres.password)
    async with serve(settings(postgres, None, statement_timeout=0.3)) as svc:
        template, _ = pg_task("unused", sql="SELECT pg_sleep(30) IS NULL")
        meta = await create(svc, template, no_parameters())
        started = time.monotonic()
        resource = await get(svc, meta)
        assert resource.phase == Phase.RUNNING  # poked again on the next poll
        assert time.monotonic() - started < 10
        await wait_for_backends(admin, 0, state="active")


async def test_the_callers_deadline_cancels_the_query_on_the_server(
    svc: Running, admin: asyncpg.Connection, events: str
) -> None:
    # statement_timeout is 5 s by default; the caller gives the call 1 s.
    template, _ = pg_task(events, sql="SELECT pg_sleep(4) IS NULL")
    meta = await create(svc, template, no_parameters())
    resource = await get(svc, meta, timeout=1.0)
    assert resource.phase == Phase.RUNNING
    assert "did not finish" in resource.message
    await wait_for_backends(admin, 0, state="active")  # asyncpg cancelled it on the server
    assert await poke(svc, await create(svc, *pg_task(events))) == Phase.RUNNING  # and the pool still works


# -- PostgreSQL: errors --------------------------------------------------------------------------


async def test_unknown_connection_names_it_and_the_configured_ones(svc: Running) -> None:
    template, _ = pg_task("unused", connection="dwh")
    code, details = await refused_at_create(svc, template, no_parameters())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'dwh' is not configured (configured: local, warehouse)" in details


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC 1", "syntax error"),
        ("SELECT count(*) FROM no_such_table", 'relation "no_such_table" does not exist'),
        ("SELECT 1/0", "division by zero"),
    ],
)
async def test_sql_errors_carry_the_database_message(
    svc: Running,
    postgres: PostgresServer,  # noqa: F811
    sql: str,
    message: str,
) -> None:
    template, _ = pg_task("unused", sql=sql)
    meta = await create(svc, template, no_parameters())
    code, details = await refused(svc, meta)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details and "'warehouse'" in details
    assert postgres.password not in details


async def test_missing_secret_then_provided(
    postgres: PostgresServer,  # noqa: F811
    sqlite_db: Path,
    events: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.setenv("CONNECTOR_SECRETS_DIR", str(sqlite_db.parent / "secrets"))
    async with serve(settings(postgres, sqlite_db)) as svc:
        meta = await create(svc, *pg_task(events))
        code, details = await refused(svc, meta)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert f"secret {SECRET!r} not found" in details
        # The operator mounts the secret: the next poll works, no restart needed.
        (sqlite_db.parent / "secrets").mkdir()
        (sqlite_db.parent / "secrets" / SECRET).write_text(postgres.password + "\n")
        assert await poke(svc, meta) == Phase.RUNNING


async def test_wrong_password_is_a_clear_error_then_recovers(
    postgres: PostgresServer,  # noqa: F811
    sqlite_db: Path,
    events: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "not-the-" + postgres.password
    monkeypatch.setenv(SECRET_ENV, wrong)
    async with serve(settings(postgres, sqlite_db)) as svc:
        meta = await create(svc, *pg_task(events))
        code, details = await refused(svc, meta)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert 'password authentication failed for user "reader"' in details
        assert "password_secret" in details or SECRET in details
        assert wrong not in details and wrong not in caplog.text
        monkeypatch.setenv(SECRET_ENV, postgres.password)  # rotated: a new pool reads it again
        assert await poke(svc, meta) == Phase.RUNNING
    assert postgres.password not in caplog.text


async def test_server_stopped_mid_task_is_unavailable_then_recovers(
    svc: Running,
    postgres: PostgresServer,  # noqa: F811
    events: str,
) -> None:
    meta = await create(svc, *pg_task(events))
    assert await poke(svc, meta) == Phase.RUNNING  # the pool has a live session now
    postgres.stop()
    try:
        for _ in range(2):
            code, details = await refused(svc, meta)
            assert code == grpc.StatusCode.UNAVAILABLE
            assert "'warehouse'" in details and postgres.password not in details
    finally:
        postgres.start()
    admin = await postgres.admin()
    try:
        await admin.execute(f"INSERT INTO {events} VALUES ('2024-01-01', 'web')")
        assert await poke(svc, meta) == Phase.SUCCEEDED  # the same task, on a fresh pool
    finally:
        await admin.close()


async def test_restart_between_polls_costs_no_failed_poll(
    svc: Running,
    postgres: PostgresServer,  # noqa: F811
    events: str,
) -> None:
    meta = await create(svc, *pg_task(events))
    assert await poke(svc, meta) == Phase.RUNNING
    postgres.stop()
    postgres.start()
    # The pooled session died with the old server: the poke retries once on a new pool.
    assert await poke(svc, meta) == Phase.RUNNING


class ForgetfulProxy:
    """A TCP relay to PostgreSQL that can lose its connections' state, as a NAT or firewall does.

    After ``forget()`` the server side of every current connection is closed, but the client is
    not told: its session looks alive until it next sends, and that gets a reset (RST).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.forgotten: set[asyncio.StreamWriter] = set()
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ForgetfulProxy:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for client, server in self.links:
            client.close()
            server.close()
        await self._server.wait_closed()

    def forget(self) -> None:
        for client, server in self.links:
            self.forgotten.add(client)
            server.close()

    async def _link(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links.append((client_w, server_w))
        await asyncio.gather(
            self._pipe(client_r, server_w, client_w, upstream=True),
            self._pipe(server_r, client_w, client_w, upstream=False),
            return_exceptions=True,
        )

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, client: asyncio.StreamWriter, upstream: bool
    ) -> None:
        while data := await src.read(65536):
            if upstream and client in self.forgotten:
                sock = client.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.transport.abort()  # with linger 0: a reset
                return
            dst.write(data)
            await dst.drain()
        if client not in self.forgotten:
            dst.close()


async def test_a_silently_dead_pooled_session_is_replaced_within_the_poke(
    postgres: PostgresServer,  # noqa: F811
    events: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, postgres.password)
    async with ForgetfulProxy(postgres.port) as proxy:
        url = f"postgresql://{postgres.reader}@127.0.0.1:{proxy.port}/{postgres.database}"
        plugins = {"sql_sensor": {"connections": {"warehouse": {"url": url, "password_secret": SECRET}}}}
        async with serve(plugins) as svc:
            meta = await create(svc, *pg_task(events))
            assert await poke(svc, meta) == Phase.RUNNING
            proxy.forget()
            # The pooled session gets a reset on its next query; the poke retries on a new pool
            # instead of costing the task one of propeller's few failed polls.
            assert await poke(svc, meta) == Phase.RUNNING
            assert len(proxy.links) == 2


# -- PostgreSQL: the pool ------------------------------------------------------------------------


async def test_one_pool_is_made_reused_and_closed_at_shutdown(
    postgres: PostgresServer,  # noqa: F811
    admin: asyncpg.Connection,
    events: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, postgres.password)
    await wait_for_backends(admin, 0)  # nothing left over from other tests
    async with serve(settings(postgres, None)) as svc:
        assert await backends(admin) == 0  # start-up connects to nothing
        metas = [await create(svc, *pg_task(events)) for _ in range(3)]
        for meta in metas * 2:
            assert await poke(svc, meta) == Phase.RUNNING
        assert await backends(admin) == 1  # six pokes of three tasks: one session, reused
        pids = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME)
        assert await poke(svc, metas[0]) == Phase.RUNNING
        assert (
            await admin.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME) == pids
        )
    await wait_for_backends(admin, 0)  # close() closed the pool


# -- SQLite --------------------------------------------------------------------------------------


async def test_sqlite_not_yet_then_the_row_arrives(sqlite_svc: Running, sqlite_db: Path) -> None:
    meta = await create(sqlite_svc, *flytekit_task("sql_sensor_sqlite"))  # "... WHERE name = ?", ["nightly"]
    assert await poke(sqlite_svc, meta) == Phase.RUNNING
    sqlite_add(sqlite_db, "nightly", 0)
    assert await poke(sqlite_svc, meta) == Phase.RUNNING
    sqlite_add(sqlite_db, "nightly", 1)
    assert await poke(sqlite_svc, meta) == Phase.SUCCEEDED


async def test_sqlite_named_parameters_from_sensor_config(sqlite_svc: Running, sqlite_db: Path) -> None:
    meta = await create(sqlite_svc, *flytekit_task("sql_sensor_named"))  # ":name", {"name": "nightly"}
    assert await poke(sqlite_svc, meta) == Phase.RUNNING
    sqlite_add(sqlite_db, "nightly", "done")
    assert await poke(sqlite_svc, meta) == Phase.SUCCEEDED


async def test_the_input_replaces_the_configs_parameters(sqlite_svc: Running) -> None:
    template, inputs = flytekit_task("sql_sensor_sqlite", parameters=["weekly"])  # weekly is done
    assert await poke(sqlite_svc, await create(sqlite_svc, template, no_parameters())) == Phase.SUCCEEDED
    assert await poke(sqlite_svc, await create(sqlite_svc, template, inputs)) == Phase.RUNNING  # nightly


async def test_sqlite_parameters_are_bound_not_formatted(sqlite_svc: Running, sqlite_db: Path) -> None:
    attack = "x'; DROP TABLE jobs; --"
    template, _ = flytekit_task("sql_sensor_sqlite")
    meta = await create(sqlite_svc, template, string_parameters(attack))
    assert await poke(sqlite_svc, meta) == Phase.RUNNING
    assert sqlite_count(sqlite_db) == 1  # the table is still there
    sqlite_add(sqlite_db, attack, 1)
    assert await poke(sqlite_svc, meta) == Phase.SUCCEEDED


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM jobs",
        "DELETE FROM jobs RETURNING 1",
        "INSERT INTO jobs VALUES ('x', 1)",
        "UPDATE jobs SET done = 0",
        "CREATE TABLE t2 (a)",
        "DROP TABLE jobs",
        "SELECT 1; DELETE FROM jobs",
        "ATTACH DATABASE '{dir}/other.db' AS other",
        "PRAGMA journal_mode = WAL",
        "BEGIN IMMEDIATE",
    ],
)
async def test_sqlite_queries_cannot_write(sqlite_svc: Running, sqlite_db: Path, sql: str) -> None:
    template, _ = flytekit_task("sql_sensor_sqlite", sql=sql.format(dir=sqlite_db.parent))
    meta = await create(sqlite_svc, template, no_parameters())
    code, details = await refused(sqlite_svc, meta)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert sqlite_count(sqlite_db) == 1
    with contextlib.closing(sqlite3.connect(sqlite_db)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not (sqlite_db.parent / "other.db").exists()


@pytest.mark.parametrize(
    ("expression", "done"),
    [
        ("NULL", False),
        ("0", False),
        ("0.0", False),
        ("''", False),
        ("'0'", False),
        ("'false'", False),
        ("' F '", False),
        ("'no'", False),
        ("'off'", False),
        ("x''", False),
        ("1", True),
        ("-1", True),
        ("2.5", True),
        ("'yes'", True),
        ("'done'", True),
        ("'2024-01-01'", True),
        ("x'00'", True),
    ],
)
async def test_sqlite_first_cell_truthiness(sqlite_svc: Running, expression: str, done: bool) -> None:
    template, _ = flytekit_task("sql_sensor_sqlite", sql=f"SELECT {expression}, 1")
    meta = await create(sqlite_svc, template, no_parameters())
    assert await poke(sqlite_svc, meta) == (Phase.SUCCEEDED if done else Phase.RUNNING)


async def test_no_row_is_not_yet(sqlite_svc: Running) -> None:
    template, _ = flytekit_task("sql_sensor_sqlite", sql="SELECT 1 FROM jobs WHERE 0")
    assert await poke(sqlite_svc, await create(sqlite_svc, template, no_parameters())) == Phase.RUNNING


async def test_sqlite_statement_timeout(sqlite_db: Path) -> None:
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    async with serve(settings(None, sqlite_db, statement_timeout=0.2)) as svc:
        template, _ = flytekit_task("sql_sensor_sqlite", sql=forever)
        meta = await create(svc, template, no_parameters())
        started = time.monotonic()
        assert await poke(svc, meta) == Phase.RUNNING
        assert time.monotonic() - started < 5


async def test_the_callers_deadline_stops_the_sqlite_query(sqlite_db: Path) -> None:
    # Reads jobs for ever, holding SQLite's shared lock while it runs (statement_timeout: 60 s).
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c, jobs"
    async with serve(settings(None, sqlite_db, statement_timeout=60)) as svc:
        template, _ = flytekit_task("sql_sensor_sqlite", sql=forever)
        resource = await get(svc, await create(svc, template, no_parameters()), timeout=1.0)
        assert resource.phase == Phase.RUNNING
        assert "did not finish" in resource.message

        def write() -> None:  # needs every reader gone: the thread's query must have been interrupted
            with contextlib.closing(sqlite3.connect(sqlite_db, timeout=5, isolation_level=None)) as db:
                db.execute("BEGIN EXCLUSIVE")
                db.execute("INSERT INTO jobs VALUES ('after', 1)")
                db.execute("COMMIT")

        await asyncio.to_thread(write)
    assert sqlite_count(sqlite_db) == 2


@pytest.mark.parametrize(
    ("sql", "message"),
    [("SELEC 1", "syntax error"), ("SELECT * FROM no_such_table", "no such table: no_such_table")],
)
async def test_sqlite_sql_errors(sqlite_svc: Running, sql: str, message: str) -> None:
    template, _ = flytekit_task("sql_sensor_sqlite", sql=sql)
    code, details = await refused(sqlite_svc, await create(sqlite_svc, template, no_parameters()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details and "'local'" in details


async def test_url_options_the_client_refuses_are_a_settings_error(tmp_path: Path) -> None:
    url = "postgresql://reader@127.0.0.1:1/dw?sslmode=sometimes"
    async with serve({"sql_sensor": {"connections": {"warehouse": {"url": url}}}}) as svc:
        code, details = await refused(svc, await create(svc, *pg_task("unused")))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "plugins.sql_sensor.connections.warehouse.url cannot be used" in details and "sslmode" in details


async def test_unreachable_database_is_unavailable() -> None:
    url = f"postgresql://reader@127.0.0.1:{free_port()}/dw"  # nothing listens there
    async with serve({"sql_sensor": {"connections": {"warehouse": {"url": url}}}}) as svc:
        code, details = await refused(svc, await create(svc, *pg_task("unused")))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "'warehouse'" in details and "cannot be reached" in details


async def test_missing_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    async with serve({"sql_sensor": {"connections": {"local": {"url": f"sqlite:///{tmp_path}/none.db"}}}}) as svc:
        meta = await create(svc, *flytekit_task("sql_sensor_sqlite"))
        code, details = await refused(svc, meta)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "cannot open" in details
        assert not (tmp_path / "none.db").exists()  # read-only: never created


# -- the task's config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sql": None}, "sensor_config.sql is missing"),
        ({"connection": None}, "sensor_config.connection is missing"),
        ({"paramaters": ["x"]}, "sensor_config.paramaters is not a setting"),
        ({"parameters": "nightly"}, "sensor_config.parameters must be a list"),
    ],
)
async def test_bad_sensor_config_names_the_field(sqlite_svc: Running, config: dict[str, Any], message: str) -> None:
    template, _ = flytekit_task("sql_sensor_sqlite", **config)
    code, details = await refused_at_create(sqlite_svc, template, no_parameters())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details


async def test_unknown_input_is_refused_at_create(sqlite_svc: Running) -> None:
    template, inputs = flytekit_task("sql_sensor_sqlite")
    template.interface.inputs.variables["day"].type.simple = 3  # STRING
    inputs.literals["day"].scalar.primitive.string_value = "2024-01-01"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(sqlite_svc, template, inputs)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SqlSensor" in (err.value.details() or "")


# -- operator settings ---------------------------------------------------------------------------


def build(connections: Any = None, **extra: Any) -> ConnectorRegistry:
    values: dict[str, Any] = dict(extra)
    if connections is not None:
        values["connections"] = connections
    return ConnectorRegistry.build([SQL_SENSOR], use_entry_points=False, plugin_settings={"sql_sensor": values})


@pytest.mark.parametrize(
    ("connections", "extra", "message"),
    [
        (
            {"warehouse": {"url": "postgresql://reader:hunter2@db.internal:5432/dw"}},
            {},
            r"plugins\.sql_sensor\.connections\.warehouse\.url: .*must not contain a password",
        ),
        (
            {"warehouse": {"url": "postgresql://reader@db.internal/dw?sslmode=require&password=hunter2"}},
            {},
            r"plugins\.sql_sensor\.connections\.warehouse\.url: .*password",
        ),
        (
            {"warehouse": {"url": "postgresql://reader@db/dw", "pasword_secret": "hunter2"}},
            {},
            r"plugins\.sql_sensor\.connections\.warehouse\.pasword_secret: Extra inputs are not permitted",
        ),
        ({}, {"statment_timeout": 3}, r"plugins\.sql_sensor\.statment_timeout: not a setting of SqlSensor"),
        ({}, {"pool_max_size": 0}, r"plugins\.sql_sensor\.pool_max_size: Input should be greater than or equal to 1"),
        ({"m": {"url": "mysql://u@h/db"}}, {}, r"plugins\.sql_sensor\.connections\.m\.url: .*unsupported database"),
        ({"l": {"url": "sqlite:///state.db"}}, {}, r"plugins\.sql_sensor\.connections\.l\.url: .*absolute path"),
        (
            {"l": {"url": "sqlite:////data/state.db", "password_secret": "x"}},
            {},
            r"plugins\.sql_sensor\.connections\.l: .*SQLite databases have no password",
        ),
        (
            {"w": {"url": "postgresql://u@h:port/db"}},
            {},
            r"plugins\.sql_sensor\.connections\.w\.url: .*not a valid URL",
        ),
    ],
)
def test_bad_settings_stop_start_up_naming_the_field(connections: Any, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError, match=message) as err:
        build(connections, **extra)
    assert "hunter2" not in str(err.value)


def test_defaults_allow_no_database() -> None:
    sensor = build().sensors()["SqlSensor"]
    assert sensor.settings.connections == {}
    assert sensor.settings.statement_timeout == 5.0


async def test_without_connections_a_task_learns_where_they_are_configured() -> None:
    async with serve({}) as svc:
        code, details = await refused_at_create(svc, *flytekit_task("sql_sensor_sqlite"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "plugins.sql_sensor.connections" in details


async def test_env_settings_json_connections_and_a_password_in_them_stops_start_up() -> None:
    bad = '{"warehouse": {"url": "postgresql://reader:s3cr3t-pw@db.internal/dw"}}'
    env = {**ENV, "CONNECTOR_PLUGINS__SQL_SENSOR__CONNECTIONS": bad}
    proc = await asyncio.to_thread(run_cli, "list", "--connector", SQL_SENSOR, "--no-entry-points", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "plugins.sql_sensor.connections.warehouse.url" in proc.stderr
    assert "s3cr3t-pw" not in proc.stderr + proc.stdout


# -- truthiness, directly ------------------------------------------------------------------------


def test_is_truthy_rules() -> None:
    assert [is_truthy(v) for v in (None, False, 0, 0.0, "", " ", "No", "OFF", b"", bytearray())] == [False] * 10
    assert [is_truthy(v) for v in (True, 1, -1, "x", "true", "nope", b"\0", [0])] == [True] * 8
