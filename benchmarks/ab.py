"""Paired A/B: server CPU per call of daemon checkouts side by side with the bare server.

    .venv/bin/python benchmarks/ab.py [--op get_noop] [--rounds 5] [--calls 20000]
                                      [--concurrency 128] [TARGET ...]

Each TARGET is ``bare`` or a checkout of this repository (a directory; ``.`` is this one), so
a change can be measured against the commit before it (``git worktree add /tmp/base HEAD~1``,
then ``benchmarks/ab.py bare /tmp/base .``); ``DIR::FLAGS`` adds daemon flags
(``.::--no-access-log``). All targets run at once, each with its own load process
(``loadgen.py``), and take turns round by round, so a drift of the machine hits them alike;
a single window of ``run.py``'s matrix is noisier than the median of these rounds.
Prints, per target, the median and every round's server CPU per call (utime+stime of all its
threads from /proc) and calls/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run import BENCH, CONNECTORS, DAEMON_QUIET, ROOT, cpu_seconds, free_port, serving


def wait_serving(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not serving(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no SERVING answer on port {port} after {timeout:.0f}s")
        time.sleep(0.05)


class Target:
    """One server and the load process that drives it."""

    def __init__(self, spec: str, concurrency: int) -> None:
        self.spec = spec
        self.concurrency = concurrency
        port = free_port()
        if spec == "bare":
            argv = [sys.executable, str(BENCH / "bare_server.py"), "--port", str(port), "--loop", "uvloop"]
            cwd = ROOT
        else:
            where, _, flags = spec.partition("::")
            cwd = Path(where).resolve()
            if not (cwd / "connector_service").is_dir():
                raise SystemExit(f"{spec}: not a checkout of this repository (no connector_service/)")
            argv = [sys.executable, "-m", "connector_service", "serve", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--metrics-port", "0", *DAEMON_QUIET, *flags.split()]
            for name in CONNECTORS:
                argv += ["--connector", f"benchmarks.bench_connectors:{name}"]
        # The checkout's own packages come first on the path: python -m runs from its cwd.
        # The server's log goes through a pipe that a reader drains, as a container runtime reads
        # a pod's stderr: the access log's writes cost what they cost in production.
        self.sink = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.server = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=self.sink.stdin)
        assert self.sink.stdin is not None
        self.sink.stdin.close()
        wait_serving(port, timeout=30)
        self.load = subprocess.Popen(
            [sys.executable, str(BENCH / "loadgen.py"), "--target", f"127.0.0.1:{port}"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = json.loads(self._read())
        if ready.get("event") != "ready":
            raise RuntimeError(f"{spec}: load generator said {ready}")
        self.cpu: list[float] = []
        self.rates: list[float] = []

    def _read(self) -> str:
        assert self.load.stdout is not None
        return self.load.stdout.readline()

    def _count(self, op: str, calls: int) -> dict[str, object]:
        assert self.load.stdin is not None
        command = {"cmd": "count", "op": op, "concurrency": self.concurrency, "calls": calls, "timeout": 10}
        self.load.stdin.write(json.dumps(command) + "\n")
        self.load.stdin.flush()
        result: dict[str, object] = json.loads(self._read())
        if result.get("errors") or result.get("error"):
            raise RuntimeError(f"{self.spec}: calls failed: {result}")
        return result

    def round(self, op: str, calls: int) -> None:
        self._count(op, min(3000, calls))  # warm-up
        cpu, started = cpu_seconds(self.server.pid), time.perf_counter()
        self._count(op, calls)
        self.rates.append(calls / (time.perf_counter() - started))
        self.cpu.append((cpu_seconds(self.server.pid) - cpu) / calls * 1e6)

    def stop(self) -> None:
        if self.load.stdin is not None:
            self.load.stdin.write('{"cmd": "quit"}\n')
            self.load.stdin.flush()
        self.load.wait(timeout=10)
        self.server.terminate()
        self.server.wait(timeout=30)
        self.sink.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("targets", nargs="*", default=["bare", "."], help="bare or a checkout directory")
    parser.add_argument("--op", default="get_noop", help="a loadgen operation (default get_noop)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000, help="calls per round and target")
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args(argv)
    targets: list[Target] = []
    import compileall

    for spec in args.targets:  # .pyc files as an installed package has them (see run.compile_bytecode)
        if spec != "bare":
            compileall.compile_dir(spec.partition("::")[0], quiet=2, workers=0)
    try:
        for spec in args.targets:
            targets.append(Target(spec, args.concurrency))
        for _ in range(args.rounds):
            for target in targets:
                target.round(args.op, args.calls)
    finally:
        for target in targets:
            target.stop()
    base = statistics.median(targets[0].cpu)
    print(f"{args.op}, c={args.concurrency}, {args.rounds} rounds of {args.calls} calls; ratios to {targets[0].spec}")
    for target in targets:
        cpu = statistics.median(target.cpu)
        rounds = ", ".join(f"{x:.0f}" for x in sorted(target.cpu))
        print(
            f"  {target.spec:24} {cpu:7.1f} µs/call ({cpu / base:.2f}x) [{rounds}]"
            f"  {statistics.median(target.rates):6.0f} calls/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
