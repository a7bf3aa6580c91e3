"""Long-lived clients for connectors and sensors: one per endpoint, made once, closed at shutdown.

Calls must not open an HTTP pool, a database pool or an SSH connection each time (propeller
polls every running task about every 30 s). The clients are made on first use rather than in
``setup`` because which endpoints a service talks to is known only when tasks arrive, and
because importing every client library at start-up would cost every deployment the start-up
time and memory of the libraries it does not use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SharedClients"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

_log = logging.getLogger(__name__)


class SharedClients(Generic[K, T]):
    """Clients by key (an endpoint), each made at most once at a time and reused.

    Keys should come from what the operator allows (allow-listed hosts, configured
    connections), which bounds how many clients exist; nothing is evicted while in use.
    """

    def __init__(self, make: Callable[[K], Awaitable[T]], close: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._clients: dict[K, T] = {}
        self._locks: dict[K, asyncio.Lock] = {}
        self._closed = False

    async def get(self, key: K) -> T:
        """The client for ``key``, made now if there is none (concurrent callers share one)."""
        client = self._clients.get(key)
        if client is not None:
            return client
        if self._closed:
            raise RuntimeError("the service is shutting down; no new clients are made")
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            client = self._clients.get(key)
            if client is None:
                client = await self._make(key)
                self._clients[key] = client
        return client

    async def discard(self, key: K, client: T) -> None:
        """Drop a client that stopped working (the next ``get`` makes a new one)."""
        if self._clients.get(key) is client:
            del self._clients[key]
            await self._close_quietly(client)

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        """Close every client; later ``get`` calls fail. Called from the plugin's ``close``."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await self._close_quietly(client)

    async def _close_quietly(self, client: T) -> None:
        try:
            await self._close(client)
        except Exception:  # closing must not stop the others from closing
            _log.warning("closing a %s failed", type(client).__name__, exc_info=True)
