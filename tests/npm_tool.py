"""npm packages the tests run beside the service (emulators written for Node), installed by the tests.

Like ``tool_venv``: installed once per machine into the user's cache dir, in a folder named by
a hash of the pins and the Node version, under a lock, and marked complete by a stamp written
last, so later runs (and other sessions) reuse it. ``--ignore-scripts``: nothing from the
registry runs at install time.

When it cannot be installed (no npm, no registry), the test skips, except under ``CI``, where
it fails: CI must never go green by skipping the end-to-end tests.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.tool_venv import BUILD_TIMEOUT, _locked, cache_root, unavailable

__all__ = ["NpmTool", "install", "require"]


def _node_version() -> str:
    node = shutil.which("node")
    if node is None:
        raise OSError("node is not on PATH")
    return subprocess.run([node, "--version"], check=True, capture_output=True, text=True, timeout=30).stdout.strip()


def folder(name: str, pins: Sequence[str]) -> Path:
    key = hashlib.sha256("\n".join([_node_version(), *pins]).encode()).hexdigest()[:16]
    return cache_root() / f"{name}-npm-{key}"


def install(path: Path, pins: Sequence[str], binary: str) -> Path:
    """``node_modules/.bin/<binary>`` under ``path`` with ``pins`` installed, unless already there."""
    done = path / "COMPLETE"
    stamp = "\n".join(pins) + "\n"
    exe = path / "node_modules" / ".bin" / binary
    with _locked(path.with_name(path.name + ".lock")):
        if done.is_file() and done.read_text() == stamp and exe.exists():
            return exe
        shutil.rmtree(path, ignore_errors=True)  # an earlier install that did not finish
        path.mkdir(parents=True)
        (path / "package.json").write_text('{"name": "test-tool", "private": true}\n')
        npm = shutil.which("npm")
        if npm is None:
            raise OSError("npm is not on PATH")
        command = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--save-exact", *pins]
        subprocess.run(command, cwd=path, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if not exe.exists():
            raise OSError(f"npm installed {' '.join(pins)} but there is no {exe}")
        done.write_text(stamp)
    return exe


@dataclass(frozen=True)
class NpmTool:
    """An npm package a test module needs, for ``tool_venv.prepare``."""

    name: str
    pins: tuple[str, ...]
    binary: str

    def build(self) -> Path:
        return install(folder(self.name, self.pins), self.pins, self.binary)

    def require(self) -> Path:
        return require(self.name, self.pins, self.binary)


def require(name: str, pins: Sequence[str], binary: str) -> Path:
    """``install`` the package, or skip the test saying why (fail it under CI)."""
    try:
        return install(folder(name, pins), pins, binary)
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot install {' '.join(pins)} with npm", exc)
