from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests import tool_venv
from tests.http_server import HttpTestServer
from tests.utils import Running, run_service


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the tools (emulator venvs, npm packages) the selected tests need, side by side.

    A test module names them in ``TOOLS``; see ``tool_venv.prepare``.
    """
    if session.config.option.collectonly:
        return
    modules = {id(item.module): item.module for item in session.items if isinstance(item, pytest.Function)}
    tools = [tool for module in modules.values() for tool in getattr(module, "TOOLS", ())]
    lines = tool_venv.prepare(tools)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and lines:
        reporter.write_line("tools: " + "; ".join(lines))


@pytest.fixture
async def svc() -> AsyncIterator[Running]:
    async with run_service() as running:
        yield running


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    """A real HTTP server on loopback, recording what it was sent (webhook, HttpSensor)."""
    with HttpTestServer() as running:
        yield running
