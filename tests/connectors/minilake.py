"""minilake 1.9.0 (a local Databricks API emulator) on a loopback port, for the Databricks connector's tests.

It runs from a venv of its own (``tests/tool_venv.py``; its FastAPI/DuckDB pins are not ours)
with ``MINILAKE_JOB_EXECUTOR=subprocess``: a run's ``spark_python_task``/``notebook_task`` file
is taken from its workspace (``<data dir>/workspace/<path>``, written here directly) and run
for real as ``python3 FILE PARAMETERS...``, with the cluster's ``spark_env_vars`` and the
emulator's own environment. Only its Jobs and Workspace services are on; the DuckDB ``delta``
extension is pointed at an empty directory so start-up never reaches the network.

What it does not do (so the tests cover it otherwise): no authentication (401/403), no
throttling or 5xx, a ``runs/cancel`` lands only when the script ends, no ``status`` object,
no QUEUED/BLOCKED/... states, ``job_id`` is null for submitted runs, and it keeps runs in
memory only (its snapshot restores run ids as JSON strings, which ``runs/get`` never finds).
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import tool_venv
from tests.emulator import Emulator, http_ready

__all__ = ["TOOL", "Minilake", "minilake"]

PINS = ("minilake==1.9.0",)
TOOL = tool_venv.Tool("minilake", PINS, "import minilake.app")


class Minilake:
    """The running emulator, its data directory, and a directory its scripts report into."""

    def __init__(self, emulator: Emulator, data: Path, reports: Path) -> None:
        self.emulator = emulator
        self.data = data
        self.reports = reports

    @property
    def url(self) -> str:
        return self.emulator.url

    def put_file(self, workspace_path: str, text: str) -> None:
        """A workspace file (what ``workspace/import`` stores), written where the emulator reads it."""
        path = self.data / "workspace" / workspace_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def api(self, path: str) -> Any:
        """GET the emulator's API directly (the tests' own view of it)."""
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return json.loads(answer.read())

    def runs(self) -> list[dict[str, Any]]:
        return list(self.api("/api/2.2/jobs/runs/list").get("runs") or [])

    def freeze(self) -> None:
        """Stop the emulator's processes without ending them (SIGSTOP): it accepts connections, answers nothing."""
        pid = self.emulator.pid
        assert pid is not None
        os.killpg(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        pid = self.emulator.pid
        assert pid is not None
        os.killpg(pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def minilake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Minilake]:
    venv = TOOL.require()
    root = tmp_path_factory.mktemp("minilake")
    data, extensions, reports = root / "data", root / "no-extensions", root / "reports"
    for path in (data, extensions, reports):
        path.mkdir()
    env = {
        "MINILAKE_DATA_DIR": str(data),
        "MINILAKE_JOB_EXECUTOR": "subprocess",
        "MINILAKE_SERVICES": "jobs,workspace",
        "MINILAKE_NOTEBOOK": "0",
        "MINILAKE_SPARK_PREWARM": "0",
        "MINILAKE_DUCKDB_EXTENSION_DIR": str(extensions),
        "DBX_TEST_REPORTS": str(reports),
    }
    emulator = Emulator(
        "minilake",
        [str(venv / "bin" / "minilake"), "--host", "127.0.0.1", "--port", "{port}"],
        log_dir=root,
        env=env,
        cwd=root,
        ready=http_ready("/api/2.2/jobs/list"),
    )
    with emulator:
        yield Minilake(emulator, data, reports)
