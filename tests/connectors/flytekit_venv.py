"""A venv with the flytekit and flytekitplugins-slurm the Slurm fixtures were made with, built by the tests.

The ``slurm_fn`` end-to-end test runs the task's real ``pyflyte-execute`` inside the Slurm job,
so it needs flytekit, which the service never installs. The venv is built once per machine in
the user's cache dir, named by a hash of the pins and the interpreter, so later runs (and CI on
the same machine) reuse it; a file written last marks it complete, and a lock keeps two
sessions from building it at the same time. It cannot be built elsewhere and moved: a venv's
scripts name their interpreter by absolute path.

When it cannot be built (no index reachable), the test skips, except under ``CI``, where it fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PINS = ("flytekit==1.16.31", "flytekitplugins-slurm==1.16.31")
"""What ``tests/fixtures/make_slurm_fixtures.py`` made the templates with."""

BUILD_TIMEOUT = 900.0


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flyte-connector-service"


def venv_path(pins: tuple[str, ...] = PINS) -> Path:
    key = hashlib.sha256("\n".join([sys.base_prefix, sys.version, *pins]).encode()).hexdigest()[:16]
    return cache_root() / f"flytekit-venv-{key}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(path: Path, pins: tuple[str, ...] = PINS) -> Path:
    """The venv at ``path`` with ``pins`` installed, built unless a complete one is there."""
    done = path / "COMPLETE"
    with _locked(path.with_name(path.name + ".lock")):
        if done.is_file() and done.read_text() == "\n".join(pins) + "\n":
            return path
        shutil.rmtree(path, ignore_errors=True)  # an earlier build that did not finish
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=120)
        python = str(path / "bin" / "python")
        install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins]
        subprocess.run(install, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        probe = [python, "-c", "import flytekit, flytekitplugins.slurm"]
        subprocess.run(probe, check=True, capture_output=True, text=True, timeout=120)
        done.write_text("\n".join(pins) + "\n")
    return path


def require_venv(path: Path, pins: tuple[str, ...] = PINS) -> Path:
    """``build``, or skip the test saying why (fail it under CI)."""
    try:
        return build(path, pins)
    except (OSError, subprocess.SubprocessError) as exc:
        output = getattr(exc, "stderr", None) or ""
        last = [line for line in str(output).splitlines() if line.strip()][-3:]
        message = f"cannot build the flytekit venv ({' '.join(pins)}) in {path}: {exc}" + "".join(
            f"\n  {line}" for line in last
        )
        if os.environ.get("CI"):
            pytest.fail(message + "\n-- CI is set, so this is an error", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def flytekit_venv() -> Path:
    return require_venv(venv_path())
