"""``SqlSensor``: done when a query's first cell is truthy, on a database the operator configured.

Airflow's ``SqlSensor`` is the model: the task gives a query, each poke runs it, and the sensor
is done once the first column of the first row holds a truthy value (see ``is_truthy``).

What a task may reach is the operator's decision: tasks name one of the connections in
``plugins.sql_sensor.connections`` and never carry a DSN or credentials. Passwords come from
secrets (``password_secret``), read when a connection pool is made, and never appear in
settings, ``resource_meta``, logs or error messages. Every query runs read-only and bounded:

- PostgreSQL (asyncpg, imported on first use): one small pool per connection, made on first use
  and closed at shutdown; sessions start with ``default_transaction_read_only`` and the
  ``statement_timeout`` setting, each poke runs one statement (asyncpg's extended protocol
  refuses several) inside ``BEGIN READ ONLY`` and always rolls back. Parameters are bound
  (``$1``, ``$2``, ...), never formatted into the SQL. The caller's deadline also bounds a
  query: when the sensor engine's poke budget runs out it cancels the poke, and asyncpg then
  cancels the statement on the server.
- SQLite (stdlib ``sqlite3``, on the service's thread pool): opened per poke through a
  ``file:...?mode=ro`` URI with an authorizer that allows only reading, a progress handler
  that stops the statement at ``statement_timeout`` or when the poke is cancelled, and bound
  ``?`` / ``:name`` parameters. Opening per poke costs tens of microseconds (a local file, no
  handshake or login), lets concurrent pokes of one database read in parallel (SQLite allows
  many readers) instead of queueing behind one shared connection, means a stuck query never
  blocks other tasks, and sees a database file that was atomically replaced, which a
  long-lived connection (holding the old inode) would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from connector_service import clip
from connector_service.clients import SharedClients
from connector_service.errors import InvalidRequestError, PreconditionError, UnavailableError
from connector_service.secrets import SecretNotFoundError, get_secret
from sensors.base import BaseSensor

if TYPE_CHECKING:
    import sqlite3

__all__ = ["ConnectionSettingsError", "SqlConnection", "SqlSensor", "SqlSensorSettings", "is_truthy"]

_log = logging.getLogger(__name__)

APPLICATION_NAME = "flyte-connector-service/sql_sensor"
"""What the sensor's sessions show as ``application_name`` in ``pg_stat_activity``."""

_CONFIG_KEYS = ("connection", "sql", "parameters")
_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


# -- operator settings -------------------------------------------------------------------------


class SqlConnection(BaseModel):
    """One database a task may name: ``url`` without a password, the password in a secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description=(
            "postgresql://USER@HOST:PORT/DB (asyncpg's URL form; query options such as sslmode are allowed) "
            "or sqlite:////ABSOLUTE/PATH.db. Never a password: use password_secret."
        )
    )
    password_secret: str | None = Field(
        None, min_length=1, description="Name of the secret (get_secret) holding the PostgreSQL password."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        # Messages never echo the URL: it may hold the very password being refused.
        url = url.strip()
        if url.startswith(_SQLITE_PREFIX):
            path = url[len(_SQLITE_PREFIX) :]
            if not path.startswith("/"):
                raise ValueError("a SQLite url needs an absolute path: sqlite:////absolute/path.db (four slashes)")
            if "?" in path or "#" in path:
                raise ValueError("a SQLite url takes no query string or fragment")
            return url
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("not a valid URL (postgresql://user@host:port/db)") from None
        if parts.scheme not in _POSTGRES_SCHEMES:
            raise ValueError("unsupported database: the url must start with postgresql:// or sqlite:////")
        if parts.password is not None:
            raise ValueError("must not contain a password: put it in a secret and name that secret in password_secret")
        query = {key.lower() for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
        if query & {"password", "passfile"}:
            raise ValueError("must not carry a password (or passfile) option: name a secret in password_secret")
        return url

    @model_validator(mode="after")
    def _sqlite_has_no_password(self) -> SqlConnection:
        if self.kind == "sqlite" and self.password_secret is not None:
            raise ValueError("password_secret: SQLite databases have no password; remove it")
        return self

    @property
    def kind(self) -> Literal["postgresql", "sqlite"]:
        return "sqlite" if self.url.startswith(_SQLITE_PREFIX) else "postgresql"

    @property
    def sqlite_path(self) -> str:
        return self.url[len(_SQLITE_PREFIX) :]


def _json_if_text(value: Any) -> Any:
    # CONNECTOR_PLUGINS__SQL_SENSOR__CONNECTIONS='{"warehouse": {...}}' arrives as text.
    if isinstance(value, str):
        return json.loads(value)
    return value


class SqlSensorSettings(BaseModel):
    """``plugins.sql_sensor``: no connections by default, so no task can reach any database."""

    model_config = ConfigDict(extra="forbid")

    connections: Annotated[dict[str, SqlConnection], BeforeValidator(_json_if_text)] = Field(
        default_factory=dict, description="Databases tasks may name, by name."
    )
    statement_timeout: float = Field(
        5.0, gt=0, le=3600, description="Seconds one query may run (PostgreSQL statement_timeout; SQLite)."
    )
    connect_timeout: float = Field(5.0, gt=0, le=300, description="Seconds to connect to PostgreSQL.")
    pool_max_size: int = Field(2, ge=1, le=100, description="Connections per PostgreSQL pool (pools start empty).")


# -- errors ------------------------------------------------------------------------------------


class ConnectionSettingsError(PreconditionError):
    """The configured connection does not work (login refused, no such database, a URL option
    asyncpg refuses): FAILED_PRECONDITION, since the operator's configuration, not the task,
    must change."""


def _configured(connections: Mapping[str, SqlConnection]) -> str:
    return ", ".join(sorted(connections)) or "none; the operator configures plugins.sql_sensor.connections"


# -- truthiness --------------------------------------------------------------------------------

_FALSE_TEXT = frozenset({"", "0", "f", "false", "n", "no", "off"})
"""Text read as "not yet": empty, and PostgreSQL's spellings of a false boolean."""


def is_truthy(cell: Any) -> bool:
    """Whether a first cell means "done".

    NULL (or no row), ``False``, zero and empty values are not; text is not when, stripped and
    lower-cased, it is empty or one of PostgreSQL's false spellings (``0 f false n no off``),
    so a flag kept as text in SQLite (``'false'``, ``'0'``) behaves like a boolean. This is
    stricter than Airflow 2 (plain ``bool``, where ``'0'`` is done) and a superset of Airflow
    1.10 (``'0'`` and ``''`` not done). Any other text, date or value is done.
    """
    if cell is None:
        return False
    if isinstance(cell, str):
        return cell.strip().lower() not in _FALSE_TEXT
    if isinstance(cell, bytes | bytearray | memoryview):
        return len(cell) > 0
    return bool(cell)


# -- the sensor --------------------------------------------------------------------------------


class SqlSensor(BaseSensor):
    """Waits until ``sql`` on the connection ``connection`` returns a truthy first cell.

    ``sensor_config``: ``connection`` (a configured name), ``sql``, and optional
    ``parameters``. The task input ``parameters`` (when not null) replaces the config's: a list
    binds positionally (PostgreSQL ``$1, $2, ...``, SQLite ``?``), a mapping by name (SQLite
    ``:name`` only). Strings are converted to the type PostgreSQL infers for each parameter
    (``$1`` compared with a date column takes ``"2024-01-01"``), so a flytekit ``List[str]``
    input works for typed columns.
    """

    aliases = ("sensors.flytekit_side.sql_sensor.SqlSensor",)
    settings_key: ClassVar[str] = "sql_sensor"
    settings_model: ClassVar[type[BaseModel]] = SqlSensorSettings
    settings: SqlSensorSettings

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.settings = SqlSensorSettings()
        self._pools: SharedClients[str, Any] = SharedClients(self._make_pool, _close_pool)

    async def close(self) -> None:
        await self._pools.aclose()

    async def poke(self, parameters: list[Any] | dict[str, Any] | None = None) -> bool:
        name, sql, params = self._query(parameters)
        connection = self._connection(name)
        if connection.kind == "sqlite":
            cell = await self._sqlite_first_cell(name, connection.sqlite_path, sql, params)
        else:
            cell = await self._postgres_first_cell(name, connection, sql, params)
        return is_truthy(cell)

    def check(self, parameters: list[Any] | dict[str, Any] | None = None, **inputs: Any) -> None:
        name, _, _ = self._query(parameters)
        self._connection(name)

    def _connection(self, name: str) -> SqlConnection:
        connection: SqlConnection | None = self.settings.connections.get(name)
        if connection is None:
            raise InvalidRequestError(
                f"SqlSensor: connection {clip(name)!r} is not configured (configured: "
                f"{_configured(self.settings.connections)})"
            )
        return connection

    def _query(self, parameters: Any) -> tuple[str, str, Sequence[Any] | Mapping[str, Any]]:
        """The task's connection name, SQL and parameters, checked (INVALID_ARGUMENT names the field)."""
        config = self.sensor_config
        unknown = sorted(str(key) for key in config if key not in _CONFIG_KEYS)
        if unknown:
            raise InvalidRequestError(
                f"SqlSensor: sensor_config.{clip(unknown[0])} is not a setting (settings: {', '.join(_CONFIG_KEYS)})"
            )
        name = config.get("connection")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(
                "SqlSensor: sensor_config.connection is missing: name one of the configured connections "
                f"({_configured(self.settings.connections)})"
            )
        sql = config.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise InvalidRequestError("SqlSensor: sensor_config.sql is missing: the query to run")
        where = "parameters"
        if parameters is None:
            parameters, where = config.get("parameters"), "sensor_config.parameters"
        if parameters is None:
            return name, sql, ()
        if isinstance(parameters, Mapping):
            bad = [key for key in parameters if not isinstance(key, str)]
            if bad:
                raise InvalidRequestError(f"SqlSensor: {where}: names of parameters must be strings")
            return name, sql, dict(parameters)
        if isinstance(parameters, list | tuple):
            return name, sql, list(parameters)
        raise InvalidRequestError(
            f"SqlSensor: {where} must be a list (positional) or a mapping (named), got {type(parameters).__name__}"
        )

    # -- PostgreSQL ------------------------------------------------------------------------------

    async def _make_pool(self, name: str) -> Any:
        import asyncpg  # lazily: only services that use PostgreSQL pay for it

        connection = self.settings.connections[name]
        password = get_secret(connection.password_secret) if connection.password_secret else None
        timeout_ms = str(max(1, round(self.settings.statement_timeout * 1000)))
        # min_size=0: making the pool connects to nothing; the first poke opens the first session.
        return await asyncpg.create_pool(
            dsn=connection.url,
            password=password,
            min_size=0,
            max_size=self.settings.pool_max_size,
            timeout=self.settings.connect_timeout,
            max_inactive_connection_lifetime=300,
            server_settings={
                "application_name": APPLICATION_NAME,
                "default_transaction_read_only": "on",
                "statement_timeout": timeout_ms,
                "idle_in_transaction_session_timeout": timeout_ms,
            },
        )

    async def _postgres_first_cell(
        self, name: str, connection: SqlConnection, sql: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> Any:
        if isinstance(params, Mapping):
            raise InvalidRequestError(
                f"SqlSensor: connection {clip(name)!r} is PostgreSQL, whose queries take positional parameters "
                "($1, $2, ...): pass parameters as a list, not a mapping"
            )
        # Two attempts: a pooled session may have died since the last poll (a database restart);
        # then the pool is dropped and one fresh session tried before answering UNAVAILABLE.
        for attempt in (1, 2):
            pool = await self._pools.get(name)
            try:
                conn = await pool.acquire(timeout=self.settings.connect_timeout)
            except Exception as exc:
                error = _postgres_error(name, connection, exc)
                if not isinstance(error, InvalidRequestError):
                    # Unreachable or refused: a new pool re-reads the secret and reconnects.
                    await self._drop(name, pool)
                raise error from None
            lost: Exception | None = None
            try:
                return await _run_read_only(conn, sql, params)
            except Exception as exc:
                error = _postgres_error(name, connection, exc)
                if not _session_lost(exc) or attempt == 2:
                    raise error from None
                lost = error
            finally:
                await _release(pool, conn)
            if lost is not None:
                _log.info("SqlSensor: connection %r: a pooled session was lost; retrying on a new pool", name)
                await self._drop(name, pool)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _drop(self, name: str, pool: Any) -> None:
        """Forget a broken pool at once: its other sessions are as dead as the one that failed.

        ``terminate`` (not a graceful close, which would wait for sessions other pokes hold) runs
        before the first await, so no other poke can pick the pool up in between.
        """
        pool.terminate()
        await self._pools.discard(name, pool)

    # -- SQLite ----------------------------------------------------------------------------------

    async def _sqlite_first_cell(
        self, name: str, path: str, sql: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> Any:
        call = _SqliteCall(name, path, sql, _sqlite_params(params), self.settings.statement_timeout)
        try:
            return await asyncio.to_thread(call.run)
        except asyncio.CancelledError:
            # The thread would go on running the query: stop it now rather than at the timeout.
            call.interrupt()
            raise


# -- PostgreSQL helpers ------------------------------------------------------------------------


async def _close_pool(pool: Any) -> None:
    """Close gracefully (sessions end cleanly on the server), but never wait long at shutdown."""
    try:
        await asyncio.wait_for(pool.close(), 5)
    except TimeoutError:
        pool.terminate()


async def _release(pool: Any, conn: Any) -> None:
    try:
        await pool.release(conn, timeout=1)
    except Exception:  # a broken session: the pool closes it; nothing to tell the task
        _log.debug("SqlSensor: releasing a session failed", exc_info=True)


async def _run_read_only(conn: Any, sql: str, params: Sequence[Any]) -> Any:
    """The first cell of ``sql`` run in a read-only transaction that is always rolled back."""
    transaction = conn.transaction(readonly=True)
    await transaction.start()
    try:
        statement = await conn.prepare(sql)
        args = _postgres_args(statement.get_parameters(), params)
        row = await statement.fetchrow(*args)
    except Exception:
        with contextlib.suppress(Exception):  # the error that matters is the query's
            await transaction.rollback()
        raise
    await transaction.rollback()
    if row is None or len(row) == 0:
        return None
    return row[0]


def _session_lost(exc: BaseException) -> bool:
    import asyncpg

    if isinstance(exc, asyncpg.PostgresConnectionError | OSError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return exc.sqlstate in ("57P01", "57P02", "57P03")
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


def _postgres_error(name: str, connection: SqlConnection, exc: Exception) -> Exception:
    """Map an asyncpg failure to what the caller should see; messages never carry secrets."""
    import asyncpg

    where = f"SqlSensor: connection {clip(name)!r}"
    if isinstance(exc, SecretNotFoundError | PreconditionError | InvalidRequestError | UnavailableError):
        return exc
    if isinstance(exc, TimeoutError):
        return UnavailableError(f"{where}: could not connect to the database within the connect timeout")
    if isinstance(exc, OSError):
        return UnavailableError(f"{where}: the database cannot be reached ({exc})")
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        message = str(exc).strip() or type(exc).__name__
        if state.startswith("28") or state == "3D000":
            secret = f" and the secret {connection.password_secret!r}" if connection.password_secret else ""
            return ConnectionSettingsError(
                f"{where}: the database refused the login ({message}); check plugins.sql_sensor.connections."
                f"{name}.url{secret}"
            )
        if state == "57014":
            return TimeoutError(f"{where}: the query was cancelled ({message})")
        if _session_lost(exc) or state[:2] in ("08", "40", "53", "58") or state.startswith("XX"):
            return UnavailableError(f"{where}: the database is unavailable ({message})")
        if state == "25006":
            return InvalidRequestError(
                f"{where}: the query may only read: it runs in a read-only transaction ({message})"
            )
        detail = f" ({exc.detail})" if getattr(exc, "detail", None) else ""
        return InvalidRequestError(f"{where}: the query failed: {message}{detail}")
    if isinstance(exc, asyncpg.ClientConfigurationError):
        return ConnectionSettingsError(f"{where}: plugins.sql_sensor.connections.{name}.url cannot be used: {exc}")
    if isinstance(exc, asyncpg.InterfaceError):
        if _session_lost(exc):
            return UnavailableError(f"{where}: the database session was lost ({exc})")
        # Client-side refusals of the task's query: wrong number or type of arguments.
        return InvalidRequestError(f"{where}: the query failed: {exc}")
    return exc


_PG_INTS = frozenset({"int2", "int4", "int8", "oid"})
_PG_FLOATS = frozenset({"float4", "float8"})
_PG_TEXT = frozenset({"text", "varchar", "bpchar", "name", "char", "citext", "unknown", "xml", "json", "jsonb"})
_PG_TRUE = ("t", "true", "y", "yes", "on", "1")
_PG_FALSE = ("f", "false", "n", "no", "off", "0")


def _postgres_args(types: Sequence[Any], params: Sequence[Any]) -> list[Any]:
    """Task values converted to the Python types asyncpg's binary codecs want for each ``$n``.

    Inputs from flytekit are often strings and numbers from JSON come as floats; PostgreSQL
    decides each parameter's type from the query, so convert accordingly (the value stays a
    bound parameter either way). Anything else is passed as is for asyncpg to judge.
    """
    if len(types) != len(params):
        raise InvalidRequestError(
            f"SqlSensor: the query takes {len(types)} parameter(s) ($1..${len(types)}), {len(params)} given"
        )
    return [_to_postgres(value, t.name, i) for i, (t, value) in enumerate(zip(types, params, strict=True), start=1)]


def _to_postgres(value: Any, type_name: str, index: int) -> Any:
    if value is None:
        return value
    try:
        if type_name in _PG_TEXT:
            if type_name in ("json", "jsonb") and not isinstance(value, str):
                return json.dumps(value)
            if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
                return value if isinstance(value, str) else _text(value)
            return _number_text(value)
        if type_name in _PG_INTS:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(value.strip())
        elif type_name in _PG_FLOATS:
            if isinstance(value, str):
                return float(value)
        elif type_name == "numeric":
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return decimal.Decimal(str(value).strip())
        elif type_name == "bool":
            if isinstance(value, str):
                text = value.strip().lower()
                if text in _PG_TRUE:
                    return True
                if text in _PG_FALSE:
                    return False
                raise ValueError(text)
            if isinstance(value, int | float):
                return bool(value)
        elif type_name == "date":
            if isinstance(value, datetime.datetime):
                return value.date()
            if isinstance(value, str):
                return datetime.date.fromisoformat(value.strip())
        elif type_name in ("timestamp", "timestamptz"):
            if isinstance(value, str):
                value = datetime.datetime.fromisoformat(value.strip())
            if isinstance(value, datetime.datetime):
                if type_name == "timestamptz":
                    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
                return value.astimezone(datetime.UTC).replace(tzinfo=None) if value.tzinfo else value
        elif type_name == "time":
            if isinstance(value, str):
                return datetime.time.fromisoformat(value.strip())
        elif type_name == "interval":
            if isinstance(value, int | float) and not isinstance(value, bool):
                return datetime.timedelta(seconds=value)
            if isinstance(value, str):
                from sensors.datetime_sensors import parse_duration

                return parse_duration(value, f"parameter ${index}", "SqlSensor")
    except (ValueError, ArithmeticError):
        raise InvalidRequestError(
            f"SqlSensor: parameter ${index} ({type(value).__name__}) is not a valid {type_name}"
        ) from None
    return value


def _number_text(value: int | float | decimal.Decimal) -> str:
    # Numbers from a JSON sensor_config come as floats: 7.0 was written 7.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


# -- SQLite helpers ----------------------------------------------------------------------------


def _sqlite_params(params: Sequence[Any] | Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
    if isinstance(params, Mapping):
        return {key: _to_sqlite(value, f"parameter :{key}") for key, value in params.items()}
    return [_to_sqlite(value, f"parameter {i}") for i, value in enumerate(params, start=1)]


def _to_sqlite(value: Any, where: str) -> Any:
    """Values sqlite3 binds: None, int, float, str, bytes; dates as SQLite's own text form."""
    if value is None or isinstance(value, int | float | str | bytes):
        return value
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")  # what sqlite3's (deprecated) default adapter wrote
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise InvalidRequestError(f"SqlSensor: {where}: a {type(value).__name__} cannot be bound in SQLite")


_SQLITE_ALLOWED_ACTIONS = frozenset({20, 21, 31, 33})
"""SQLITE_READ, SQLITE_SELECT, SQLITE_FUNCTION, SQLITE_RECURSIVE: reading, and nothing else
(no ATTACH, PRAGMA, transaction control or any write)."""


def _sqlite_authorizer(action: int, *args: Any) -> int:
    return 0 if action in _SQLITE_ALLOWED_ACTIONS else 1  # SQLITE_OK / SQLITE_DENY


class _SqliteCall:
    """One poke's query on the thread pool, interruptible from the event loop."""

    def __init__(self, name: str, path: str, sql: str, params: Sequence[Any] | dict[str, Any], timeout: float) -> None:
        self.name = name
        self.path = path
        self.sql = sql
        self.params = params
        self.timeout = timeout
        self.cancelled = False
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def interrupt(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._conn is not None:
                self._conn.interrupt()

    def run(self) -> Any:
        import sqlite3

        where = f"SqlSensor: connection {self.name!r}"
        uri = f"file:{urllib.parse.quote(self.path)}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise UnavailableError(f"{where}: cannot open the SQLite database: {exc}") from None
        deadline = time.monotonic() + self.timeout
        try:
            with self._lock:
                self._conn = conn
            conn.set_authorizer(_sqlite_authorizer)
            conn.set_progress_handler(lambda: int(self.cancelled or time.monotonic() > deadline), 1000)
            try:
                row = conn.execute(self.sql, self.params).fetchone()
            except (sqlite3.Error, sqlite3.Warning) as exc:
                raise _sqlite_error(where, exc) from None
            return row[0] if row else None
        finally:
            with self._lock:
                self._conn = None
            conn.close()


_SQLITE_RETRY = re.compile(r"^SQLITE_(BUSY|LOCKED)")
_SQLITE_UNREADABLE = re.compile(r"^SQLITE_(CANTOPEN|IOERR|NOTADB|CORRUPT|FULL|PERM|NOMEM)")


def _sqlite_error(where: str, exc: Exception) -> Exception:
    code = str(getattr(exc, "sqlite_errorname", "") or "")
    message = str(exc) or type(exc).__name__
    if code == "SQLITE_INTERRUPT":
        return TimeoutError(f"{where}: the query was stopped at the statement timeout")
    if _SQLITE_RETRY.match(code):
        return TimeoutError(f"{where}: the database is locked ({message})")
    if _SQLITE_UNREADABLE.match(code):
        return UnavailableError(f"{where}: cannot read the SQLite database ({message})")
    if code == "SQLITE_AUTH" or code.startswith("SQLITE_READONLY"):
        return InvalidRequestError(f"{where}: the query may only read ({message})")
    return InvalidRequestError(f"{where}: the query failed: {message}")
