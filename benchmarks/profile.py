"""Where a call's server CPU goes: the daemon with its defaults under load, sampled by py-spy.

    .venv/bin/python benchmarks/profile.py [--op get_noop] [--calls 60000] [--seconds 10]
                                           [--target bare] [--top 20]

Starts the daemon as ``run.py`` does (defaults: access log on, info logs, the whole catalogue
plus the benchmark connectors, its log read through a pipe as a container runtime reads it),
drives ``--op`` at c=128 from a ``loadgen.py`` process, samples the server's threads with
py-spy (``pip install py-spy``, in the ``bench`` extra) while it measures the server's CPU
per call from /proc, and prints each part's share of the samples and its microseconds per
call: the project's own request path (by function, inclusive), grpc's core and the event
loop (time in compiled code under the loop, which a Python profiler cannot split further),
and grpc's poller thread. ``--target bare`` profiles the bare server instead, for comparison.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BENCH, CONNECTORS, DAEMON_QUIET, ROOT, cpu_seconds, free_port, serving  # noqa: E402

OURS = ("connector_service/", "connectors/", "sensors/", "benchmarks/bench_connectors.py")


def _frame_file(frame: str) -> str:
    return frame.rsplit(" (", 1)[1].split(":", 1)[0] if " (" in frame else ""


def _ours(frame: str) -> bool:
    """A frame of the project's request path (not the start-up frames every stack begins with)."""
    path = _frame_file(frame)
    return path.startswith(OURS) and not path.endswith(("__main__.py", "cli.py"))


def _frame_name(frame: str) -> str:
    name = frame.rsplit(" (", 1)[0]
    return f"{name} [{_frame_file(frame)}]"


def summarize(raw: str, cpu_us: float, top: int) -> list[str]:
    """Shares of py-spy's raw (collapsed) stacks, turned into microseconds of CPU per call."""
    total = 0
    ours_incl: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        first_ours = next((i for i, f in enumerate(frames) if _ours(f)), None)
        if first_ours is not None:
            buckets["the project's request path (Python)"] += n
            for name in dict.fromkeys(_frame_name(f) for f in frames[first_ours:] if _ours(f)):
                ours_incl[name] += n
        elif any("Thread.run" in f for f in frames):
            buckets["grpc's poller and other threads"] += n
        elif frames[-1].startswith("Runner.run") or frames[-1].startswith("run ("):
            buckets["grpc core and the event loop (compiled code)"] += n
        else:
            buckets["other Python (asyncio, grpc's Python parts)"] += n
    if not total:
        return ["no samples (is py-spy allowed to attach? run as the server's user or root)"]
    out = [f"{total} samples; server CPU {cpu_us:.0f} us per call", ""]
    for name, n in buckets.most_common():
        out.append(f"{100 * n / total:5.1f}%  {n / total * cpu_us:6.1f} us  {name}")
    out += ["", f"the project's request path, inclusive (top {top}):"]
    for name, n in ours_incl.most_common(top):
        out.append(f"{100 * n / total:5.1f}%  {n / total * cpu_us:6.1f} us  {name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--op", default="get_noop")
    parser.add_argument("--calls", type=int, default=60000)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long py-spy samples")
    parser.add_argument("--target", choices=("daemon", "bare"), default="daemon")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    port = free_port()
    if args.target == "bare":
        argv_server = [sys.executable, str(BENCH / "bare_server.py"), "--port", str(port), "--loop", "uvloop"]
    else:
        argv_server = [sys.executable, "-m", "connector_service", "serve", "--host", "127.0.0.1"]
        argv_server += ["--port", str(port), "--metrics-port", "0", *DAEMON_QUIET]
        for name in CONNECTORS:
            argv_server += ["--connector", f"benchmarks.bench_connectors:{name}"]
    sink = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    server = subprocess.Popen(argv_server, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink.stdin)
    assert sink.stdin is not None
    sink.stdin.close()
    load = None
    try:
        deadline = time.monotonic() + 30
        while not serving(port):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.05)
        load = subprocess.Popen(
            [sys.executable, str(BENCH / "loadgen.py"), "--target", f"127.0.0.1:{port}"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert load.stdin is not None and load.stdout is not None
        load.stdout.readline()  # ready
        warm = {"cmd": "count", "op": args.op, "concurrency": 128, "calls": 3000, "timeout": 10}
        load.stdin.write(json.dumps(warm) + "\n")
        load.stdin.flush()
        load.stdout.readline()
        command = {"cmd": "count", "op": args.op, "concurrency": 128, "calls": args.calls, "timeout": 10}
        cpu0 = cpu_seconds(server.pid)
        load.stdin.write(json.dumps(command) + "\n")
        load.stdin.flush()
        with tempfile.NamedTemporaryFile(suffix=".txt") as out:
            spy_bin = Path(sys.executable).with_name("py-spy")  # the venv's, else the PATH's
            spy = [str(spy_bin)] if spy_bin.exists() else ["py-spy"]
            subprocess.run(
                [*spy, "record", "-p", str(server.pid), "-r", "250", "-d", str(int(args.seconds))]
                + ["-f", "raw", "-o", out.name, "--nonblocking"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = json.loads(load.stdout.readline())
            cpu = cpu_seconds(server.pid) - cpu0
            calls = sum(n for _, n in result.get("hist", []))
            raw = Path(out.name).read_text(errors="replace")
        cpu_us = cpu / calls * 1e6 if calls else 0.0
        print(f"{args.target}, {args.op}, c=128, {calls} calls ({result.get('errors') or 'no errors'})")
        print("\n".join(summarize(raw, cpu_us, args.top)))
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        server.terminate()
        server.wait(timeout=30)
        sink.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
