"""The Snowflake calls: submit a query without waiting, read its status, cancel it.

snowflake-connector-python is synchronous, so every call runs on a thread
(``asyncio.to_thread``) and is bounded by ``plugins.snowflake.call_timeout`` and the caller's
deadline. It is imported on first use only (it costs ~0.3 s and ~30 MiB at import).

One connection (one Snowflake session) per account, user, role, warehouse, database and
schema is made on first use and shared by every task that names them: Snowflake connections
may be shared between threads, and the query tag travels with each statement
(``QUERY_TAG`` as a statement parameter), never as session state another task could see.
A connection that fails (the session expired, the network dropped) is dropped and made again
on the next call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from connector_service import PreconditionError, SharedClients, UnavailableError, clip, get_secret
from connectors.snowflake.settings import SnowflakeSettings

__all__ = ["Connect", "QueryRefusedError", "SessionKey", "SnowflakeClient"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

# Login failures (bad key, unknown user, key not registered): the operator has to act.
_AUTH_CODES = frozenset({390100, 390101, 390102, 390144, 390186, 390189, 390190, 394304, 250001})
_AUTH_WORDS = ("JWT token is invalid", "Incorrect username or password", "authentication", "is not authorized")
# The session is gone (expired, or the server forgot it): log in again and retry once.
_SESSION_GONE = frozenset({390104, 390111, 390112, 390114})


@dataclass(frozen=True)
class SessionKey:
    """What a Snowflake session is made for; tasks naming the same share it. No secret values."""

    account: str
    user: str
    role: str | None
    warehouse: str
    database: str
    schema: str
    private_key_secret: str
    private_key_passphrase_secret: str | None


class QueryRefusedError(Exception):
    """Snowflake refused the statement at submission (bad SQL, missing object, no privilege)."""

    def __init__(self, message: str, query_id: str) -> None:
        super().__init__(message)
        self.query_id = query_id


Connect = Callable[..., Any]
"""``snowflake.connector.connect``, or a recording fake with its signature in the tests."""


def _real_connect(**kwargs: Any) -> Any:
    import snowflake.connector

    return snowflake.connector.connect(**kwargs)


def _private_key(key: SessionKey) -> bytes:
    """The key's DER (PKCS#8) bytes, as the connector takes it; never logged, never in a message."""
    from cryptography.hazmat.primitives import serialization

    pem = get_secret(key.private_key_secret).strip().encode()
    passphrase = None
    if key.private_key_passphrase_secret:
        passphrase = get_secret(key.private_key_passphrase_secret).encode()
    try:
        private = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        why = "a passphrase is needed or is wrong" if "password" in str(exc).lower() else "it is not a PEM private key"
        raise PreconditionError(
            f"snowflake: the private key in secret {key.private_key_secret!r} cannot be read ({why})"
        ) from None
    except Exception:
        raise PreconditionError(
            f"snowflake: the private key in secret {key.private_key_secret!r} cannot be read"
        ) from None
    return private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class SnowflakeClient:
    """Submit, status and cancel, each on a thread within a time bound, over shared sessions."""

    def __init__(self, settings: SnowflakeSettings, connect: Connect = _real_connect) -> None:
        self._settings = settings
        self._connect = connect
        self._sessions: SharedClients[SessionKey, Any] = SharedClients(make=self._open, close=self._close)
        self._statement_locks: dict[SessionKey, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self._sessions.aclose()

    # ------------------------------------------------------------------ sessions

    async def _open(self, key: SessionKey) -> Any:
        settings = self._settings
        kwargs: dict[str, Any] = {
            "account": key.account,
            "user": key.user,
            "private_key": _private_key(key),
            "warehouse": key.warehouse,
            "database": key.database,
            "schema": key.schema,
            # Server-side binding: values never become SQL text.
            "paramstyle": "qmark",
            "login_timeout": settings.connect_timeout,
            "network_timeout": settings.call_timeout,
            "socket_timeout": settings.call_timeout,
            "client_session_keep_alive": False,
            "application": "flyte_connector_service",
        }
        if key.role:
            kwargs["role"] = key.role
        if settings.host:
            kwargs.update(host=settings.host, protocol=settings.protocol)
            if settings.port:
                kwargs["port"] = settings.port
        where = f"account {key.account} as {key.user}"
        try:
            return await self._bounded(
                lambda: self._connect(**kwargs),
                settings.connect_timeout + 1,
                "log in",
                where,
                secret=key.private_key_secret,
            )
        except _SessionGoneError:
            raise UnavailableError(f"snowflake: logging in to {where} failed; retrying later") from None

    async def _close(self, conn: Any) -> None:
        # A dropped session is often one whose server is unreachable: don't wait out its retries.
        def close() -> None:
            try:
                conn.close(retry=False)
            except TypeError:  # a stand-in without the keyword
                conn.close()

        try:
            await asyncio.wait_for(asyncio.to_thread(close), 2.0)
        except Exception:  # includes TimeoutError
            _log.debug("closing a Snowflake session failed", exc_info=True)

    # ------------------------------------------------------------------ calls

    async def submit(
        self, key: SessionKey, sql: str, params: Sequence[Any] | None, tag: str | None, timeout: float
    ) -> str:
        """The id of the started query; QueryRefusedError when Snowflake refuses the statement."""

        def run(conn: Any) -> str:
            cursor = conn.cursor()
            try:
                statement_params = {"QUERY_TAG": tag} if tag else None
                cursor.execute_async(sql, list(params) if params else None, _statement_params=statement_params)
                return str(cursor.sfqid)
            finally:
                cursor.close()

        return await self._call(key, run, timeout, "submit the query", refusals=True)

    async def status(self, key: SessionKey, query_id: str, timeout: float) -> Mapping[str, Any]:
        """Snowflake's answer to ``GET /monitoring/queries/<id>``, as ``get_query_status`` reads it."""

        def run(conn: Any) -> Mapping[str, Any]:
            answer = conn.rest.request(
                "/monitoring/queries/" + urllib.parse.quote(query_id), method="get", client="rest"
            )
            return answer if isinstance(answer, Mapping) else {}

        return await self._call(key, run, timeout, f"read the status of query {query_id}")

    async def cancel(self, key: SessionKey, query_id: str, timeout: float) -> str:
        """``SYSTEM$CANCEL_QUERY`` with the id bound; Snowflake's answer (a finished query is no error)."""

        def run(conn: Any) -> str:
            cursor = conn.cursor()
            try:
                cursor.execute("SELECT SYSTEM$CANCEL_QUERY(?)", [query_id])
                rows = cursor.fetchall()
                return str(rows[0][0]) if rows and rows[0] else ""
            finally:
                cursor.close()

        return await self._call(key, run, timeout, f"cancel query {query_id}", refusals=True)

    async def _call(
        self, key: SessionKey, fn: Callable[[Any], T], timeout: float, what: str, *, refusals: bool = False
    ) -> T:
        """``fn(session)``, retried once on a fresh session when the old one ended.

        Statements (submit, cancel) on one session are sent one at a time; status reads are
        plain REST calls and are not. ``execute_async`` returns as soon as Snowflake has the
        query, so this costs one round trip per submission; emulators that run the query
        within the call (fakesnow) refuse a second statement on a busy session.
        """
        where = f"account {key.account}"
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            conn = await self._sessions.get(key)
            lock = self._statement_locks.setdefault(key, asyncio.Lock()) if refusals else None
            try:
                if lock is not None:
                    await asyncio.wait_for(lock.acquire(), max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                raise UnavailableError(
                    f"snowflake: could not {what} in {where}: the session is busy with other statements"
                ) from None
            try:
                return await self._bounded(
                    functools.partial(fn, conn),
                    deadline - time.monotonic(),
                    what,
                    where,
                    refusals=refusals,
                    secret=key.private_key_secret,
                )
            except _SessionGoneError:
                await self._sessions.discard(key, conn)
                if attempt == 2:
                    raise UnavailableError(f"snowflake: could not {what} in {where}: the session ended twice") from None
            except UnavailableError:
                await self._sessions.discard(key, conn)
                raise
            finally:
                if lock is not None:
                    lock.release()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _bounded(
        self, fn: Callable[[], T], timeout: float, what: str, where: str, *, secret: str, refusals: bool = False
    ) -> T:
        """``fn()`` on a thread within ``timeout``, its exceptions turned into the service's."""
        limit = max(min(timeout, self._settings.call_timeout), 0.1)
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn), limit)
        except TimeoutError:
            raise UnavailableError(f"snowflake: could not {what} in {where}: no answer within {limit:g} s") from None
        except Exception as exc:
            raise _translate(exc, what, where, secret, refusals) from None


class _SessionGoneError(Exception):
    pass


def _translate(exc: Exception, what: str, where: str, secret: str, refusals: bool) -> Exception:
    """The service's error for a client exception: precondition, unavailable, or the query's refusal."""
    if isinstance(exc, PreconditionError | UnavailableError | QueryRefusedError):
        return exc
    try:
        from snowflake.connector import errors
    except ImportError:  # pragma: no cover - the extra is missing
        return PreconditionError("snowflake: snowflake-connector-python is not installed (pip install '.[snowflake]')")
    if not isinstance(exc, errors.Error):
        if isinstance(exc, OSError):
            return UnavailableError(f"snowflake: could not {what} in {where}: {type(exc).__name__}")
        return exc
    errno = exc.errno if isinstance(exc.errno, int) else 0
    message = clip(exc.msg or str(exc), 1000)
    if errno in _SESSION_GONE:
        return _SessionGoneError()
    if isinstance(exc, errors.ForbiddenError) or (
        errno in _AUTH_CODES and (errno != 250001 or any(w in message for w in _AUTH_WORDS))
    ):
        return PreconditionError(
            f"snowflake: {where} refused the login ({message}); check the key in secret {secret!r} "
            "and that its public key is registered for the user"
        )
    if refusals and isinstance(exc, errors.ProgrammingError | errors.IntegrityError | errors.DataError):
        return QueryRefusedError(message, str(getattr(exc, "sfqid", None) or ""))
    if isinstance(exc, errors.NotSupportedError | errors.ProgrammingError) and refusals:
        return QueryRefusedError(message, "")
    return UnavailableError(f"snowflake: could not {what} in {where}: {message}")
