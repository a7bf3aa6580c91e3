"""bqemulator 1.4.0 (a BigQuery emulator on DuckDB) on a loopback port, for the BigQuery connector's tests.

It runs from a venv of its own (``tests/tool_venv.py``; its DuckDB/FastAPI pins are not ours).
DuckDB's ``spatial`` and ``avro`` extensions, which it installs at start-up, come from the
``duckdb-extension-*`` wheels, linked into a private ``$HOME/.duckdb/extensions/...`` that the
fixture prepares, so start-up never reaches the network. It is started ``--persistent`` with a
data directory, so a restarted emulator still knows the jobs it ran before.

What it does not do (so the tests cover it otherwise): no authentication (401/403), no
throttling or 5xx, jobs finish within ``jobs.insert`` (never PENDING or RUNNING), ``jobs.cancel``
of a finished job just answers it, and a second ``jobs.insert`` with a job id it knows replaces
that job instead of answering 409.
"""

from __future__ import annotations

import json
import platform
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import tool_venv
from tests.emulator import Emulator, http_ready

__all__ = ["TOOL", "BqEmulator", "bqemulator"]

DUCKDB = "1.5.5"
PINS = (
    "bqemulator==1.4.0",
    f"duckdb=={DUCKDB}",
    f"duckdb-extension-spatial=={DUCKDB}",
    f"duckdb-extension-avro=={DUCKDB}",
    "numpy>=2,<3",  # its built-in UDFs need it; bqemulator does not declare it
)
TOOL = tool_venv.Tool("bqemulator", PINS, "import bqemulator.server, duckdb_extension_spatial, duckdb_extension_avro")


def _private_home(venv: Path, home: Path) -> Path:
    """``$HOME`` whose ``.duckdb/extensions/v1.5.5/<platform>/`` holds the wheels' extension files."""
    machine = platform.machine().lower()
    arch = "linux_arm64" if machine in ("aarch64", "arm64") else "linux_amd64"
    target = home / ".duckdb" / "extensions" / f"v{DUCKDB}" / arch
    target.mkdir(parents=True, exist_ok=True)
    found = list(venv.glob(f"lib/python*/site-packages/duckdb_extension_*/extensions/v{DUCKDB}/*.duckdb_extension"))
    assert {f.name for f in found} >= {"spatial.duckdb_extension", "avro.duckdb_extension"}, found
    for extension in found:
        link = target / extension.name
        if not link.exists():
            link.symlink_to(extension)
    return home


class BqEmulator:
    """The running emulator, and the tests' own view of its REST API."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    @property
    def url(self) -> str:
        return self.emulator.url

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + "/bigquery/v2" + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read() or b"{}")

    def jobs(self, project: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/projects/{project}/jobs?maxResults=100000").get("jobs") or [])

    def job(self, project: str, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/projects/{project}/jobs/{job_id}")  # type: ignore[no-any-return]

    def rows(self, project: str, job_id: str) -> list[dict[str, Any]]:
        """The job's result rows as {column: value} (BigQuery's wire text)."""
        answer = self.call("GET", f"/projects/{project}/queries/{job_id}")
        names = [f["name"] for f in answer["schema"]["fields"]]
        return [dict(zip(names, (cell["v"] for cell in row["f"]), strict=True)) for row in answer.get("rows") or []]

    def ensure_dataset(self, project: str, dataset: str) -> None:
        try:
            self.call("GET", f"/projects/{project}/datasets/{dataset}")
        except urllib.error.HTTPError:
            body = {"datasetReference": {"projectId": project, "datasetId": dataset}, "location": "US"}
            self.call("POST", f"/projects/{project}/datasets", body)


@pytest.fixture(scope="session")
def bqemulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BqEmulator]:
    venv = TOOL.require()
    root = tmp_path_factory.mktemp("bqemulator")
    home, data = _private_home(venv, root / "home"), root / "data"
    data.mkdir()
    emulator = Emulator(
        "bqemulator",
        [
            str(venv / "bin" / "bqemulator"),
            "start",
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            "{port}",
            "--grpc-port",
            "0",
            "--persistent",
            "--data-dir",
            str(data),
            "--log-level",
            "warning",
        ],
        log_dir=root,
        env={"HOME": str(home)},
        cwd=root,
        ready=http_ready("/healthz"),
    )
    with emulator:
        yield BqEmulator(emulator)
