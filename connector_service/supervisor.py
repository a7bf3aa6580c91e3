"""``--workers N``: N server processes sharing the port, under one small supervisor.

Each worker is a fresh ``connector-service serve`` process (not a fork: grpc is not fork-safe
once a server exists) that binds the port with SO_REUSEPORT, so the kernel spreads incoming
*connections* over them. The supervisor serves /metrics from prometheus-client's multiprocess
files, so counters and histograms add up across workers; it forwards SIGTERM/SIGINT so every
worker drains as a single process would, and restarts a worker that dies unexpectedly.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import FrameType

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from connector_service.cli import SUPERVISOR_PID_ENV
from connector_service.config import Settings

__all__ = ["release_metrics_dir", "supervise"]

_log = logging.getLogger("connector_service.supervisor")

_RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
_STABLE_AFTER = 30.0
"""A worker that lived this long resets the restart backoff."""
_METRICS_DIR_PREFIX = "connector-metrics-"
_STARTUP_WINDOW = 5.0
"""A first run that ends sooner than this is a start-up failure, not a crash to restart."""


class _Worker:
    def __init__(self, index: int, argv: list[str], env: dict[str, str]) -> None:
        self.index = index
        self._argv = argv
        self._env = env
        self.restarts = 0
        self.first_run = True
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.started = time.monotonic()
        return subprocess.Popen(self._argv, env=self._env)

    def respawn(self) -> None:
        self.first_run = False
        self.restarts = 0 if time.monotonic() - self.started > _STABLE_AFTER else self.restarts + 1
        time.sleep(_RESTART_BACKOFF[min(self.restarts, len(_RESTART_BACKOFF) - 1)])
        self.proc = self._spawn()


def release_metrics_dir(directory: str) -> None:
    """Remove a dead supervisor's metrics directory once its last worker is done with it.

    Called by a worker that outlived its supervisor (SIGKILLed: its ``finally`` never ran), after
    draining. Each such worker removes its own files and those of processes that are gone, then
    the directory if that emptied it, so whichever worker finishes last removes it.
    """
    if not directory or not os.path.basename(directory).startswith(_METRICS_DIR_PREFIX):
        return  # only ever a directory this module made
    for path in glob.glob(os.path.join(glob.escape(directory), "*.db")):
        match = re.search(r"_(\d+)\.db$", path)
        if match and (int(match.group(1)) == os.getpid() or not _alive(int(match.group(1)))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    with contextlib.suppress(OSError):  # not empty: a worker still running will remove it
        os.rmdir(directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie nobody has reaped yet is gone for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def supervise(settings: Settings, cli_args: Sequence[str]) -> int:
    metrics_dir = tempfile.mkdtemp(prefix=_METRICS_DIR_PREFIX)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, SUPERVISOR_PID_ENV: str(os.getpid())}
    # Later flags win, so these override whatever the operator passed for the whole service.
    argv = [
        sys.executable, "-m", "connector_service", "serve", *cli_args,
        "--workers", "1", "--reuse-port", "--metrics-port", "0",
    ]  # fmt: skip
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    metrics_http = None
    if settings.metrics_port:
        metrics_http, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)

    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signum)

    workers: list[_Worker] = []
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        workers.extend(_Worker(i, argv, env) for i in range(settings.workers))
        _log.info("supervising %d worker process(es) on port %d", settings.workers, settings.port)
        codes: dict[int, int] = {}
        while len(codes) < len(workers):
            for worker in workers:
                if worker.index in codes:
                    continue
                rc = worker.proc.poll()
                if rc is None:
                    continue
                multiprocess.mark_process_dead(worker.proc.pid, metrics_dir)  # type: ignore[no-untyped-call]
                if stopping:
                    codes[worker.index] = rc
                    continue
                if worker.first_run and time.monotonic() - worker.started < _STARTUP_WINDOW:
                    # It never got going (bad connector, port taken): restarting will not help.
                    _log.error("worker %d failed at start-up (exit %d); stopping", worker.index, rc)
                    on_signal(signal.SIGTERM, None)
                    codes[worker.index] = rc or 1
                    continue
                _log.error("worker %d (pid %d) exited with %d; restarting", worker.index, worker.proc.pid, rc)
                worker.respawn()
            time.sleep(0.1)
        return 0 if all(rc == 0 for rc in codes.values()) else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        if metrics_http is not None:
            metrics_http.shutdown()
        shutil.rmtree(metrics_dir, ignore_errors=True)
