from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.utils import Running, run_service


@pytest.fixture
async def svc() -> AsyncIterator[Running]:
    async with run_service() as running:
        yield running
