"""``connector-service``: ``serve`` runs the daemon, ``list`` shows what it would serve.

Signals are handled here and only here (the library installs none): the first SIGTERM or
SIGINT drains and stops the service, a second one exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from connector_service import _logging
from connector_service._access_log import StreamAccessLog
from connector_service._settings_sources import unknown_env_vars
from connector_service.config import Settings, SettingsError
from connector_service.registry import ConnectorRegistry, RegistryError
from connector_service.server import ConnectorService, StartupError

__all__ = ["main"]

_log = logging.getLogger("connector_service")

_DUPLICATE_SIGNAL_WINDOW = 0.5
"""Seconds within which a repeated signal is taken as a duplicate rather than a second request."""

_USAGE = """usage: connector-service {serve,list} [options]
       connector-service --version

  serve   start the gRPC daemon (see: connector-service serve --help)
  list    print the connectors and sensors that serve would register (same options)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, end="")
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"connector-service {_version()}")
        return 0
    command, rest = args[0], args[1:]
    if command not in ("serve", "list"):
        print(f"connector-service: unknown command {command!r}\n{_USAGE}", file=sys.stderr, end="")
        return 2
    # A --workers process gets the supervisor's environment: the supervisor has warned already.
    typos = [] if SUPERVISOR_PID_ENV in os.environ else unknown_env_vars(Settings, os.environ)
    try:
        settings = Settings.load(rest, command=command)
    except SettingsError as exc:
        print(f"connector-service {command}: {exc}", file=sys.stderr)
        for typo in typos:
            print(f"connector-service {command}: warning: {typo}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    access_log = _logging.configure(settings.log_level, settings.log_format)
    for typo in typos:
        _log.warning("%s", typo)
    if settings.secrets_dir:
        # get_secret() is a free function connectors call; the environment is how it learns
        # the configured directory without a global in this package.
        os.environ["CONNECTOR_SECRETS_DIR"] = str(settings.secrets_dir)
    if settings.app_dir:
        sys.path.insert(0, os.path.abspath(settings.app_dir))
    try:
        registry = ConnectorRegistry.from_settings(settings, origin=Settings.origins(rest).of)
    except RegistryError as exc:
        print(f"connector-service {command}: {exc}", file=sys.stderr)
        return 2
    if command == "list":
        print(describe(registry))
        return 0
    if settings.workers > 1:
        from connector_service.supervisor import supervise

        return supervise(settings, rest)
    return _run(settings, registry, access_log)


SUPERVISOR_PID_ENV = "CONNECTOR_SUPERVISOR_PID"


async def _watch_parent(supervisor_pid: int, stop: asyncio.Event) -> None:
    """A --workers process drains and exits if its supervisor is gone (even SIGKILLed),
    rather than serving on as an orphan nobody will stop."""
    while os.getppid() == supervisor_pid:  # noqa: ASYNC110 - polling the OS, no event to wait on
        await asyncio.sleep(1.0)
    _log.warning("supervisor (pid %d) is gone: shutting down", supervisor_pid)
    stop.set()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flyte-connector-service")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def describe(registry: ConnectorRegistry) -> str:
    rows = [("CONNECTOR", "TASK TYPE", "VERSION", "SYNC", "SOURCE")]
    for entry in sorted(registry.connectors(), key=lambda e: (e.category.name, e.category.version)):
        rows.append(
            (
                entry.name,
                entry.category.name,
                str(entry.category.version),
                str(entry.is_sync).lower(),
                entry.source,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    sensors = registry.sensors()
    lines.append("")
    lines.append(f"SENSORS (task type sensor, version 0): {', '.join(sorted(sensors)) or 'none'}")
    return "\n".join(lines)


def _run(settings: Settings, registry: ConnectorRegistry, access_log: StreamAccessLog) -> int:
    use_uvloop = settings.loop in ("auto", "uvloop")
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            if settings.loop == "uvloop":
                print("connector-service serve: --loop uvloop but uvloop is not installed", file=sys.stderr)
                return 2
        else:
            return uvloop.run(_serve(settings, registry, access_log))
    return asyncio.run(_serve(settings, registry, access_log))


async def _serve(settings: Settings, registry: ConnectorRegistry, access_log: StreamAccessLog) -> int:
    service = ConnectorService(settings, registry, access_log=access_log)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    first_signal_at: float | None = None

    def on_signal(signum: int) -> None:
        nonlocal first_signal_at
        now = loop.time()
        if first_signal_at is None:
            first_signal_at = now
            _log.info("%s: shutting down", signal.Signals(signum).name)
            stop.set()
        elif now - first_signal_at > _DUPLICATE_SIGNAL_WINDOW:
            _log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        # else: the same signal delivered twice to the process group (a wrapper forwarding
        # it, `kill 0`), not an operator asking again: keep draining.

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await service.start()
    except StartupError as exc:
        _log.error("%s", exc)
        return 1
    _log.info("connector service ready (pid %d, loop %s)", os.getpid(), type(loop).__module__.split(".")[0])
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    watchdog = asyncio.ensure_future(_watch_parent(int(supervisor), stop)) if supervisor else None
    await stop.wait()
    if watchdog is not None:
        watchdog.cancel()
    await service.stop()
    access_log.flush()
    if supervisor and os.getppid() != int(supervisor):
        from connector_service.supervisor import release_metrics_dir

        release_metrics_dir(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""))
    return 0
