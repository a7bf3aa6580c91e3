"""``run_command``: the one way a connector runs a program on this machine.

Why not ``asyncio.create_subprocess_exec``: under uvloop (the default loop) that is libuv's
``fork()``, and ``fork()`` runs grpc's fork handlers in the child while the server's threads are
busy; a few children in a hundred died of SIGSEGV/SIGABRT before the command even ran. Here the
child is started by ``subprocess.Popen``, which on Linux uses ``vfork()`` + ``exec`` (no fork
handlers run, nothing of the parent's is copied), on any loop. Its stdin, stdout and stderr are
real pipes (uvloop would give sockets, which ``/dev/stdin`` cannot open). Output and exit are
awaited on the loop (non-blocking pipes, and a pidfd for the exit, so no thread per call); a
command that overruns its timeout, or whose caller is cancelled, is killed with its whole
process group and reaped.

Failures to *run* the command (no such program, killed by a signal, out of time) raise
``CommandError``, an ``UnavailableError``: the service answers UNAVAILABLE and the caller
retries, because none of them says anything about the task. A non-zero exit status is the
command's answer and is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal as _signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from connector_service.errors import UnavailableError

__all__ = ["CommandError", "CommandResult", "DEFAULT_ENV_NAMES", "run_command", "signal_name"]

DEFAULT_ENV_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR")
"""What a command inherits from the service's environment when ``env`` is not given: never the
rest, which may hold secrets."""

_OUTPUT_LIMIT = 16 << 20
_CHUNK = 1 << 16
_REAP_WAIT = 5.0


class CommandError(UnavailableError):
    """The command did not run to an exit status: it could not be started, a signal killed it, or
    it ran out of time (then ``timed_out``, and ``signal`` is the SIGKILL it was sent).

    ``signal`` is the signal that ended it, or None when it never started.
    """

    def __init__(self, message: str, *, signal: int | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.signal = signal
        self.timed_out = timed_out


@dataclass(frozen=True)
class CommandResult:
    """A command that exited: its status and what it printed (each stream up to ``output_limit``)."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def stdout_text(self) -> str:
        """stdout as UTF-8, undecodable bytes replaced."""
        return self.stdout.decode(errors="replace")

    @property
    def stderr_text(self) -> str:
        """stderr as UTF-8, undecodable bytes replaced."""
        return self.stderr.decode(errors="replace")


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    output_limit: int = _OUTPUT_LIMIT,
    killed_ok: bool = False,
) -> CommandResult:
    """Run ``argv`` (no shell) to completion and return its exit status and output.

    ``input`` is written to its stdin (``/dev/null`` when None). ``env`` replaces the
    environment; by default only ``DEFAULT_ENV_NAMES`` pass. The command runs in a session of its
    own, so a timeout or a cancelled caller kills it and everything it started.

    Raises ``CommandError`` (an ``UnavailableError``) when the program is missing or cannot be
    executed, when ``timeout`` seconds pass before it exits and closes its output, and when a
    signal kills it -- unless ``killed_ok``, for callers to whom a signal is an answer (a job's
    own process): then the result's ``returncode`` is ``-signal``, as with ``subprocess``.
    Output beyond ``output_limit`` bytes per stream is read and dropped.
    """
    if not argv:
        raise ValueError("run_command needs a program to run")
    program = str(argv[0])
    data = input.encode() if isinstance(input, str) else input
    loop = asyncio.get_running_loop()
    run = _Run(loop, output_limit)
    try:
        proc = run.start(list(argv), data, _environment(env), cwd, program)
        try:
            async with asyncio.timeout(timeout):
                returncode = await run.finished()
        except TimeoutError:
            await run.kill_and_reap()
            message = f"{program} did not finish within {timeout:.1f} s"
            raise CommandError(message, signal=_signal.SIGKILL, timed_out=True) from None
        except asyncio.CancelledError:
            await run.kill_and_reap()
            raise
    finally:
        run.close()
    if returncode < 0 and not killed_ok:
        signum = -returncode
        raise CommandError(f"{program} was killed by {signal_name(signum)} (pid {proc.pid})", signal=signum)
    return CommandResult(returncode, bytes(run.out), bytes(run.err))


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    if env is not None:
        return dict(env)
    return {name: os.environ[name] for name in DEFAULT_ENV_NAMES if name in os.environ}


def signal_name(signum: int) -> str:
    """``SIGSEGV`` for 11, for messages."""
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _Run:
    """One child: its pipes and its exit, all watched by the loop; ``close`` leaves nothing behind."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.limit = limit
        self.out = bytearray()
        self.err = bytearray()
        self.proc: subprocess.Popen[bytes] | None = None
        self._fds: set[int] = set()
        self._watched: list[tuple[int, bool]] = []  # (fd, is_writer) registered with the loop
        self._waiting: list[asyncio.Future[None]] = []
        self._exit: asyncio.Future[int] = loop.create_future()
        self._pidfd: int | None = None

    # ---------------------------------------------------------------- start

    def _pipe(self) -> tuple[int, int]:
        read, write = os.pipe()  # close-on-exec: the child gets only the ends Popen dup2s onto 0-2
        self._fds.update((read, write))
        return read, write

    def _close_fd(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.discard(fd)
            os.close(fd)

    def start(
        self,
        argv: list[str],
        data: bytes | None,
        env: dict[str, str],
        cwd: str | os.PathLike[str] | None,
        program: str,
    ) -> subprocess.Popen[bytes]:
        stdin_read, stdin_write = self._pipe() if data is not None else (None, None)
        out_read, out_write = self._pipe()
        err_read, err_write = self._pipe()
        try:
            # No preexec_fn, user, group or umask: those would make Popen fork() instead of vfork().
            self.proc = subprocess.Popen(
                argv,
                stdin=stdin_read if stdin_read is not None else subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            if cwd is not None and exc.filename is not None and os.fsdecode(exc.filename) == os.fspath(cwd):
                raise CommandError(f"cannot run {program}: no directory {os.fspath(cwd)}") from None
            where = "" if "/" in program else " on PATH"
            raise CommandError(f"{program} is not installed (not found{where})") from None
        except OSError as exc:
            raise CommandError(f"cannot run {program}: {exc.strerror or exc}") from None
        finally:
            for fd in (stdin_read, out_write, err_write):
                if fd is not None:
                    self._close_fd(fd)
        self._watch_exit(self.proc)
        self._read(out_read, self.out)
        self._read(err_read, self.err)
        if stdin_write is not None and data is not None:
            self._write(stdin_write, memoryview(data))
        return self.proc

    # ---------------------------------------------------------------- pipes

    def _done_future(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        self._waiting.append(future)
        return future

    def _unwatch(self, fd: int, writer: bool) -> None:
        if (fd, writer) in self._watched:
            self._watched.remove((fd, writer))
            if writer:
                self.loop.remove_writer(fd)
            else:
                self.loop.remove_reader(fd)

    def _read(self, fd: int, into: bytearray) -> None:
        os.set_blocking(fd, False)
        done = self._done_future()

        def readable() -> None:
            while True:
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    return
                except OSError as exc:  # not expected from a pipe; end the stream, keep the error
                    chunk = b""
                    into.extend(f"\n[read error: {exc.strerror}]".encode())
                if not chunk:
                    self._unwatch(fd, False)
                    self._close_fd(fd)
                    if not done.done():
                        done.set_result(None)
                    return
                room = self.limit - len(into)
                if room > 0:
                    into.extend(chunk[:room])

        self.loop.add_reader(fd, readable)
        self._watched.append((fd, False))

    def _write(self, fd: int, data: memoryview) -> None:
        os.set_blocking(fd, False)
        done = self._done_future()
        position = 0

        def finish() -> None:
            self._unwatch(fd, True)
            self._close_fd(fd)
            if not done.done():
                done.set_result(None)

        def writable() -> None:
            nonlocal position
            while position < len(data):
                try:
                    position += os.write(fd, data[position : position + _CHUNK])
                except BlockingIOError:
                    return
                except OSError as exc:
                    if exc.errno not in (errno.EPIPE, errno.EBADF):
                        raise
                    break  # the command stopped reading its input: its exit status will tell
            finish()

        writable()
        if not done.done():
            self.loop.add_writer(fd, writable)
            self._watched.append((fd, True))

    # ---------------------------------------------------------------- exit

    def _watch_exit(self, proc: subprocess.Popen[bytes]) -> None:
        """The exit status, reaped as soon as the child exits: by a pidfd on the loop, else by a thread."""
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3 (or pidfds are not allowed here)
            waiter = self.loop.run_in_executor(None, proc.wait)
            waiter.add_done_callback(self._waited)
            return
        self._pidfd = pidfd

        def exited() -> None:
            returncode = proc.poll()  # Popen reaps it, so it never reaps (or kills) a reused pid later
            if returncode is None:
                return
            self.loop.remove_reader(pidfd)
            os.close(pidfd)
            self._pidfd = None
            self._exited(returncode)

        self.loop.add_reader(pidfd, exited)

    def _waited(self, waiter: asyncio.Future[int]) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            self._exited(waiter.result())

    def _exited(self, returncode: int) -> None:
        if not self._exit.done():
            self._exit.set_result(returncode)

    async def finished(self) -> int:
        """The exit status, once the child exited and closed its output (and took its input)."""
        await asyncio.gather(*self._waiting)
        return await asyncio.shield(self._exit)

    # ---------------------------------------------------------------- end

    def kill(self) -> None:
        """SIGKILL the child's whole session (it is the group leader), if it was not reaped yet."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, _signal.SIGKILL)

    async def kill_and_reap(self) -> None:
        """Kill the group and wait (briefly: a process in uninterruptible sleep may take long) for the
        child to be reaped, so the caller returns with no zombie left behind even if its loop ends next."""
        self.kill()
        await asyncio.wait([self._exit], timeout=_REAP_WAIT)
        if self._exit.done() and self.proc is not None:
            await self._reap_orphans(self.proc.pid)

    async def _reap_orphans(self, group: int) -> None:
        """Reap what the killed command had started, if it became ours.

        When the service is PID 1 (a container's entrypoint, with no init) or a subreaper, the
        processes a killed command started are handed to it when their parent dies, and nothing
        else would ever reap them. Only that process group's members are waited for (never
        ``-1``, which would take other commands' exit statuses), and only once its leader has
        been reaped; where they are not ours (the usual case) the first call says so.
        """
        deadline = self.loop.time() + _REAP_WAIT
        while True:
            try:
                pid, _ = os.waitpid(-group, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
            except ChildProcessError:
                return  # none of the group is (any longer) a child of ours
            if pid == 0:  # some are ours and not dead yet: SIGKILL takes a moment
                if self.loop.time() > deadline:
                    return
                await asyncio.sleep(0.01)

    def close(self) -> None:
        """Stop watching the pipes and close them; a child still running is killed, and reaped
        when it exits (the exit watch stays registered until then), so no zombie is left."""
        self.kill()
        for fd, writer in list(self._watched):
            self._unwatch(fd, writer)
        for fd in list(self._fds):
            self._close_fd(fd)
        for future in self._waiting:
            future.cancel()
        self._exit.add_done_callback(_consume)


def _consume(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()
