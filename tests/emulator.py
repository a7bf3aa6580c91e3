"""An external system's emulator as a real process on a loopback port, for the connectors' end-to-end tests.

Emulators (bqemulator, minilake, fakesnow, aimock, moto) run from their own venv or npm
folder, each on a free loopback port, and are stopped and started again by tests that check
what a connector does while its system is down (UNAVAILABLE, then the task resumes). Output
goes to a log file that is shown when the emulator fails to start, so a broken set-up says why.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["Emulator", "Outage", "free_port", "http_ready", "tcp_ready"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ready(path: str = "/") -> Callable[[int], bool]:
    """Ready once ``GET path`` gets any HTTP answer (an error status still means the server is up)."""

    def ready(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except (OSError, ValueError):
            return False

    return ready


class Emulator:
    """``command`` (with ``{port}`` in any argument) run in its own process group on a free port."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: Callable[[int], bool] = tcp_ready,
        start_timeout: float = 60.0,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self._command = list(command)
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        self._ready = ready
        self._start_timeout = start_timeout
        self.log = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process (and process group) id while running, e.g. to freeze it with SIGSTOP."""
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self) -> Emulator:
        """Start (again, on the same port) and wait until it answers."""
        if self.running:
            return self
        argv = [part.replace("{port}", str(self.port)) for part in self._command]
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode} at start:\n{self.tail()}")
            if self._ready(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        waited = f"{self._start_timeout:g}s"
        raise RuntimeError(f"{self.name} did not answer on port {self.port} in {waited}:\n{self.tail()}")

    def stop(self) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL) and wait until the port is free."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + 5
        while tcp_ready(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Outage:
    """A TCP relay in front of the emulator that can go away (connections refused) and come back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port, reuse_address=True)

    async def down(self) -> None:
        """Stop listening and cut every open connection, as a crashed server or a lost route does."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        finally:
            self._writers -= {writer, up_writer}
            writer.close()
            up_writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        dst.close()
