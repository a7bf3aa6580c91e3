"""A real PostgreSQL server for tests: a fresh cluster in a temp dir, started once per session.

Tests that need PostgreSQL take the session fixture ``postgres`` (import it into the test module:
``from tests.postgres import postgres  # noqa: F401``). The server listens on 127.0.0.1 on a free
port with scram-sha-256 password authentication over TCP, so code under test logs in with a
real password (``server.reader`` / ``server.password``); tests themselves administer it as the
superuser over its unix socket (trust), see ``admin()``.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to an
unprivileged user (``postgres`` if the image has it, else ``nobody``) and every server process is
started through ``setpriv``, which execs rather than forks, so the ``Popen`` pid is the
postmaster's own and stopping it never needs a search by name.

Without server binaries the fixture skips, except under ``CI``, where missing binaries fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from tests.utils import free_port

__all__ = ["PostgresServer", "find_bindir", "postgres"]

T = TypeVar("T")

SUPERUSER = "postgres"
DATABASE = "dw"
READER = "reader"
_RUN_AS_CANDIDATES = ("postgres", "nobody")


def find_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` live: PATH first, then Debian's /usr/lib/postgresql/*/bin."""
    on_path = [shutil.which(name) for name in ("initdb", "postgres")]
    if all(on_path):
        # Resolve symlinks so both come from one installation (one major version).
        dirs = {Path(p).resolve().parent for p in on_path if p}
        if len(dirs) == 1:
            return dirs.pop()
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0,
    )
    for directory in reversed(candidates):
        if all((Path(directory) / name).is_file() for name in ("initdb", "postgres")):
            return Path(directory)
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in _RUN_AS_CANDIDATES:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"running as root and none of the users {_RUN_AS_CANDIDATES} exists to run PostgreSQL as")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a loop of its own in a helper thread.

    Session fixtures are synchronous; ``asyncio.run`` on this thread would replace (and then
    clear) the thread's current event loop under pytest-asyncio, so it runs elsewhere.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class PostgresServer:
    """One throwaway cluster: ``start``/``stop`` can be repeated (same data, port and password)."""

    bindir: Path
    root: Path
    port: int
    password: str = field(default_factory=lambda: "pw-" + secrets.token_urlsafe(12))
    owner: pwd.struct_passwd | None = None
    proc: subprocess.Popen[bytes] | None = None

    reader = READER
    database = DATABASE

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """The reader's URL as an operator would configure it: no password in it."""
        return f"postgresql://{READER}@127.0.0.1:{self.port}/{DATABASE}"

    def _as_owner(self, cmd: list[str]) -> list[str]:
        if self.owner is None:
            return cmd
        return [
            "setpriv",
            f"--reuid={self.owner.pw_uid}",
            f"--regid={self.owner.pw_gid}",
            "--clear-groups",
            "--reset-env",
            *cmd,
        ]

    @classmethod
    def create(cls, bindir: Path) -> PostgresServer:
        owner = _run_as()
        root = Path(tempfile.mkdtemp(prefix="fcs-pg-"))
        server = cls(bindir=bindir, root=root, port=free_port(), owner=owner)
        server.socket_dir.mkdir()
        if owner is not None:
            for path in (root, server.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        server._initdb()
        return server

    def _initdb(self) -> None:
        cmd = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        done = subprocess.run(self._as_owner(cmd), capture_output=True, text=True, timeout=60, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# tests/postgres.py\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 30\nshared_buffers = 16MB\n"
                "password_encryption = 'scram-sha-256'\n"
            )

    def start(self, timeout: float = 30) -> None:
        """Start the postmaster and wait until it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        pid_file = self.data / "postmaster.pid"
        pid_file.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self._as_owner([str(self.bindir / "postgres"), "-D", str(self.data)]),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                # The postmaster writes "ready" on the status line once it accepts connections.
                if "ready" in pid_file.read_text().splitlines()[7:8][0]:
                    return
            except (FileNotFoundError, IndexError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"postgres did not become ready within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT): sessions are ended, as when an operator stops the server."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def admin(self) -> asyncpg.Connection:
        """A superuser connection over the unix socket (trust): for setting up and checking."""
        return await asyncpg.connect(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, database=DATABASE, timeout=10
        )

    async def _bootstrap(self) -> None:
        conn = await asyncpg.connect(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, database="postgres", timeout=10
        )
        try:
            await conn.execute(f"CREATE DATABASE {DATABASE}")
            # The password is a literal in DDL; PostgreSQL takes no parameters in utility statements.
            quoted = self.password.replace("'", "''")
            await conn.execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{quoted}'")
        finally:
            await conn.close()
        conn = await self.admin()
        try:
            # The reader may write: only the sensor's read-only transaction should stop writes,
            # so the tests of that guarantee test the sensor, not the role.
            await conn.execute(f"GRANT ALL ON SCHEMA public TO {READER}")
            await conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {READER}")
        finally:
            await conn.close()

    def bootstrap(self) -> None:
        run_async(self._bootstrap())

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the whole session (a test that stops it must start it again)."""
    bindir = find_bindir()
    if bindir is None:
        reason = "PostgreSQL server binaries (initdb, postgres) are not on PATH nor in /usr/lib/postgresql/*/bin"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so they must be installed", pytrace=False)
        pytest.skip(reason)
    server = PostgresServer.create(bindir)
    try:
        server.start()
        server.bootstrap()
        yield server
    finally:
        server.remove()
