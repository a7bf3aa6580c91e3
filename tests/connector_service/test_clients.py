"""SharedClients: one client per key however many calls ask at once, all closed at shutdown."""

from __future__ import annotations

import asyncio

import pytest

from connector_service import SharedClients


class Client:
    def __init__(self, key: str) -> None:
        self.key = key
        self.closed = False


async def test_concurrent_callers_share_one_client_per_key_and_close_closes_all() -> None:
    made: list[str] = []

    async def make(key: str) -> Client:
        made.append(key)
        await asyncio.sleep(0.01)
        return Client(key)

    async def close(client: Client) -> None:
        client.closed = True

    clients: SharedClients[str, Client] = SharedClients(make, close)
    got = await asyncio.gather(*(clients.get("a") for _ in range(20)), clients.get("b"))
    assert made == ["a", "b"]
    assert len({id(c) for c in got[:20]}) == 1 and got[20].key == "b"
    await clients.aclose()
    assert all(c.closed for c in got)
    with pytest.raises(RuntimeError, match="shutting down"):
        await clients.get("a")


async def test_a_failed_make_is_not_cached_and_a_discarded_client_is_replaced() -> None:
    attempts = 0

    async def make(key: str) -> Client:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("refused")
        return Client(key)

    async def close(client: Client) -> None:
        client.closed = True

    clients: SharedClients[str, Client] = SharedClients(make, close)
    with pytest.raises(ConnectionError):
        await clients.get("a")
    first = await clients.get("a")
    await clients.discard("a", first)
    assert first.closed
    second = await clients.get("a")
    assert second is not first and len(clients) == 1
