"""Benchmark the connector daemon against a bare grpc.aio server and flytekit's service, in one run.

    .venv/bin/python benchmarks/run.py [--quick] [--out benchmarks/results.json]
                                       [--flytekit-python /tmp/fkvenv/bin/python] [--duration S] [--clients K]
                                       [--only startup|matrix|variants|drain|workers|overload]

Starts each server as a subprocess, drives it from separate load-generator processes
(``loadgen.py``: one grpc.aio channel each, N coroutines), and reads the server's CPU
(utime+stime of all its threads) and memory from /proc between two instants of the
monotonic clock. Servers are measured interleaved, point by point, so background load on the
machine affects them alike; each point also records the CPU used by everything else.
Prints a table and the targets as PASS/MISS lines, and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

try:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
except ImportError:  # run with an interpreter without the project: use the repository's venv
    _venv = ROOT / ".venv"
    if (_venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(str(_venv / "bin" / "python"), [str(_venv / "bin" / "python"), *sys.argv])
    raise

sys.path.insert(0, str(ROOT))
from benchmarks.loadgen import OPS, bucket_value, percentile  # noqa: E402

CONNECTORS = ("bench_noop", "bench_sleep", "bench_slow", "bench_block", "bench_block2s", "bench_echo", "BenchSensor")
MATRIX_OPS = tuple(op for op in OPS if op != "get_slow")
"""Every operation loadgen drives but ``get_slow``, which only the SIGTERM drain uses."""
CONCURRENCY = (1, 16, 128)
EQUAL_RATE_OPS = ("create_noop", "get_noop", "list_agents", "sync_echo", "get_sensor")
EQUAL_RATE = 1000.0
"""Calls/s offered to every server alike (open loop) to compare CPU per call at equal load."""
CALL_TIMEOUT = 10.0
"""Seconds: every benchmark call's deadline (propeller's default)."""
DAEMON_QUIET: tuple[str, ...] = ()
"""The daemon is measured as users run it: access log on, info logs, the whole catalogue registered."""
WORKER_SHAPES = (("1 conn", 1, 1), ("8 conns, 1 proc", 1, 8), ("8 conns, 4 procs", 4, 2))
WORKER_COUNTS = (1, 2, 4)
"""--workers scenario: the daemons compared, side by side (ratios are to the first)."""
"""--workers scenario: (label, load processes, channels per process), GetTask noop at total c=128."""
SERVED_CORES = 0.05
"""A --workers process that used more CPU than this (cores) over a window served calls in it."""
PHASES = ("startup", "matrix", "variants", "drain", "workers", "overload")
OVERLOAD_CALLS = 2000
"""overload: GetTask calls sent at once to ``bench_block2s`` (a plain ``def get`` blocking 2 s)."""
OVERLOAD_FAST = 0.1
"""overload: a refusal within this many seconds is "shed fast"."""
OVERLOAD_STEADY_RATE = 200.0
"""overload, steady part: GetTask calls/s to ``bench_block2s`` for a few seconds (its threads serve ~32/s)."""
OVERLOAD_STEADY_S = 5.0
OVERLOAD_POLL_RATE = 50.0
"""overload: calls/s of each steady poller (GetTask bench_noop; ListAgents; health) during the burst."""
OVERLOAD_POLLS = (("get_noop", "GetTask bench_noop"), ("list_agents", "ListAgents"), ("health", "health Check"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    warmup: float
    duration: float
    memory_calls: tuple[int, int]
    capacity_levels: tuple[int, ...]
    startup_samples: int
    access_log: bool
    rate_duration: float
    rate_repeats: int
    budget: float
    """Seconds for the whole run; optional phases are skipped when it runs short."""


QUICK = Plan(0.3, 0.6, (2_000, 20_000), (64, 256), 2, False, 0.6, 1, 170.0)
DEFAULT = Plan(0.5, 2.0, (20_000, 200_000), (32, 64, 128, 256, 384, 512), 3, True, 1.5, 3, 560.0)


# -- /proc -------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS), in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def system_cpu() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy since boot (all cores), and stolen by the hypervisor."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def children(pid: int) -> list[int]:
    """The process's direct children (``/proc/PID/task/*/children``, else a scan of ``/proc``)."""
    found: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.update(int(c) for c in (task / "children").read_text().split())
        return sorted(found)
    except OSError:
        pass
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.add(int(entry.name))
    return sorted(found)


def tcp_sockets(pid: int) -> list[tuple[str, int, int]]:
    """The process's TCP sockets as (state, local port, remote port); state LISTEN, ESTABLISHED or the hex code."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    states = {"01": "ESTABLISHED", "0A": "LISTEN"}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if cols[9] in inodes:
                    local, remote = (int(c.rpartition(":")[2], 16) for c in cols[1:3])
                    found.append((states.get(cols[3], cols[3]), local, remote))
    return found


def connections_per_worker(workers: Sequence[int], port: int, clients: Sequence[LoadClient]) -> list[int]:
    """How many of these clients' connections to ``port`` each worker process holds."""
    ports = {local for c in clients for state, local, remote in tcp_sockets(c.pid) if remote == port}
    return [
        sum(state == "ESTABLISHED" and local == port and remote in ports for state, local, remote in tcp_sockets(w))
        for w in workers
    ]


def uses_uvloop(pid: int) -> bool:
    """Whether uvloop's extension is mapped into the process: the loop it runs on."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
        return "uvloop" in f.read()
    return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- processes ---------------------------------------------------------------------------------


class Processes:
    """Every subprocess this run starts; all of them are killed on the way out, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[subprocess.Popen[Any]] = []

    def spawn(
        self, argv: Sequence[str], log_name: str, *, piped_log: bool = False, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` with its stderr in ``log_name``.

        ``piped_log``: through a pipe that a ``cat`` process copies to the file, as a container
        runtime reads a pod's stderr (a write to a pipe wakes a reader: it costs the server
        more than a write to a file would, and that is the cost servers have in production).
        """
        with open(self.log_dir / log_name, "ab") as log:  # the child keeps its own copy of the descriptor
            kwargs.setdefault("stdout", log)
            stderr: Any = log
            sink = None
            if piped_log:
                sink = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=log, start_new_session=True)
                self._procs.append(sink)
                stderr = sink.stdin
            proc = subprocess.Popen(list(argv), stderr=stderr, cwd=ROOT, start_new_session=True, **kwargs)
            if sink is not None and sink.stdin is not None:
                sink.stdin.close()  # the server holds the pipe now; cat ends when the server does
        self._procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    procs: Processes
    env: dict[str, str] | None = None
    proc: subprocess.Popen[Any] | None = None
    start_to_serving: float | None = None
    log_name: str = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float) -> float:
        """Start it and return the seconds from Popen to health SERVING (polled every 10 ms)."""
        self.log_name = f"{self.name}-{self.port}.log"
        started = time.perf_counter()
        self.proc = self.procs.spawn(self.argv, self.log_name, piped_log=True, env=self.env)
        deadline = started + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before serving:\n{self.log_tail()}")
            if serving(self.port):
                self.start_to_serving = time.perf_counter() - started
                return self.start_to_serving
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.name} not SERVING after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.01)

    def stop(self, timeout: float = 40.0, sig: int = signal.SIGTERM) -> dict[str, Any]:
        """Signal it and wait; SIGKILL if it outlives ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return {"exit_code": None if self.proc is None else self.proc.returncode}
        started = time.perf_counter()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return {"exit_code": "killed", "exit_s": round(time.perf_counter() - started, 3)}
        return {"exit_code": code, "exit_s": round(time.perf_counter() - started, 3)}

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.procs.log_dir / self.log_name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def serving(port: int) -> bool:
    # A fresh channel per attempt (and a local subchannel pool), so grpc's reconnect backoff
    # after a refused connection never delays seeing the server come up.
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False
    finally:
        channel.close()


class LoadClient:
    """One loadgen worker process: one channel to one server, commands over stdin/stdout."""

    def __init__(self, procs: Processes, server: Server, sensor_module: str, index: int, channels: int = 1) -> None:
        argv = [sys.executable, str(BENCH / "loadgen.py"), "--target", f"127.0.0.1:{server.port}"]
        argv += ["--sensor-module", sensor_module, "--channels", str(channels)]
        self.proc = procs.spawn(
            argv, f"loadgen-{server.name}-{server.port}-{index}.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        ready = self.recv(30)
        self.pid: int = ready["pid"]
        self.loop: str = ready["loop"]

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._lines.put(line.decode())
        self._lines.put(None)

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def recv(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=max(timeout, 0.1))
        except queue.Empty:
            raise TimeoutError(f"loadgen {self.proc.pid} did not answer within {timeout:.0f}s") from None
        if line is None:
            raise RuntimeError(f"loadgen {self.proc.pid} exited ({self.proc.poll()})")
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send({"cmd": "quit"})
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Target:
    """A running server and its load clients."""

    server: Server
    clients: list[LoadClient] = field(default_factory=list)
    workers: list[int] = field(default_factory=list)
    """--workers: the supervisor's worker processes, whose CPU counts as the server's too."""

    @property
    def name(self) -> str:
        return self.server.name


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.monotonic()))


def _snapshot(target: Target, clients: Sequence[LoadClient]) -> tuple[float, list[float], float, float, float]:
    return (
        time.monotonic(),
        [cpu_seconds(pid) for pid in (target.server.pid, *target.workers)],
        sum(cpu_seconds(c.pid) for c in clients),
        *system_cpu(),
    )


def _summary(hist: dict[int, int], calls: int, seconds: float) -> dict[str, Any]:
    p50, p99 = percentile(hist, 0.50), percentile(hist, 0.99)
    return {
        "calls": calls,
        "calls_per_s": round(calls / seconds, 1) if seconds else None,
        "p50_ms": None if p50 is None else round(p50 * 1e3, 3),
        "p99_ms": None if p99 is None else round(p99 * 1e3, 3),
    }


def _merge(results: Sequence[dict[str, Any]]) -> tuple[dict[int, int], dict[str, int]]:
    hist: dict[int, int] = {}
    errors: dict[str, int] = {}
    for result in results:
        if "error" in result:
            errors[f"loadgen: {result['error']}"] = errors.get(f"loadgen: {result['error']}", 0) + 1
        for index, count in result.get("hist", ()):
            hist[index] = hist.get(index, 0) + count
        for code, count in result.get("errors", {}).items():
            errors[code] = errors.get(code, 0) + count
    return hist, errors


def measure(target: Target, op: str, concurrency: int, plan: Plan) -> dict[str, Any]:
    """One point: warm up, then calls/s, latency and CPU per call over ``plan.duration`` seconds."""
    shares = _split(concurrency, len(target.clients))
    commands = [{"cmd": "run", "op": op, "concurrency": n} for n in shares if n]
    return {"server": target.name, "op": op, "concurrency": concurrency} | _window(target, commands, plan)


def measure_rate(target: Target, op: str, rate: float, plan: Plan) -> dict[str, Any]:
    """One point at a fixed offered rate (open loop), so servers are compared at equal load."""
    commands = [{"cmd": "rate", "op": op, "rate": r} for r in _split_rate(rate, len(target.clients))]
    return {"server": target.name, "op": op, "rate": rate} | _window(target, commands, plan)


def _split_rate(rate: float, parts: int) -> list[float]:
    return [rate / parts] * parts


def _window(target: Target, commands: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    """Send each client its command for one window, measure the server over it, merge the answers."""
    clients = target.clients[: len(commands)]
    t0 = time.monotonic() + plan.warmup + 0.05
    t1 = t0 + plan.duration
    for client, command in zip(clients, commands, strict=True):
        client.send({**command, "t0": t0, "t1": t1, "timeout": CALL_TIMEOUT})
    _sleep_until(t0)
    w0, s0, c0, b0, st0 = _snapshot(target, clients)
    _sleep_until(t1)
    w1, s1, c1, b1, st1 = _snapshot(target, clients)
    per_process = [b - a for a, b in zip(s0, s1, strict=True)]
    results = [c.recv(t1 - time.monotonic() + CALL_TIMEOUT + 10) for c in clients]
    hist, errors = _merge(results)
    calls = sum(hist.values())
    wall = w1 - w0
    point = _summary(hist, calls, t1 - t0)
    server_cpu, client_cpu = sum(per_process), c1 - c0
    point.update(
        {
            "server_cpu_s": round(server_cpu, 3),
            "server_cpu_us_per_call": round(server_cpu / calls * 1e6, 1) if calls else None,
            "server_cores": round(server_cpu / wall, 3),
            "client_cpu_us_per_call": round(client_cpu / calls * 1e6, 1) if calls else None,
            "other_cpu_cores": round(max(0.0, (b1 - b0) - server_cpu - client_cpu) / wall, 3),
            "steal_cores": round((st1 - st0) / wall, 3),
            "errors": errors,
        }
    )
    if target.workers:
        point["supervisor_cores"] = round(per_process[0] / wall, 3)
        point["worker_cores"] = [round(cpu / wall, 3) for cpu in per_process[1:]]
    skipped = sum(r.get("skipped", 0) for r in results)
    if skipped:
        point["skipped"] = skipped
    if errors:
        point["error_samples"] = {k: v for r in results for k, v in r.get("samples", {}).items()}
    return point


def count_calls(target: Target, op: str, concurrency: int, calls: int) -> dict[str, Any]:
    """Exactly ``calls`` calls (split over the clients); returns rate, latency and errors."""
    shares = [(c, n) for c, n in zip(target.clients, _split(concurrency, len(target.clients)), strict=True) if n]
    per_client = _split(calls, len(shares))
    for (client, n), m in zip(shares, per_client, strict=True):
        client.send({"cmd": "count", "op": op, "concurrency": n, "calls": m, "timeout": CALL_TIMEOUT})
    results = [c.recv(calls / 500 + 60) for c, _ in shares]
    hist, errors = _merge(results)
    seconds = max(r.get("elapsed", 0.0) for r in results)
    return {**_summary(hist, sum(hist.values()), seconds), "seconds": round(seconds, 2), "errors": errors}


def sigterm_test(target: Target, after: float = 0.35) -> dict[str, Any]:
    """128 one-second GetTasks in flight, SIGTERM mid-flight: how many did not return OK?"""
    client = target.clients[0]
    client.send({"cmd": "once", "op": "get_slow", "concurrency": 128, "timeout": 30.0})
    started = client.recv(20)
    if started.get("event") != "started":
        return {"error": f"loadgen: {started}"}
    time.sleep(after)
    signalled = time.perf_counter()
    assert target.server.proc is not None
    target.server.proc.send_signal(signal.SIGTERM)
    result = client.recv(45)
    try:
        code: int | str | None = target.server.proc.wait(40)
    except subprocess.TimeoutExpired:
        target.server.proc.kill()
        code = "killed"
    return {
        "calls": 128,
        "get_seconds": 1.0,
        "sigterm_after_s": after + 0.05,
        "ok": result.get("ok"),
        "failed": result.get("failed"),
        "codes": result.get("codes"),
        "error_samples": result.get("samples"),
        "exit_code": code,
        "sigterm_to_exit_s": round(time.perf_counter() - signalled, 3),
    }


# -- the run -----------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace, plan: Plan, procs: Processes) -> None:
        self.args = args
        self.plan = plan
        self.procs = procs
        self.started = time.monotonic()
        self.results: dict[str, Any] = {"notes": []}
        self.daemon_bin = _daemon_command()
        self.flytekit_python: str | None = None

    def left(self) -> float:
        return self.plan.budget - (time.monotonic() - self.started)

    def note(self, text: str) -> None:
        self.results["notes"].append(text)
        log(f"note: {text}")

    # servers

    def daemon(self, *extra: str, connectors: bool = True, quiet: bool = True, metrics_port: int = 0) -> Server:
        argv = [*self.daemon_bin, "serve", "--host", "127.0.0.1", "--port", str(port := free_port())]
        argv += ["--metrics-port", str(metrics_port), *(DAEMON_QUIET if quiet else ())]
        if connectors:
            for name in CONNECTORS:
                argv += ["--connector", f"benchmarks.bench_connectors:{name}"]
        # Neither CONNECTOR_* settings nor $WEB_CONCURRENCY (the --workers default) from this shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_") and k != "WEB_CONCURRENCY"}
        return Server("daemon", [*argv, *extra], port, self.procs, env=env)

    def bare(self) -> Server:
        port = free_port()
        argv = [sys.executable, str(BENCH / "bare_server.py"), "--port", str(port), "--loop", "uvloop"]
        return Server("bare", argv, port, self.procs)

    def flytekit(self, python: str) -> Server:
        port = free_port()
        script = Path(python).parent / "pyflyte"
        if script.exists():
            argv = [str(script)]
        else:
            argv = [
                python,
                "-c",
                "import sys; from flytekit.clis.sdk_in_container.pyflyte import main; sys.exit(main())",
            ]
        argv += ["serve", "connector", "--port", str(port), "--prometheus_port", str(free_port())]
        argv += ["--modules", "benchmarks.flytekit_connectors"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
        return Server("flytekit", argv, port, self.procs, env=env)

    def connect(self, server: Server) -> Target:
        module = "benchmarks.flytekit_connectors" if server.name == "flytekit" else "benchmarks.bench_connectors"
        target = Target(server)
        target.clients = [LoadClient(self.procs, server, module, i) for i in range(self.args.clients)]
        return target

    def describe(self, server: Server) -> dict[str, Any]:
        time.sleep(0.3)
        mem = memory(server.pid)
        return {
            "start_to_serving_s": round(server.start_to_serving or 0.0, 3),
            "idle_rss_mib": round(mem["VmRSS"] / MIB, 1),
            "loop": "uvloop" if uses_uvloop(server.pid) else "asyncio",
            "argv": server.argv,
        }

    # phases

    def startup(self) -> None:
        """Start to SERVING and idle RSS with only the bundled connectors (what ships)."""
        samples = []
        for _ in range(self.plan.startup_samples):
            # As shipped (metrics served, info logs), but --shutdown-delay 0 so that stopping is quick.
            server = self.daemon("--shutdown-delay", "0", connectors=False, quiet=False, metrics_port=free_port())
            server.start(30)
            info = self.describe(server)
            server.stop(10)
            samples.append(info)
            log(f"startup (bundled connectors): {info['start_to_serving_s']:.3f}s, idle RSS {info['idle_rss_mib']} MiB")
        self.results["startup_bundled"] = {
            "samples": samples,
            "start_to_serving_s": statistics.median(s["start_to_serving_s"] for s in samples),
            "idle_rss_mib": statistics.median(s["idle_rss_mib"] for s in samples),
        }

    def main_matrix(self) -> None:
        targets: list[Target] = []
        servers = [self.daemon(), self.bare()]
        if self.flytekit_python:
            servers.append(self.flytekit(self.flytekit_python))
        info: dict[str, Any] = {}
        try:
            for server in servers:
                took = server.start(90 if server.name == "flytekit" else 30)
                log(f"{server.name}: SERVING after {took:.3f}s (pid {server.pid})")
                info[server.name] = self.describe(server)
            targets = [self.connect(s) for s in servers]
            info["client_loop"] = targets[0].clients[0].loop
            self.results["servers"] = info
            points: list[dict[str, Any]] = []
            self.results["points"] = points
            for op in MATRIX_OPS:
                for concurrency in CONCURRENCY:
                    for target in targets:
                        point = measure(target, op, concurrency, self.plan)
                        points.append(point)
                        log(_point_line(point))
            self.equal_load(targets)
            self.capacity(targets[0])
            for target in targets:
                mem = memory(target.server.pid)
                info[target.name]["peak_rss_mib"] = round(mem["VmHWM"] / MIB, 1)
                info[target.name]["rss_after_load_mib"] = round(mem["VmRSS"] / MIB, 1)
            sigterm: dict[str, Any] = {}
            for target in targets:
                if target.name != "bare":
                    sigterm[f"{target.name} (default settings)"] = result = sigterm_test(target)
                    log(f"SIGTERM {target.name}: {result.get('failed')} of 128 failed {result.get('codes')}")
            self.results["sigterm"] = sigterm
        finally:
            for target in targets:
                for client in target.clients:
                    client.close()
            for server in servers:
                server.stop(40)

    def equal_load(self, targets: Sequence[Target]) -> None:
        """CPU per call with every server offered the same calls/s: the like-for-like cost comparison."""
        plan = dataclasses.replace(self.plan, duration=self.plan.rate_duration)
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _ in range(self.plan.rate_repeats):
            for op in EQUAL_RATE_OPS:
                for target in targets:
                    point = measure_rate(target, op, EQUAL_RATE, plan)
                    runs.setdefault((target.name, op), []).append(point)
                    log("equal load " + _point_line(point))
        summary = []
        for (server, op), points in runs.items():
            cpu = [p["server_cpu_us_per_call"] for p in points if p["server_cpu_us_per_call"] is not None]
            p99 = [p["p99_ms"] for p in points if p["p99_ms"] is not None]
            summary.append(
                {
                    "server": server,
                    "op": op,
                    "rate": EQUAL_RATE,
                    "server_cpu_us_per_call": statistics.median(cpu) if cpu else None,
                    "server_cpu_us_per_call_runs": cpu,
                    "p99_ms": statistics.median(p99) if p99 else None,
                    "calls_per_s": statistics.median(p["calls_per_s"] for p in points),
                    "errors": sum(sum(p["errors"].values()) for p in points),
                    "runs": points,
                }
            )
        self.results["equal_rate"] = summary

    def capacity(self, target: Target) -> None:
        """Highest sustained GetTask rate with p99 < 100 ms (concurrency sweep, then bisection), x 30 s polls."""
        out: dict[str, Any] = {}
        for op in ("get_sleep", "get_sensor"):
            sweep: list[dict[str, Any]] = []
            good, bad = 0, 0
            for level in self.plan.capacity_levels:
                ok = self._capacity_point(target, op, level, sweep)
                if not ok:
                    bad = level if ok is False else 0
                    break
                good = level
            for _ in range(2):  # bisect between the last good and the first bad concurrency
                if not bad or bad - good <= 16:
                    break
                level = (good + bad) // 2
                ok = self._capacity_point(target, op, level, sweep)
                if ok is None:
                    break
                good, bad = (level, bad) if ok else (good, level)
            best = max((p for p in sweep if _fast_enough(p)), key=lambda p: p["calls_per_s"], default=None)
            entry: dict[str, Any] = {"sweep": sweep}
            if best is not None:
                cpu = best["server_cpu_us_per_call"]
                entry.update(
                    {
                        "best_concurrency": best["concurrency"],
                        "rate_per_s": best["calls_per_s"],
                        "p99_ms": best["p99_ms"],
                        "tasks_at_30s_poll": int(best["calls_per_s"] * 30),
                        "server_cores_used": best["server_cores"],
                        "tasks_per_server_core_at_30s_poll": int(30 / (cpu / 1e6)) if cpu else None,
                    }
                )
            out[op] = entry
        self.results["capacity"] = out

    def _capacity_point(self, target: Target, op: str, level: int, sweep: list[dict[str, Any]]) -> bool | None:
        """Measure ``op`` at concurrency ``level``: p99 under 100 ms without errors? None: out of time."""
        if self.left() < 60:
            self.note(f"capacity sweep of {op} cut short at concurrency {level} (time budget)")
            return None
        point = measure(target, op, level, self.plan)
        sweep.append(point)
        log("capacity " + _point_line(point))
        return _fast_enough(point)

    def memory_and_variants(self) -> None:
        """Memory flatness, then the loop and the access log compared on running daemons, interleaved.

        Daemons run side by side and take turns, so a drift of the machine's speed over time
        (a VM's neighbours) hits every variant alike; figures are medians of the repeats.
        """
        variants = [("uvloop", self.daemon("--loop", "uvloop")), ("asyncio", self.daemon("--loop", "asyncio"))]
        if self.plan.access_log and self.left() > 120:
            variants.append(("access log off", self.daemon("--loop", "uvloop", "--no-access-log")))
        elif self.plan.access_log:
            self.note("access-log comparison skipped (time budget)")
        targets: list[Target] = []
        try:
            for _, server in variants:
                server.start(30)
            targets = [self.connect(server) for _, server in variants]
            self.memory(targets[0])
            runs: dict[str, list[dict[str, Any]]] = {}
            for _ in range(self.plan.rate_repeats):
                for (name, server), target in zip(variants, targets, strict=True):
                    point = measure(target, "get_noop", 128, self.plan)
                    point["loop_detected"] = "uvloop" if uses_uvloop(server.pid) else "asyncio"
                    runs.setdefault(name, []).append(point)
                    log(f"{name}: " + _point_line(point))
            summary = {name: _median_point(points) for name, points in runs.items()}
            self.results["loops"] = {k: v for k, v in summary.items() if k in ("uvloop", "asyncio")}
            if "access log off" in summary:
                self.results["access_log"] = {"on": summary["uvloop"], "off": summary["access log off"]}
        finally:
            for target in targets:
                for client in target.clients:
                    client.close()
            for _, server in variants:
                server.stop(40)

    def memory(self, target: Target) -> None:
        first, total = self.plan.memory_calls
        pid = target.server.pid
        rss = [memory(pid)["VmRSS"]]
        a = count_calls(target, "get_noop", 128, first)
        rss.append(memory(pid)["VmRSS"])
        expected = (total - first) / max(a["calls_per_s"] or 1.0, 1.0)
        if expected > self.left() - 60:
            total = first + int(max(self.left() - 60, 5.0) * (a["calls_per_s"] or 1.0))
            self.note(f"memory run shortened to {total} calls (time budget)")
        b = count_calls(target, "get_noop", 128, total - first)
        rss.append(memory(pid)["VmRSS"])
        self.results["memory"] = {
            "op": "get_noop",
            "concurrency": 128,
            "calls": [first, total],
            "rss_mib": [round(r / MIB, 1) for r in rss],
            "ratio": round(rss[2] / rss[1], 3),
            "runs": [a, b],
        }
        log(f"memory: RSS {rss[1] / MIB:.1f} MiB after {first} calls, {rss[2] / MIB:.1f} after {total}")

    def drain(self) -> None:
        """SIGTERM with --shutdown-delay 0: the server stops taking calls while 128 are in flight."""
        server = self.daemon("--shutdown-delay", "0")
        target: Target | None = None
        try:
            server.start(30)
            target = self.connect(server)
            result = sigterm_test(target)
            self.results.setdefault("sigterm", {})["daemon (--shutdown-delay 0)"] = result
            log(f"SIGTERM daemon --shutdown-delay 0: {result.get('failed')} of 128 failed {result.get('codes')}")
        finally:
            if target is not None:
                for client in target.clients:
                    client.close()
            server.stop(40)

    def workers(self) -> None:
        """``--workers 1``, ``2`` and ``4``: GetTask noop at c=128 over one connection and over eight.

        SO_REUSEPORT spreads connections, not calls, over the worker processes: one channel lands
        on one worker. Both daemons run side by side and take turns, shape by shape.
        """
        # --shutdown-delay 0 only so that stopping them takes no time; both run with the same flags.
        servers = {n: self.daemon("--workers", str(n), "--shutdown-delay", "0") for n in WORKER_COUNTS}
        targets: dict[int, Target] = {}
        try:
            for n, server in servers.items():
                server.start(30)
                targets[n] = Target(server)
                if n > 1:
                    targets[n].workers = _wait_workers(server, n, 30)
            clients: dict[tuple[int, str], list[LoadClient]] = {}
            for n, target in targets.items():
                for label, processes, channels in WORKER_SHAPES:
                    clients[n, label] = [
                        LoadClient(self.procs, target.server, "benchmarks.bench_connectors", i, channels)
                        for i in range(processes)
                    ]
                    target.clients += clients[n, label]
            runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
            for _ in range(self.plan.rate_repeats):
                for label, _, _ in WORKER_SHAPES:
                    for n, target in targets.items():
                        shape = Target(target.server, clients[n, label], target.workers)
                        point = measure(shape, "get_noop", 128, self.plan)
                        point["workers_served"] = (
                            sum(c > SERVED_CORES for c in point["worker_cores"]) if target.workers else 1
                        )
                        runs.setdefault((n, label), []).append(point)
                        log(f"--workers {n} {label}: " + _point_line(point) + f" served by {point['workers_served']}")
            shapes: dict[str, Any] = {}
            for label, processes, channels in WORKER_SHAPES:
                entry: dict[str, Any] = {
                    "load_processes": processes,
                    "channels_per_process": channels,
                    "connections": processes * channels,
                }
                for n, target in targets.items():
                    points = runs[n, label]
                    summary: dict[str, Any] = {
                        key: _median([p[key] for p in points if p[key] is not None])
                        for key in ("calls_per_s", "p99_ms", "server_cpu_us_per_call", "server_cores")
                    }
                    load = [
                        p["client_cpu_us_per_call"] * p["calls_per_s"] / 1e6
                        for p in points
                        if p["client_cpu_us_per_call"] is not None and p["calls_per_s"]
                    ]
                    summary["load_cores"] = round(_median(load) or 0.0, 3)
                    summary["workers_served"] = min(p["workers_served"] for p in points)
                    summary["errors"] = sum(sum(p["errors"].values()) for p in points)
                    if target.workers:
                        summary["connections_per_worker"] = connections_per_worker(
                            target.workers, target.server.port, clients[n, label]
                        )
                    summary["runs"] = points
                    entry[f"workers{n}"] = summary
                w1 = entry[f"workers{WORKER_COUNTS[0]}"]
                entry["ratios"] = {
                    n: {
                        key: _ratio(entry[f"workers{n}"][key], w1[key])
                        for key in ("calls_per_s", "p99_ms", "server_cpu_us_per_call")
                    }
                    for n in WORKER_COUNTS[1:]
                }
                entry["ratio"] = entry["ratios"][WORKER_COUNTS[1]]
                shapes[label] = entry
            self.results["workers"] = {
                "op": "get_noop",
                "concurrency": 128,
                "repeats": self.plan.rate_repeats,
                "served_threshold_cores": SERVED_CORES,
                "counts": list(WORKER_COUNTS),
                "cores": len(os.sched_getaffinity(0)),
                "shapes": shapes,
                "interpretation": _workers_sentence(shapes),
            }
        finally:
            for target in targets.values():
                for client in target.clients:
                    client.close()
            for server in servers.values():
                server.stop(40)

    def overload(self) -> None:
        """2,000 GetTasks at once to a connector whose plain ``def get`` blocks 2 s (deadline 10 s).

        Against the daemon as shipped (access log on, info logs, the whole catalogue plus the
        benchmark connectors) and flytekit's server with the same connectors, one after the
        other (the burst saturates the machine). One load process sends the burst over one
        channel, as propeller would; three others poll GetTask of ``bench_noop`` (an async
        connector), ListAgents and health at a steady rate on their own connections, first for
        a quiet window (the normal latency), then across the burst.
        """
        servers = [self.daemon(quiet=False)]
        python = self.flytekit_python
        if python and not self.args.no_flytekit:
            servers.append(self.flytekit(python))
        out: dict[str, Any] = {
            "calls": OVERLOAD_CALLS,
            "get_seconds": 2.0,
            "deadline_s": CALL_TIMEOUT,
            "fast_s": OVERLOAD_FAST,
            "poll_rate": OVERLOAD_POLL_RATE,
        }
        for server in servers:
            clients: list[LoadClient] = []
            try:
                server.start(90 if server.name == "flytekit" else 30)
                module = f"benchmarks.{'flytekit' if server.name == 'flytekit' else 'bench'}_connectors"
                clients = [LoadClient(self.procs, server, module, i) for i in range(1 + len(OVERLOAD_POLLS))]
                out[server.name] = result = _overload_run(server, clients)
                log(f"overload {server.name}: {_overload_line(result)}")
            finally:
                for client in clients:
                    client.close()
                server.stop(40)
        self.results["overload"] = out


def _overload_run(server: Server, clients: list[LoadClient]) -> dict[str, Any]:
    burst, pollers = clients[0], clients[1:]
    ops = [op for op, _ in OVERLOAD_POLLS]

    def poll(t0: float, t1: float) -> dict[str, dict[str, Any]]:
        for client, op in zip(pollers, ops, strict=True):
            client.send({"cmd": "rate", "op": op, "rate": OVERLOAD_POLL_RATE, "t0": t0, "t1": t1, "timeout": 10.0})
        return {
            op: _poll_summary(client.recv(t1 - time.monotonic() + CALL_TIMEOUT + 30))
            for client, op in zip(pollers, ops, strict=True)
        }

    # Warm-up (each client makes its CreateTask and connection), then the quiet window.
    now = time.monotonic()
    burst.send({"cmd": "count", "op": "get_block2s", "concurrency": 1, "calls": 1, "timeout": CALL_TIMEOUT})
    poll(now + 0.5, now + 1.0)
    burst.recv(30)
    now = time.monotonic()
    quiet = poll(now + 0.2, now + 3.2)
    # The burst: pollers run from just before it until every burst call has had its deadline.
    t0 = time.monotonic() + 1.0
    cpu0 = cpu_seconds(server.pid)
    burst.send({"cmd": "burst", "op": "get_block2s", "calls": OVERLOAD_CALLS, "t0": t0 + 0.5, "timeout": CALL_TIMEOUT})
    during = poll(t0, t0 + 0.5 + CALL_TIMEOUT + 1.0)
    answer = burst.recv(CALL_TIMEOUT + 60)
    cpu1 = cpu_seconds(server.pid)
    outcomes = answer.get("outcomes", {})
    hists = {code: dict(h) for code, h in answer.get("hists", {}).items()}
    refused: dict[str, int] = {}
    for code in ("SHED_FAST", "SHED_SLOW"):
        for k, v in hists.get(code, {}).items():
            refused[k] = refused.get(k, 0) + v
    if refused:
        hists["REFUSED"] = refused
    latency = {
        code: {
            "p50_ms": _ms(percentile({int(k): v for k, v in h.items()}, 0.5)),
            "max_ms": _ms(percentile({int(k): v for k, v in h.items()}, 1.0)),
        }
        for code, h in hists.items()
    }
    known = ("OK", "SHED_FAST", "SHED_SLOW", "DEADLINE_EXCEEDED", "CANCELLED")
    # Steady overload: calls keep coming at a rate the connector cannot serve.
    time.sleep(max(0.0, t0 + 0.5 + CALL_TIMEOUT + 1.5 - time.monotonic()))
    s0 = time.monotonic() + 0.3
    burst.send(
        {
            "cmd": "rate",
            "op": "get_block2s",
            "rate": OVERLOAD_STEADY_RATE,
            "t0": s0,
            "t1": s0 + OVERLOAD_STEADY_S,
            "timeout": CALL_TIMEOUT,
            "max_inflight": 100_000,
            "by_start": True,
        }
    )
    steady_polls = poll(s0, s0 + OVERLOAD_STEADY_S)
    steady = _steady_summary(burst.recv(OVERLOAD_STEADY_S + CALL_TIMEOUT + 60))
    steady["during"] = steady_polls
    # For scale: the same burst to a connector that answers at once. Its last answer is the
    # time the server needs just to take 2,000 calls in, the floor of any refusal's latency.
    time.sleep(max(0.0, t0 + 0.5 + CALL_TIMEOUT + 1.5 - time.monotonic()))
    burst.send(
        {
            "cmd": "burst",
            "op": "get_noop",
            "calls": OVERLOAD_CALLS,
            "t0": time.monotonic() + 0.3,
            "timeout": CALL_TIMEOUT,
        }
    )
    floor = burst.recv(CALL_TIMEOUT + 60)
    floor_hist: dict[int, int] = {}
    for h in floor.get("hists", {}).values():
        for k, v in h:
            floor_hist[int(k)] = floor_hist.get(int(k), 0) + v
    return {
        "served": outcomes.get("OK", 0),
        "shed_fast": outcomes.get("SHED_FAST", 0),
        "shed_slow": outcomes.get("SHED_SLOW", 0),
        "deadline_exceeded": outcomes.get("DEADLINE_EXCEEDED", 0),
        "cancelled": outcomes.get("CANCELLED", 0),
        "other": {k: v for k, v in outcomes.items() if k not in known},
        "latency": latency,
        "last_return_s": answer.get("last_return_s"),
        "error": answer.get("error"),
        "messages": answer.get("samples", {}),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "quiet": quiet,
        "during": during,
        "steady": steady,
        "noop_burst": {
            "outcomes": floor.get("outcomes", {}),
            "p50_ms": _ms(percentile(floor_hist, 0.5)),
            "max_ms": _ms(percentile(floor_hist, 1.0)),
        },
    }


def _steady_summary(result: dict[str, Any]) -> dict[str, Any]:
    hist = {int(k): v for k, v in result.get("hist", ())}
    refused = {int(k): v for k, v in result.get("error_hists", {}).get("RESOURCE_EXHAUSTED", ())}
    return {
        "rate": OVERLOAD_STEADY_RATE,
        "seconds": OVERLOAD_STEADY_S,
        "served": sum(hist.values()),
        "refused": sum(refused.values()),
        "refused_within_fast": sum(v for k, v in refused.items() if bucket_value(k) <= OVERLOAD_FAST),
        "refused_p50_ms": _ms(percentile(refused, 0.5)),
        "refused_p99_ms": _ms(percentile(refused, 0.99)),
        "refused_max_ms": _ms(percentile(refused, 1.0)),
        "errors": result.get("errors", {}),
        "error": result.get("error"),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 1)


def _poll_summary(result: dict[str, Any]) -> dict[str, Any]:
    hist, errors = _merge([result])
    return {
        "calls": sum(hist.values()),
        "p50_ms": _ms(percentile(hist, 0.5)),
        "p99_ms": _ms(percentile(hist, 0.99)),
        "max_ms": _ms(percentile(hist, 1.0)),
        "errors": errors,
        "skipped": result.get("skipped", 0),
    }


def _overload_line(r: dict[str, Any]) -> str:
    noop_quiet, noop = r["quiet"]["get_noop"], r["during"]["get_noop"]
    shed = r["latency"].get("REFUSED", {})
    floor = r.get("noop_burst", {})
    st = r.get("steady", {})
    return (
        f"served {r['served']}, shed fast {r['shed_fast']}, shed slow {r['shed_slow']} "
        f"(refusals: p50 {shed.get('p50_ms')} ms, last {shed.get('max_ms')} ms), "
        f"deadline exceeded {r['deadline_exceeded']}, cancelled {r['cancelled']}, other {r['other'] or 0}; "
        f"GetTask bench_noop p99 {noop_quiet['p99_ms']} ms quiet -> {noop['p99_ms']} ms during "
        f"(errors {noop['errors'] or 0}); ListAgents p99 {r['during']['list_agents']['p99_ms']} ms, "
        f"health p99 {r['during']['health']['p99_ms']} ms; steady {st.get('rate', 0):.0f}/s for "
        f"{st.get('seconds')} s: served {st.get('served')}, refused {st.get('refused')} "
        f"({st.get('refused_within_fast')} within {OVERLOAD_FAST * 1000:.0f} ms; p50 {st.get('refused_p50_ms')}, "
        f"p99 {st.get('refused_p99_ms')} ms), codes {st.get('errors')}, GetTask bench_noop p99 "
        f"{st.get('during', {}).get('get_noop', {}).get('p99_ms')} ms; the same burst to bench_noop: "
        f"{floor.get('outcomes')}, p50 {floor.get('p50_ms')} ms, last {floor.get('max_ms')} ms"
    )


def _wait_workers(server: Server, count: int, timeout: float) -> list[int]:
    """The supervisor's worker pids once ``count`` of them listen on the port (SERVING is one of them)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = children(server.pid)
        listening = [pid for pid in pids if ("LISTEN", server.port, 0) in tcp_sockets(pid)]
        if len(listening) >= count:
            return listening
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(listening)} of {count} workers listening after {timeout:.0f}s: {pids}")
        time.sleep(0.05)


def _workers_sentence(shapes: dict[str, Any]) -> str:
    """One sentence from the figures: did more workers serve calls, and did they buy throughput?

    The one-connection shape is the control: more workers cannot help it, so its ratio shows
    the run-to-run noise; a gain counts only if it is 1.2x or more and 0.1 above that. The load
    generator's own cores are stated: on a machine with few cores it competes with the workers.
    """
    cores = len(os.sched_getaffinity(0))
    single = [e for e in shapes.values() if e["connections"] == 1]
    many = [(label, e) for label, e in shapes.items() if e["connections"] > 1]
    parts = []
    for n in WORKER_COUNTS[1:]:
        key = f"workers{n}"
        if single:
            e = single[0]
            parts.append(
                f"{n} workers: one connection was served by {e[key]['workers_served']} of {n} "
                f"(calls/s x{_fmt(e['ratios'][n]['calls_per_s'], '.2f')}, noise)"
            )
        if many:
            control = (single[0]["ratios"][n]["calls_per_s"] or 1.0) if single else 1.0
            ratios = [e["ratios"][n]["calls_per_s"] or 0.0 for _, e in many]
            gains = [r >= max(1.2, control + 0.1) for r in ratios]
            verdict = (
                "raised calls/s" if all(gains) else "raised calls/s in one shape only" if any(gains) else "no gain"
            )
            served = max(e[key]["workers_served"] for _, e in many)
            label, first = many[0]
            parts.append(
                f"{first['connections']} connections reached {served} of {n} workers: {verdict} "
                f"(x{'/'.join(f'{r:.2f}' for r in ratios)}); with {label} the server used "
                f"{_fmt(first[key]['server_cores'], '.2f')} cores and the load generator "
                f"{_fmt(first[key]['load_cores'], '.2f')} of the machine's {cores}"
            )
    return f"--workers vs {WORKER_COUNTS[0]}: " + "; ".join(parts) + "."


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fast_enough(point: dict[str, Any]) -> bool:
    return not point["errors"] and point["p99_ms"] is not None and point["p99_ms"] < 100


def _median_point(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CPU per call, with every run's figures alongside."""
    ranked = sorted(points, key=lambda p: p["server_cpu_us_per_call"] or 0.0)
    return {**ranked[len(ranked) // 2], "runs": points}


def _daemon_command() -> list[str]:
    script = Path(sys.executable).parent / "connector-service"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "connector_service"]


def find_flytekit(explicit: str | None) -> tuple[str | None, str]:
    """An interpreter with flytekit and its connector extras: --flytekit-python, this one, /tmp/fkvenv."""
    default = os.environ.get("FLYTEKIT_PYTHON", "/tmp/fkvenv/bin/python")
    candidates = [explicit, sys.executable] if explicit else [sys.executable, default]
    probe = "import flytekit, grpc_health, prometheus_client, httpx; print(flytekit.__version__)"
    for python in candidates:
        if not python or not Path(python).exists():
            continue
        try:
            done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return python, done.stdout.strip()
    return None, ""


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "packages": {
            n: version(n) for n in ("grpcio", "uvloop", "flyteidl", "protobuf", "flyte-connector-service", "flytekit")
        },
    }


# -- report ------------------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _point_line(p: dict[str, Any]) -> str:
    errors = f" errors {p['errors']}" if p["errors"] else ""
    load = f"c={p['concurrency']:<4}" if "concurrency" in p else f"@{p['rate']:.0f}/s"
    return (
        f"{p['op']:<12} {load:<7} {p['server']:<8} {p['calls_per_s'] or 0:>8.0f}/s "
        f"p50 {p['p50_ms'] or 0:7.2f}ms p99 {p['p99_ms'] or 0:7.2f}ms "
        f"cpu {p['server_cpu_us_per_call'] or 0:7.0f}us/call ({p['server_cores']:.2f} cores, "
        f"others {p['other_cpu_cores']:.2f}){errors}"
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    points = {(p["server"], p["op"], p["concurrency"]): p for p in results.get("points", [])}
    checks: list[dict[str, Any]] = []

    def check(name: str, figure: float | None, baseline: float | None, ok: bool | None, unit: str, goal: str) -> None:
        status = "SKIP" if ok is None else ("PASS" if ok else "MISS")
        ratio = _ratio(figure, baseline) if baseline is not None else None
        checks.append(
            {
                "target": name,
                "figure": None if figure is None else round(figure, 3),
                "baseline": None if baseline is None else round(baseline, 3),
                "ratio": ratio,
                "unit": unit,
                "goal": goal,
                "status": status,
            }
        )

    equal = {(p["server"], p["op"]): p for p in results.get("equal_rate", [])}
    for op, label in (
        ("create_noop", "CreateTask"),
        ("get_noop", "GetTask"),
        ("list_agents", "ListAgents"),
        ("sync_echo", "ExecuteTaskSync"),
    ):
        # Like for like: the same offered load (median of the repeats); then at concurrency 128,
        # where each server runs as fast as it can and so at a different rate.
        for label_load, d, b in (
            (f"@{EQUAL_RATE:.0f}/s", equal.get(("daemon", op)), equal.get(("bare", op))),
            ("c=128", points.get(("daemon", op, 128)), points.get(("bare", op, 128))),
        ):
            figure = d and d["server_cpu_us_per_call"]
            base = b and b["server_cpu_us_per_call"]
            ratio = _ratio(figure, base)
            ok = None if ratio is None else ratio <= 1.2
            check(f"CPU/call {label} {label_load} vs bare", figure, base, ok, "us", "<= 1.2x")
    d, b = points.get(("daemon", "get_noop", 128)), points.get(("bare", "get_noop", 128))
    ratio = _ratio(d and d["calls_per_s"], b and b["calls_per_s"])
    check(
        "GetTask calls/s c=128 vs bare",
        d and d["calls_per_s"],
        b and b["calls_per_s"],
        None if ratio is None else ratio >= 0.9,
        "/s",
        ">= 0.9x",
    )
    d, f = points.get(("daemon", "get_block", 128)), points.get(("flytekit", "get_block", 128))
    ratio = _ratio(d and d["calls_per_s"], f and f["calls_per_s"])
    check(
        "bench_block calls/s c=128 vs flytekit",
        d and d["calls_per_s"],
        f and f["calls_per_s"],
        None if ratio is None else ratio >= 8,
        "/s",
        ">= 8x",
    )
    p99 = d and d["p99_ms"]
    check("bench_block p99 c=128", p99, None, None if p99 is None else p99 < 200, "ms", "< 200 ms")
    boot = results.get("startup_bundled", {})
    s = boot.get("start_to_serving_s")
    check("start to SERVING (bundled)", s, None, None if s is None else s <= 0.4, "s", "<= 0.4 s")
    rss = boot.get("idle_rss_mib")
    check("idle RSS (bundled)", rss, None, None if rss is None else rss <= 60, "MiB", "<= 60 MiB")
    failed = [v.get("failed") for k, v in results.get("sigterm", {}).items() if k.startswith("daemon")]
    total = sum(x for x in failed if isinstance(x, int)) if failed and None not in failed else None
    check("in-flight failures across SIGTERM", total, None, None if total is None else total == 0, "calls", "0")
    memory_run = results.get("memory", {})
    first, total = memory_run.get("calls", (20_000, 200_000))
    mem = memory_run.get("ratio")
    label = f"RSS after {total // 1000}k / after {first // 1000}k GetTasks"
    check(label, mem, None, None if mem is None else mem <= 1.10, "x", "<= 1.10")
    return checks


def _matrix_table(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    header = (
        f"{'op':<12}{'c':>4} | {'daemon/s':>8} {'p50ms':>7} {'p99ms':>7} {'cpu us':>7} | {'bare/s':>8} {'cpu us':>7} | "
        f"{'flytekit/s':>10} {'p99ms':>8} {'cpu us':>7} | {'cpu d/b':>7} {'rate d/b':>8} {'rate d/f':>8}"
    )
    out.append(header)
    out.append("-" * len(header))
    points = {(p["server"], p["op"], p["concurrency"]): p for p in results.get("points", [])}
    for op in MATRIX_OPS:
        for c in CONCURRENCY:
            d, b, f = (points.get((s, op, c), {}) for s in ("daemon", "bare", "flytekit"))
            flag = " !" if any(x.get("errors") for x in (d, b, f)) else ""
            out.append(
                f"{op:<12}{c:>4} | {_fmt(d.get('calls_per_s'), '8.0f')} {_fmt(d.get('p50_ms'), '7.2f')} "
                f"{_fmt(d.get('p99_ms'), '7.2f')} {_fmt(d.get('server_cpu_us_per_call'), '7.0f')} | "
                f"{_fmt(b.get('calls_per_s'), '8.0f')} {_fmt(b.get('server_cpu_us_per_call'), '7.0f')} | "
                f"{_fmt(f.get('calls_per_s'), '10.0f')} {_fmt(f.get('p99_ms'), '8.2f')} "
                f"{_fmt(f.get('server_cpu_us_per_call'), '7.0f')} | "
                f"{_fmt(_ratio(d.get('server_cpu_us_per_call'), b.get('server_cpu_us_per_call')), '7.2f')} "
                f"{_fmt(_ratio(d.get('calls_per_s'), b.get('calls_per_s')), '8.2f')} "
                f"{_fmt(_ratio(d.get('calls_per_s'), f.get('calls_per_s')), '8.2f')}{flag}"
            )
    out.append("(cpu us = server CPU (utime+stime, all threads) per call; cycle = Create+Get+Delete; ! = errors)")
    out.append("")
    return out


def _workers_table(workers: dict[str, Any]) -> list[str]:
    counts = workers.get("counts") or [1, 2]
    out = [
        f"--workers: GetTask bench_noop, total c={workers['concurrency']}, daemons with --workers "
        f"{'/'.join(str(n) for n in counts)} side by side on {workers.get('cores', '?')} cores, median of "
        f"{workers['repeats']}; cpu us = supervisor + workers per call; busy = workers above "
        f"{workers['served_threshold_cores']} cores; load = the load generator's cores"
    ]
    header = f"{'shape':<17} | {'workers':>7} {'/s':>6} {'p99ms':>6} {'cpu us':>6} {'busy':>4} {'load':>5} " + (
        f"{'conns/worker':>12} | {'/s vs 1':>7}"
    )
    out += [header, "-" * len(header)]
    for label, e in workers["shapes"].items():
        for n in counts:
            w = e[f"workers{n}"]
            ratio = e.get("ratios", {}).get(n) or e.get("ratios", {}).get(str(n))
            conns = "/".join(str(c) for c in w.get("connections_per_worker") or ()) or "-"
            flag = " !" if w["errors"] else ""
            out.append(
                f"{label if n == counts[0] else '':<17} | {n:>7} {_fmt(w['calls_per_s'], '6.0f')} "
                f"{_fmt(w['p99_ms'], '6.1f')} {_fmt(w['server_cpu_us_per_call'], '6.0f')} "
                f"{w['workers_served']:>4} {_fmt(w.get('load_cores'), '5.2f')} {conns:>12} | "
                f"{_fmt(ratio['calls_per_s'] if ratio else None, '7.2f')}{flag}"
            )
    out += [workers["interpretation"], ""]
    return out


def report(results: dict[str, Any]) -> str:
    out: list[str] = []
    m = results["machine"]
    out.append(
        f"machine: {m['nproc']} cores ({m['cpu_model']}), Python {m['python']}, grpcio {m['packages']['grpcio']}, "
        f"uvloop {m['packages']['uvloop']}, flytekit {results.get('flytekit_version') or 'absent'}"
    )
    out.append(
        f"plan: {results['plan']['duration']}s per point after {results['plan']['warmup']}s warm-up, "
        f"{results['clients']} client process(es) per server, call deadline {CALL_TIMEOUT:g}s; "
        f"wall time {results['wall_s']:.0f}s"
    )
    servers = results.get("servers", {})
    for name in ("daemon", "bare", "flytekit"):
        s = servers.get(name)
        if s:
            out.append(
                f"  {name:<9} start->SERVING {s['start_to_serving_s']:.3f}s  idle RSS {s['idle_rss_mib']} MiB  "
                f"peak RSS {s.get('peak_rss_mib', '-')} MiB  loop {s['loop']}"
            )
    out.append("")
    if results.get("points"):
        out.extend(_matrix_table(results))
    workers = results.get("workers")
    if workers:
        out.extend(_workers_table(workers))
    equal = {(p["server"], p["op"]): p for p in results.get("equal_rate", [])}
    if equal:
        repeats = results["plan"]["rate_repeats"]
        out.append(
            f"equal load: every server offered {EQUAL_RATE:.0f} calls/s (open loop), server CPU us/call, "
            f"median of {repeats}"
        )
        out.append(f"{'op':<12} | {'daemon':>7} {'bare':>7} {'flytekit':>8} | {'d/bare':>6} {'d/flytekit':>10}")
        for op in EQUAL_RATE_OPS:
            d, b, f = (equal.get((s, op), {}).get("server_cpu_us_per_call") for s in ("daemon", "bare", "flytekit"))
            out.append(
                f"{op:<12} | {_fmt(d, '7.0f')} {_fmt(b, '7.0f')} {_fmt(f, '8.0f')} | "
                f"{_fmt(_ratio(d, b), '6.2f')} {_fmt(_ratio(d, f), '10.2f')}"
            )
        out.append("")
    mem = results.get("memory")
    if mem:
        (first, total), rss = mem["calls"], mem["rss_mib"]
        out.append(
            f"memory: GetTask noop c=128: RSS {rss[0]} MiB idle, {rss[1]} MiB after {first} calls, "
            f"{rss[2]} MiB after {total} calls: ratio {mem['ratio']}"
        )
    loops = results.get("loops", {})
    if loops:
        u, a = loops.get("uvloop", {}), loops.get("asyncio", {})
        ucpu, acpu = u.get("server_cpu_us_per_call"), a.get("server_cpu_us_per_call")
        out.append(
            f"loop: GetTask noop c=128: uvloop {_fmt(u.get('calls_per_s'), '.0f')}/s {_fmt(ucpu, '.0f')} us/call, "
            f"asyncio {_fmt(a.get('calls_per_s'), '.0f')}/s {_fmt(acpu, '.0f')} us/call "
            f"(asyncio/uvloop CPU per call {_fmt(_ratio(acpu, ucpu), '.2f')}x; median of {len(u.get('runs', []))})"
        )
    access = results.get("access_log")
    if access and access.get("off"):
        on, off = access["on"]["server_cpu_us_per_call"], access["off"]["server_cpu_us_per_call"]
        out.append(
            f"access log: GetTask noop c=128: on {on} us/call vs off {off} us/call (+{on - off:.0f} us, "
            f"{_fmt(_ratio(on, off), '.2f')}x)"
        )
    for name, s in results.get("sigterm", {}).items():
        out.append(
            f"SIGTERM {name}: {s.get('failed')} of {s.get('calls')} in-flight 1 s GetTasks failed {s.get('codes')}, "
            f"exit {s.get('exit_code')} after {s.get('sigterm_to_exit_s')} s"
        )
    overload = results.get("overload")
    if overload:
        out.append(
            f"overload: {overload['calls']} GetTasks at once to a plain def get blocking "
            f"{overload['get_seconds']:g} s, "
            f"deadline {overload['deadline_s']:g} s; shed fast = RESOURCE_EXHAUSTED within "
            f"{overload['fast_s'] * 1000:.0f} ms; pollers at {overload['poll_rate']:.0f}/s each"
        )
        for name in ("daemon", "flytekit"):
            r = overload.get(name)
            if r:
                out.append(f"  {name:<9} {_overload_line(r)}")
    for op, c in results.get("capacity", {}).items():
        if "rate_per_s" in c:
            out.append(
                f"capacity {op}: {c['rate_per_s']:.0f} GetTask/s at c={c['best_concurrency']} with p99 "
                f"{c['p99_ms']} ms -> {c['tasks_at_30s_poll']} running tasks per pod at a 30 s poll "
                f"(server used {c['server_cores_used']} cores; CPU-bound: "
                f"{c['tasks_per_server_core_at_30s_poll']} tasks per server core)"
            )
        else:
            out.append(f"capacity {op}: no point with p99 < 100 ms")
    out.append("")
    targets = results.get("targets", [])
    if all(t["status"] == "SKIP" for t in targets):  # a --only run without the points they need
        targets = []
    for t in targets:
        base = f" vs {t['baseline']}" if t["baseline"] is not None else ""
        ratio = f" = {t['ratio']}x" if t["ratio"] is not None else ""
        out.append(f"{t['status']}  {t['target']}: {t['figure']} {t['unit']}{base}{ratio} (goal {t['goal']})")
    for note in results.get("notes", []):
        out.append(f"note: {note}")
    return "\n".join(out)


def compile_bytecode() -> None:
    """Write the checkout's .pyc files, as ``pip install`` does for the image's packages.

    A server started from a checkout under ``PYTHONDONTWRITEBYTECODE`` (set in the image, and on
    many CI machines) would compile every module from source at each start: measured, 60 ms of
    start-up that no installed service pays.
    """
    import compileall

    for package in ("connector_service", "connectors", "sensors", "benchmarks"):
        compileall.compile_dir(str(ROOT / package), quiet=2, workers=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run with short points")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON results (default: %(default)s)")
    parser.add_argument(
        "--flytekit-python",
        help="interpreter with flytekit 1.16.31 (default: this one, else $FLYTEKIT_PYTHON or "
        "/tmp/fkvenv/bin/python; flytekit is skipped if none has it)",
    )
    parser.add_argument("--no-flytekit", action="store_true", help="skip flytekit's server")
    parser.add_argument("--duration", type=float, help="measured seconds per point (default 2, quick 0.6)")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes per server (default 1)")
    parser.add_argument("--table", type=Path, help="also write the printed report to this file")
    parser.add_argument("--only", choices=PHASES, help="run just this phase (default: all, in this order)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else DEFAULT
    if args.duration:
        plan = dataclasses.replace(plan, duration=args.duration)
    if args.clients < 1:
        parser.error("--clients must be at least 1")

    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"connector-bench-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    procs = Processes(log_dir)
    run = Run(args, plan, procs)
    results = run.results
    results.update({"machine": machine(), "plan": plan.__dict__, "clients": args.clients, "quick": args.quick})
    if args.only:
        results["only"] = args.only
    results["logs"] = str(log_dir)
    phases = (args.only,) if args.only else PHASES
    if ("matrix" in phases or "overload" in phases) and not args.no_flytekit:
        run.flytekit_python, results["flytekit_version"] = find_flytekit(args.flytekit_python)
        if run.flytekit_python is None:
            run.note("flytekit not found (this interpreter, --flytekit-python, /tmp/fkvenv): its columns are empty")
        else:
            results["flytekit_python"] = run.flytekit_python
    _warm_grpc()
    stop_requested = _on_signals()
    try:
        phase = {
            "startup": run.startup,
            "matrix": run.main_matrix,
            "variants": run.memory_and_variants,
            "drain": run.drain,
            "workers": run.workers,
            "overload": run.overload,
        }
        for name in phases:
            phase[name]()
    except KeyboardInterrupt:
        run.note(f"interrupted ({stop_requested[0] if stop_requested else 'SIGINT'}); results are partial")
    except Exception as exc:
        run.note(f"run failed: {type(exc).__name__}: {exc}; results are partial")
        raise
    finally:
        procs.kill_all()
        results["wall_s"] = round(time.monotonic() - run.started, 1)
        results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        results["targets"] = evaluate(results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        text = report(results)
        print(text)
        if args.table:
            args.table.write_text(text + "\n")
        log(f"raw figures: {args.out}; server and client logs: {log_dir}")
    return 0


def _warm_grpc() -> None:
    """Initialise grpc's core once before timing any start-up (its first channel costs a little)."""
    channel = grpc.insecure_channel("127.0.0.1:1")
    channel.close()


def _on_signals() -> list[str]:
    """SIGTERM/SIGINT end the run through KeyboardInterrupt, so ``finally`` still cleans up."""
    received: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    return received


if __name__ == "__main__":
    sys.exit(main())
