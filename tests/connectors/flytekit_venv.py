"""A venv with the flytekit and flytekitplugins-slurm the Slurm fixtures were made with, built by the tests.

The ``slurm_fn`` end-to-end test runs the task's real ``pyflyte-execute`` inside the Slurm job,
so it needs flytekit, which the service never installs (``tests/tool_venv.py`` builds it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import tool_venv
from tests.tool_venv import BUILD_TIMEOUT

__all__ = ["BUILD_TIMEOUT", "PINS", "TOOL", "flytekit_venv", "require_venv", "venv_path"]

PINS = ("flytekit==1.16.31", "flytekitplugins-slurm==1.16.31")
"""What ``tests/fixtures/make_slurm_fixtures.py`` made the templates with."""

_PROBE = "import flytekit, flytekitplugins.slurm"
TOOL = tool_venv.Tool("flytekit", PINS, _PROBE)


def venv_path(pins: tuple[str, ...] = PINS) -> Path:
    return tool_venv.venv_path("flytekit", pins)


def require_venv(path: Path, pins: tuple[str, ...] = PINS) -> Path:
    return tool_venv.require("flytekit", pins, _PROBE, path=path)


@pytest.fixture(scope="session")
def flytekit_venv() -> Path:
    return require_venv(venv_path())
