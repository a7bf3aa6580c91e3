"""Virtual environments for the tools the tests run beside the service (flytekit, emulators), built by the tests.

A tool whose pins collide with ours (flytekit's, an emulator's) runs from a venv of its own,
built once per machine in the user's cache dir and named by a hash of the pins and the
interpreter, so later runs (and CI on the same machine) reuse it. A file written last marks a
venv complete, and a lock keeps two sessions (or two pytest workers) from building it at once.
A venv cannot be built elsewhere and moved: its scripts name their interpreter by absolute path.

When it cannot be built (no index reachable), the test skips, except under ``CI``, where it fails:
CI must never go green by skipping the end-to-end tests.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

import pytest

BUILD_TIMEOUT = 900.0


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flyte-connector-service"


def venv_path(name: str, pins: Sequence[str]) -> Path:
    """Where the venv called ``name`` with ``pins`` lives (a new path whenever the pins change)."""
    key = hashlib.sha256("\n".join([sys.base_prefix, sys.version, *pins]).encode()).hexdigest()[:16]
    return cache_root() / f"{name}-venv-{key}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(path: Path, pins: Sequence[str], probe: str, *, pip_args: Sequence[str] = ()) -> Path:
    """The venv at ``path`` with ``pins`` installed, built unless a complete one is there.

    ``probe`` is Python run in the new venv (e.g. ``import flytekit``) that must succeed before
    the venv counts as complete.
    """
    done = path / "COMPLETE"
    stamp = "\n".join([*pins, *pip_args]) + "\n"
    with _locked(path.with_name(path.name + ".lock")):
        if done.is_file() and done.read_text() == stamp:
            return path
        shutil.rmtree(path, ignore_errors=True)  # an earlier build that did not finish
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=120)
        python = str(path / "bin" / "python")
        install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pip_args, *pins]
        subprocess.run(install, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True, timeout=120)
        done.write_text(stamp)
    return path


@dataclass(frozen=True)
class Tool:
    """A venv a test module needs, named so that ``prepare`` can build it before the tests run."""

    name: str
    pins: tuple[str, ...]
    probe: str

    @property
    def path(self) -> Path:
        return venv_path(self.name, self.pins)

    def build(self) -> Path:
        return build(self.path, self.pins, self.probe)

    def require(self) -> Path:
        return require(self.name, self.pins, self.probe)


class Prepared(Protocol):
    """What ``prepare`` builds: a venv (``Tool``) or an npm folder (``npm_tool.NpmTool``)."""

    name: str

    def build(self) -> Path: ...


def prepare(tools: Iterable[Prepared]) -> list[str]:
    """Build (or find) every tool at once, before the tests run; returns a line per tool.

    A fresh machine (CI) downloads each emulator's packages: one after another, inside the
    tests that need them, that is minutes; side by side it is about as long as the largest.
    Failures are not raised here: the fixture that needs the tool retries and skips (or, under
    CI, fails) with the reason, as it would have without this.
    """
    unique = {tool.name: tool for tool in tools}
    if not unique:
        return []

    def timed(tool: Prepared) -> str:
        started = time.monotonic()
        try:
            tool.build()
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{tool.name}: not ready ({type(exc).__name__}); its tests will say why"
        return f"{tool.name}: ready in {time.monotonic() - started:.1f}s"

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(unique)) as pool:
        return list(pool.map(timed, unique.values()))


def require(name: str, pins: Sequence[str], probe: str, *, path: Path | None = None) -> Path:
    """``build`` the venv ``name``, or skip the test saying why (fail it under CI)."""
    target = path or venv_path(name, pins)
    try:
        return build(target, pins, probe)
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot build the {name} venv ({' '.join(pins)}) in {target}", exc)


def unavailable(what: str, exc: BaseException) -> NoReturn:
    """Skip the test saying why a tool is missing (with the tool's last lines), or fail it under CI."""
    output = getattr(exc, "stderr", None) or ""
    last = [line for line in str(output).splitlines() if line.strip()][-3:]
    message = f"{what}: {exc}" + "".join(f"\n  {line}" for line in last)
    if os.environ.get("CI"):
        pytest.fail(message + "\n-- CI is set, so this is an error", pytrace=False)
    pytest.skip(message)
