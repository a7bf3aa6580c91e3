"""What Flyte 2's executor sends with every call: the task's connection (secrets and configs).

The executor fills ``connection`` from the task's ``custom["secrets"]``/``["configs"]`` and
sends it on every call. Connectors see it two ways: ``get_secret()`` looks in the calling
request's connection before the service's own sources (so a connector reads a secret the same
way whichever generation called it), and a method that names a ``connection`` parameter
receives the ``Connection`` (its configs, above all). Flyte 1's propeller sends none.

The current call's connection lives in a context variable: each RPC runs in its own task, and
plain-def methods run in a copy of that context, so one call's secrets are never another's.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Connection", "current_connection"]


@dataclass(frozen=True)
class Connection:
    """A request's connection. ``secrets`` never appears in ``repr``: it must not reach a log."""

    task_type: str = ""
    configs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    secrets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @classmethod
    def of(cls, proto: object) -> Connection:
        """From a ``flyteidl2.core.Connection`` message (read-only copies of its maps)."""
        return cls(
            task_type=str(getattr(proto, "task_type", "")),
            configs=MappingProxyType(dict(getattr(proto, "configs", {}))),
            secrets=MappingProxyType(dict(getattr(proto, "secrets", {}))),
        )


_current: ContextVar[Connection | None] = ContextVar("connector_service_connection", default=None)


def current_connection() -> Connection | None:
    """The connection of the call being served, if its caller sent one."""
    return _current.get()


def use_connection(connection: Connection) -> None:
    """Make ``connection`` the current call's (the call's own task and what it runs)."""
    _current.set(connection)
