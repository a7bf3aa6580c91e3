"""Where Slurm commands run: on this machine (a subprocess) or on a login node (asyncssh).

Both sides take an argv list. Locally it is executed without a shell, with a small, clean
environment (the service's own variables, which may hold secrets, never reach a job). Over
SSH the remote login shell parses the command, so every element is quoted
(``_commands.shell_line``). One SSH connection per (host, port, user) is shared by every
call through ``SharedClients``; a connection that dropped is discarded and made again.

Locally, commands run through the SDK's ``run_command`` (never a fork of the serving process,
whose gRPC threads made forked children crash under uvloop).

Failures to *reach* Slurm (SSH down, a command that does not answer in time, a binary that
is missing, a command killed by a signal) raise ``UnavailableError``: propeller then polls
again instead of failing a job that may be running fine.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector_service import (
    CommandError,
    SecretNotFoundError,
    SharedClients,
    UnavailableError,
    get_secret,
    run_command,
)
from connector_service.process import DEFAULT_ENV_NAMES, signal_name
from connectors.slurm._commands import shell_line

if TYPE_CHECKING:
    import asyncssh

__all__ = ["Completed", "LocalTransport", "SSHKey", "SSHPool", "SSHTransport", "Transport", "SlurmKeyError"]

_log = logging.getLogger(__name__)

_PASSED_ENV = (*DEFAULT_ENV_NAMES, "SLURM_CONF")
"""What a locally submitted job inherits from the service's environment (plus ``plugins.slurm.env``)."""


class SlurmKeyError(SecretNotFoundError):
    """The private key secret exists but holds no usable key: FAILED_PRECONDITION, naming the secret."""


@dataclass(frozen=True)
class Completed:
    status: int
    stdout: str
    stderr: str

    def first_error_line(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1][:300] if lines else f"exit status {self.status}"


class Transport(ABC):
    """Runs one command where the cluster is."""

    where: str
    """For messages: ``this machine`` or ``user@host:port``."""

    @abstractmethod
    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: str | None = None,
        mkdir: str | None = None,
        idempotent: bool = True,
    ) -> Completed:
        """Run ``argv`` (after ``mkdir -p mkdir``); ``idempotent`` commands may be sent twice after a drop."""

    @abstractmethod
    async def home(self, timeout: float) -> str:
        """The submitting user's home directory, to resolve a relative work_dir."""

    @property
    @abstractmethod
    def user(self) -> str:
        """The user jobs are submitted as."""

    async def read_file(self, path: str, limit: int, timeout: float) -> bytes | None:
        """At most ``limit`` bytes of a file, or None if there is no such file."""
        script = (
            f"if [ -f {shlex.quote(path)} ]; then exec head -c {int(limit)} -- {shlex.quote(path)}; else exit 66; fi"
        )
        result = await self.run(["sh", "-c", script], timeout=timeout)
        if result.status == 66:
            return None
        if result.status != 0:
            raise OSError(f"cannot read {path} on {self.where}: {result.first_error_line()}")
        return result.stdout.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- local


class LocalTransport(Transport):
    """Slurm's client commands on this machine, as the service's user."""

    where = "this machine"

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ} | dict(env)

    @property
    def user(self) -> str:
        return getpass.getuser()

    async def home(self, timeout: float) -> str:
        return str(Path.home())

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: str | None = None,
        mkdir: str | None = None,
        idempotent: bool = True,
    ) -> Completed:
        if mkdir:
            try:
                await asyncio.to_thread(os.makedirs, mkdir, 0o700, True)
            except OSError as exc:
                raise UnavailableError(f"cannot create {mkdir} on {self.where}: {exc.strerror}") from None
        home = Path.home()
        try:
            result = await run_command(
                argv, input=stdin, timeout=timeout, env=self._env, cwd=home if home.is_dir() else None
            )
        except CommandError as exc:
            raise UnavailableError(_no_answer(argv[0], self.where, timeout, exc)) from None
        return Completed(result.returncode, result.stdout_text, result.stderr_text)


def _no_answer(program: str, where: str, timeout: float, exc: CommandError) -> str:
    if exc.timed_out:
        return f"{program} on {where} did not answer within {timeout:.1f} s (is the Slurm controller up?)"
    if exc.signal is not None:
        return f"{program} on {where} was killed by {signal_name(exc.signal)} before it answered"
    return f"cannot run {program} on {where}: {exc}"


# --------------------------------------------------------------------------- SSH


@dataclass(frozen=True)
class SSHKey:
    """One shared connection: the SSH target and the user logged in as."""

    host: str
    port: int
    username: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.username}@{host}:{self.port}"


@dataclass
class _Connection:
    conn: asyncssh.SSHClientConnection
    home: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class SSHOptions:
    known_hosts: Path
    private_key_secret: str
    private_key_passphrase_secret: str | None
    connect_timeout: float


class SSHPool:
    """The SSH connections of one connector, by (host, port, user), closed in ``close``."""

    def __init__(self, options: SSHOptions) -> None:
        self.options = options
        self.clients: SharedClients[SSHKey, _Connection] = SharedClients(self._connect, self._close)
        self.connections_made = 0

    async def _connect(self, key: SSHKey) -> _Connection:
        import asyncssh

        opts = self.options
        private_key = _load_key(opts.private_key_secret, opts.private_key_passphrase_secret)
        try:
            conn = await asyncssh.connect(
                key.host,
                key.port,
                username=key.username,
                client_keys=[private_key],
                known_hosts=str(opts.known_hosts),
                config=None,  # never ~/.ssh/config: the operator's settings say where to go
                agent_path=None,
                password=None,
                kbdint_auth=False,
                gss_auth=False,
                preferred_auth="publickey",
                connect_timeout=opts.connect_timeout,
                login_timeout=opts.connect_timeout,
                keepalive_interval=30,
                keepalive_count_max=3,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise UnavailableError(
                f"SSH to {key.host}:{key.port} refused: its host key does not match plugins.slurm.known_hosts "
                f"({opts.known_hosts}); host keys are never accepted unverified"
            ) from None
        except asyncssh.PermissionDenied:
            raise UnavailableError(
                f"SSH login as {key} refused: the key in secret {opts.private_key_secret!r} is not accepted"
            ) from None
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            raise UnavailableError(f"cannot reach {key} over SSH: {_describe(exc)}") from None
        self.connections_made += 1
        _log.info("SSH connection to %s opened", key)
        return _Connection(conn)

    @staticmethod
    async def _close(connection: _Connection) -> None:
        connection.conn.close()
        await connection.conn.wait_closed()

    async def connection(self, key: SSHKey, timeout: float) -> _Connection:
        try:
            async with asyncio.timeout(timeout):
                connection = await self.clients.get(key)
                if connection.conn.is_closed():  # the server went away since the last call
                    await self.clients.discard(key, connection)
                    connection = await self.clients.get(key)
        except TimeoutError:
            raise UnavailableError(f"cannot reach {key} over SSH within {timeout:.1f} s") from None
        return connection

    async def aclose(self) -> None:
        await self.clients.aclose()


def _describe(exc: BaseException) -> str:
    text = str(exc) or getattr(exc, "reason", "") or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _load_key(secret: str, passphrase_secret: str | None) -> Any:
    import asyncssh

    text = get_secret(secret)
    passphrase = get_secret(passphrase_secret) if passphrase_secret else None
    try:
        return asyncssh.import_private_key(text.strip() + "\n", passphrase)
    except (asyncssh.KeyImportError, ValueError, TypeError):
        # The parser's message could quote the key material: say only what is wrong and where.
        raise SlurmKeyError(
            f"secret {secret!r} does not hold a usable SSH private key (OpenSSH or PEM"
            + (", with the passphrase in secret " + repr(passphrase_secret) if passphrase_secret else "")
            + ")"
        ) from None


class SSHTransport(Transport):
    """Slurm's client commands on a login node, over a shared SSH connection."""

    def __init__(self, pool: SSHPool, key: SSHKey, env: Mapping[str, str]) -> None:
        self._pool = pool
        self._key = key
        self._env = dict(env)
        self.where = str(key)

    @property
    def user(self) -> str:
        return self._key.username

    async def home(self, timeout: float) -> str:
        connection = await self._pool.connection(self._key, timeout)
        async with connection.lock:
            if connection.home is None:
                result = await self.run(["sh", "-c", 'printf %s "$HOME"'], timeout=timeout)
                if result.status != 0 or not result.stdout.startswith("/"):
                    raise UnavailableError(f"cannot find the home directory of {self.where}")
                connection.home = result.stdout
            return connection.home

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: str | None = None,
        mkdir: str | None = None,
        idempotent: bool = True,
    ) -> Completed:
        import asyncssh

        line = shell_line(argv, self._env, mkdir)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for attempt in (1, 2):
            connection = await self._pool.connection(self._key, max(deadline - loop.time(), 0.1))
            try:
                result = await connection.conn.run(
                    line, input=stdin, check=False, timeout=max(deadline - loop.time(), 0.1)
                )
            except asyncssh.TimeoutError:
                raise UnavailableError(
                    f"{argv[0]} on {self.where} did not answer within {timeout:.1f} s (is the Slurm controller up?)"
                ) from None
            except asyncssh.ChannelOpenError as exc:
                # The command never started, so sending it again is safe even for sbatch.
                await self._pool.clients.discard(self._key, connection)
                if attempt == 1:
                    continue
                raise UnavailableError(f"cannot run commands on {self.where}: {_describe(exc)}") from None
            except (asyncssh.Error, OSError) as exc:
                await self._pool.clients.discard(self._key, connection)
                if attempt == 1 and idempotent:
                    continue
                raise UnavailableError(f"lost the SSH connection to {self.where}: {_describe(exc)}") from None
            if result.exit_signal:  # (name, core dumped, message, language)
                raise UnavailableError(
                    f"{argv[0]} on {self.where} was killed by SIG{result.exit_signal[0]} before it answered"
                )
            if result.exit_status is None or result.exit_status < 0:
                raise UnavailableError(f"{argv[0]} on {self.where} ended without an exit status")
            return Completed(result.exit_status, _text(result.stdout), _text(result.stderr))
        raise AssertionError("unreachable")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return str(value)
