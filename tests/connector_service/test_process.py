"""``run_command``: real child processes, on uvloop (the service's default loop) and on asyncio.

The tests are plain functions that start their own loop, so each one runs on the loop it
names; the concurrency test runs a real grpc.aio server in the same process, because that is
what made forked children crash (grpc's fork handlers running in them).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
import uvloop
from flyteidl.admin import agent_pb2

from connector_service import CommandError, UnavailableError, run_command
from connector_service.testing import task_template
from tests.utils import ENV, create_task, get_task, run_service

LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {"uvloop": uvloop.run, "asyncio": asyncio.run}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    return LOOPS[request.param]


def zombie_children() -> set[int]:
    """This process's children that exited and were never reaped."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] == "Z":
                found.add(int(entry.name))
    return found


@pytest.fixture
def new_zombies() -> Callable[[], set[int]]:
    """Zombie children that appeared during the test (other tests' leftovers are not its doing)."""
    before = zombie_children()
    return lambda: zombie_children() - before


def gone(pid: int) -> bool:
    """No such process, or only its corpse (a grandchild's is reaped by init, not by us)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z"
    except FileNotFoundError:
        return True


def wait_until(check: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_output_status_input_and_environment(run: Callable[..., Any], tmp_path: Path) -> None:
    os.environ["SERVICE_SECRET_FOR_TEST"] = "s3cr3t"
    try:
        script = 'cat; echo "to stderr" >&2; printf "%s|%s|%s" "$PWD" "${SERVICE_SECRET_FOR_TEST-unset}" "$1"; exit 3'
        result = run(run_command(["sh", "-c", script, "sh", "it's"], input="in put\n", timeout=10, cwd=tmp_path))
        assert result.returncode == 3
        assert result.stdout_text == f"in put\n{tmp_path}|unset|it's"  # the service's variables stay with it
        assert result.stderr == b"to stderr\n"
        chosen = run(run_command(["sh", "-c", 'printf %s "$ONLY"'], env={"ONLY": "this"}, timeout=10))
        assert chosen.stdout == b"this"
    finally:
        del os.environ["SERVICE_SECRET_FOR_TEST"]


def test_more_than_a_pipe_holds_both_ways(run: Callable[..., Any]) -> None:
    data = os.urandom(3 << 20)
    assert run(run_command(["cat"], input=data, timeout=30)).stdout == data
    # A command that never reads its input is no error: its exit status answers.
    assert run(run_command(["true"], input=data, timeout=30)).returncode == 0
    capped = run(run_command(["head", "-c", "5000000", "/dev/zero"], timeout=30, output_limit=1000))
    assert capped.returncode == 0 and len(capped.stdout) == 1000


def test_stdin_is_a_pipe_that_dev_stdin_can_open(run: Callable[..., Any]) -> None:
    # uvloop hands a child a socket for stdin, which /dev/stdin cannot open (sbatch /dev/stdin did this).
    result = run(run_command(["sh", "-c", "cat /dev/stdin; [ -p /dev/stdin ] && echo pipe"], input="x", timeout=10))
    assert result.stdout == b"xpipe\n", result.stderr


def test_missing_program_killed_by_a_signal_and_timeout_are_unavailable(
    run: Callable[..., Any], new_zombies: Callable[[], set[int]]
) -> None:
    with pytest.raises(CommandError, match="no-such-program-xyz is not installed") as missing:
        run(run_command(["no-such-program-xyz"], timeout=10))
    assert isinstance(missing.value, UnavailableError) and missing.value.signal is None

    with pytest.raises(CommandError, match="sh was killed by SIGSEGV") as killed:
        run(run_command(["sh", "-c", "kill -SEGV $$"], timeout=10))
    assert killed.value.signal == signal.SIGSEGV
    answer = run(run_command(["sh", "-c", "kill -ABRT $$"], timeout=10, killed_ok=True))
    assert answer.returncode == -signal.SIGABRT

    with pytest.raises(CommandError, match="no directory /no/such/dir"):
        run(run_command(["true"], timeout=10, cwd="/no/such/dir"))
    assert not new_zombies()


def test_timeout_and_cancellation_kill_the_whole_group_and_reap_it(
    run: Callable[..., Any], tmp_path: Path, new_zombies: Callable[[], set[int]]
) -> None:
    """The command and what it started are killed; the command is reaped (no zombie child is left)."""
    pid_file = tmp_path / "pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"

    started = time.monotonic()
    with pytest.raises(CommandError, match="did not finish within 0.5 s") as info:
        run(run_command(["sh", "-c", script], timeout=0.5))
    assert info.value.signal == signal.SIGKILL and time.monotonic() - started < 30
    sleeper = int(pid_file.read_text())
    wait_until(lambda: gone(sleeper), "the command's own child outlived the timeout")
    wait_until(lambda: not new_zombies(), "the killed command was not reaped")

    pid_file.unlink()

    async def cancelled() -> None:
        task = asyncio.ensure_future(run_command(["sh", "-c", script], timeout=300))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sleeper = int(pid_file.read_text())
        while not gone(sleeper) or new_zombies():  # the loop reaps it: keep it running meanwhile
            await asyncio.sleep(0.02)

    run(asyncio.wait_for(cancelled(), 30))


def test_exit_is_awaited_without_pidfds_too(
    run: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, new_zombies: Callable[[], set[int]]
) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    assert run(run_command(["sh", "-c", "echo ok; exit 4"], timeout=10)).returncode == 4
    with pytest.raises(CommandError, match="did not finish"):
        run(run_command(["sleep", "300"], timeout=0.3))
    wait_until(lambda: not new_zombies(), "the killed command was not reaped")


def test_thousands_of_commands_next_to_a_busy_grpc_server_on_uvloop(new_zombies: Callable[[], set[int]]) -> None:
    """3,000 GetTask calls, each running a command in the serving process, with ListAgents alongside.

    With asyncio.create_subprocess_exec (libuv's fork under uvloop) some children died of
    SIGSEGV/SIGABRT in grpc's fork handlers before their command ran.
    """
    failures: list[str] = []

    async def main() -> int:
        async with run_service(("tests.sample_connectors:command",), entry_points=False) as svc:
            metas = []
            for index in range(30):
                template = task_template("command", custom={"argv": ["printf", "%s", f"task {index}"]})
                metas.append((f"task {index}", await create_task(svc, template)))

            async def getter(worker: int) -> int:
                done = 0
                for round_ in range(200):
                    expected, meta = metas[(worker + round_) % len(metas)]
                    try:
                        resource = await get_task(svc, meta, "command", timeout=30)
                    except grpc.aio.AioRpcError as exc:
                        failures.append(f"{exc.code().name}: {exc.details()}")
                        continue
                    if resource.message != expected:
                        failures.append(f"{resource.phase}: {resource.message!r} != {expected!r}")
                    done += 1
                return done

            async def lister() -> None:
                for _ in range(1000):
                    await svc.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=30)

            results = await asyncio.gather(*(getter(worker) for worker in range(15)), lister(), lister())
            return sum(r for r in results if isinstance(r, int))

    done = uvloop.run(main())
    assert not failures, f"{len(failures)} of 3000 calls failed, e.g. {failures[:3]}"
    assert done == 3000
    assert not new_zombies()


SUBREAPER = """
import ctypes, os, sys, uvloop
from connector_service import CommandError, run_command

ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans become ours, as PID 1's
try:
    uvloop.run(run_command(["sh", "-c", "sleep 300 & sleep 300 & wait"], timeout=0.5))
except CommandError:
    pass
def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:  # gone meanwhile
        return None
print(sum(parent(p) == os.getpid() for p in os.listdir("/proc") if p.isdigit()))
"""


def test_a_service_that_is_pid_1_reaps_what_a_killed_command_started() -> None:
    """In a container the service is PID 1: a killed command's children are handed to it, and reaped."""
    result = subprocess.run([sys.executable, "-c", SUBREAPER], capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"  # neither sleep is left, running or as a zombie
