"""The command line, as an operator runs it: real subprocesses, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from flyteidl.service import agent_pb2_grpc

from connector_service.testing import task_template
from tests.utils import ENV, SAMPLES, run_cli, serve_process


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


def test_list_prints_connectors_and_sensors() -> None:
    result = cli("list", "--connector", SAMPLES)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^Echo Connector +echo +0 +true", result.stdout, re.M)
    assert "Upper Connector" in result.stdout and "upper" in result.stdout
    assert "FileSensor" in result.stdout and "SlowSensor" in result.stdout


def test_bad_connector_fails_start_up_with_a_clear_message() -> None:
    result = cli("serve", "--connector", "connectors.echo:nope", "--port", "0", "--metrics-port", "0")
    assert result.returncode == 2
    assert "has no attribute 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_fails_with_its_name() -> None:
    result = cli("serve", "--port", "not-a-port")
    assert result.returncode == 2
    assert "port" in result.stderr


def test_serve_help_lists_settings() -> None:
    result = cli("serve", "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--metrics-port", "--connector", "--log-level", "--thread-pool-size"):
        assert flag in result.stdout


def test_version_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"connector-service {version('flyte-connector-service')}\n"


def test_serve_help_is_readable() -> None:
    result = cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for unreadable in ("{Path", "null}", "SecretStr", "dict[", "list[", "Any]", "default factory", "<lambda>"):
        assert unreadable not in text, unreadable
    # Every option's value is named in capitals (PORT, FILE, MODULE:ATTR) or lists its choices.
    for flag, metavar in re.findall(r"^  (--[\w.-]+) (\{[^}]*\}|[^\s,]+)", text, re.M):
        assert re.fullmatch(r"\[?[A-Z:]+\]?|\{[\w,]+\}", metavar), (flag, metavar)
    help_of = {
        m[0]: " ".join(m[1].split()) for m in re.findall(r"^  (--[\w.-]+)([^\n]*\n(?:\s{20,}.*\n)*)", text, re.M)
    }
    assert "JSON list or commas" in help_of["--connector"], help_of["--connector"]
    assert "[env CONNECTOR_CONNECTORS]" in help_of["--connector"]
    assert "default: $WEB_CONCURRENCY or 1" in help_of["--workers"]
    assert "--tls [JSON]" in text and "cert_file" in text
    assert "[env CONNECTOR_TLS__CERT_FILE]" in " ".join(text.split())


def test_list_help_is_its_own() -> None:
    result = cli("list", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: connector-service list ")
    assert "connector-service serve" not in result.stdout
    assert "would register" in result.stdout


@pytest.mark.parametrize(
    "text",
    ["host: 127.0.0.1\n  port: 8001\n", "- port: 8001\n"],
    ids=["bad-indentation", "list-at-the-top"],
)
def test_a_malformed_config_file_is_one_line_and_exit_2(tmp_path: Path, text: str) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(text)
    result = cli("serve", "--config-file", str(config))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.match(rf"connector-service serve: config file {re.escape(str(config))}:\d+: ", result.stderr)


def test_plugin_settings_errors_name_the_variable_or_the_file_line(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text("plugins:\n  webhook:\n    allowed_hosts: [hooks.example.com]\n    secret_header: {}\n")
    env = {**ENV, "CONNECTOR_PLUGINS__HTTP_SENSOR__ALLOWED_SCHEMES": "ftp"}
    result = run_cli("list", "--config-file", str(config), env=env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any(
        line.startswith("  plugins.webhook.secret_header: not a setting") and line.endswith(f"(from {config}:4)")
        for line in lines
    ), lines
    assert any(
        line.startswith("  plugins.http_sensor.allowed_schemes:")
        and line.endswith("(from CONNECTOR_PLUGINS__HTTP_SENSOR__ALLOWED_SCHEMES)")
        for line in lines
    ), lines


def test_a_misspelt_variable_is_a_warning_naming_it_and_the_setting() -> None:
    result = run_cli("list", "--no-entry-points", env={**ENV, "CONNECTOR_PROT": "8001"})
    assert result.returncode == 0, result.stderr
    assert "CONNECTOR_PROT is not a setting" in result.stderr
    assert "did you mean CONNECTOR_PORT?" in result.stderr
    # And beside a settings error, where it may be the reason.
    result = run_cli("serve", "--port", "eighty", env={**ENV, "CONNECTOR_PROT": "8001"})
    assert result.returncode == 2
    assert "got 'eighty' from --port" in result.stderr and "did you mean CONNECTOR_PORT?" in result.stderr


async def _slow_get(channel: grpc.aio.Channel, seconds: float, timeout: float) -> asyncio.Future[Any]:
    """Start a GetTask on the sample "slow" connector that takes ``seconds``; return it in flight."""
    stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
    template = task_template("slow", version=1, custom={"seconds": seconds})
    created = await stub.CreateTask(agent_pb2.CreateTaskRequest(template=template), timeout=5)
    category = agent_pb2.TaskCategory(name="slow", version=1)
    request = agent_pb2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta)
    call = asyncio.ensure_future(stub.GetTask(request, timeout=timeout))
    await asyncio.sleep(0.3)  # let it reach the connector
    return call


@pytest.mark.parametrize("module", [True, False], ids=["python-m", "console-script"])
async def test_serve_answers_then_sigterm_lets_in_flight_calls_finish(module: bool) -> None:
    script = os.path.join(os.path.dirname(sys.executable), "connector-service")
    command = [sys.executable, "-m", "connector_service"] if module else [script]
    args = ("--connector", SAMPLES, "--shutdown-delay", "0.2", "--log-format", "json")
    async with serve_process(*args, command=command) as served:
        async with grpc.aio.insecure_channel(served.address) as channel:
            metadata = agent_pb2_grpc.AgentMetadataServiceStub(channel)
            agents = await metadata.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)
            assert "Echo Connector" in {a.name for a in agents.agents}
            in_flight = await _slow_get(channel, seconds=1.5, timeout=10)
            served.proc.send_signal(signal.SIGTERM)
            response = await in_flight
            assert response.resource.phase == execution_pb2.TaskExecution.SUCCEEDED
        stderr = await served.finish()
        assert served.proc.returncode == 0, stderr
        assert '"message": "SIGTERM: shutting down"' in stderr


async def test_a_second_signal_forces_exit_while_draining() -> None:
    args = ("--connector", SAMPLES, "--shutdown-delay", "0", "--grace-period", "60")
    async with serve_process(*args) as served:
        async with grpc.aio.insecure_channel(served.address) as channel:
            in_flight = await _slow_get(channel, seconds=60, timeout=90)
            served.proc.send_signal(signal.SIGINT)
            await asyncio.sleep(1.0)
            assert served.proc.poll() is None  # still draining the 60 s call
            served.proc.send_signal(signal.SIGINT)
            stderr = await served.finish(timeout=15)
            assert served.proc.returncode == 1
            assert "second SIGINT: exiting now" in stderr
            with pytest.raises(grpc.aio.AioRpcError):
                await in_flight
