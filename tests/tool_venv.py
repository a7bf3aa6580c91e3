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

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

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


def require(name: str, pins: Sequence[str], probe: str, *, path: Path | None = None) -> Path:
    """``build`` the venv ``name``, or skip the test saying why (fail it under CI)."""
    target = path or venv_path(name, pins)
    try:
        return build(target, pins, probe)
    except (OSError, subprocess.SubprocessError) as exc:
        output = getattr(exc, "stderr", None) or ""
        last = [line for line in str(output).splitlines() if line.strip()][-3:]
        message = f"cannot build the {name} venv ({' '.join(pins)}) in {target}: {exc}" + "".join(
            f"\n  {line}" for line in last
        )
        if os.environ.get("CI"):
            pytest.fail(message + "\n-- CI is set, so this is an error", pytrace=False)
        pytest.skip(message)
