from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.http_server import HttpTestServer
from tests.utils import Running, run_service


@pytest.fixture
async def svc() -> AsyncIterator[Running]:
    async with run_service() as running:
        yield running


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    """A real HTTP server on loopback, recording what it was sent (webhook, HttpSensor)."""
    with HttpTestServer() as running:
        yield running
