"""``BaseSensor``: a condition the service checks once per GetTask until it holds."""

from __future__ import annotations

import copy
import datetime
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar, Self

from connector_service.plugins import Configurable

__all__ = ["BaseSensor"]


class BaseSensor(Configurable, ABC):
    """Subclass it and implement ``poke``; register the class (or an instance) with the service.

    The constructor keeps flytekit's shape (``name``, ``timeout``, ``sensor_config``). One
    instance per registered sensor lives for the whole service, so clients created in
    ``__init__`` or ``setup`` are shared by every poke; each poke sees its own task's config
    as ``self.sensor_config`` on a cheap shallow copy made by ``with_config``.

    ``aliases`` lists the ``module.ClassName`` names a flytekit-side class serializes as, so
    that templates made by flytekit find this implementation without importing anything.
    """

    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        name: str | None = None,
        timeout: datetime.timedelta | int | None = None,
        sensor_config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.name = name or type(self).__name__
        if isinstance(timeout, int):
            timeout = datetime.timedelta(seconds=timeout)
        self.timeout = timeout
        self.sensor_config: Mapping[str, Any] = dict(sensor_config or {})

    @property
    def sensor_name(self) -> str:
        """The name flytekit serializes as ``sensor_name``: the class name."""
        return type(self).__name__

    @abstractmethod
    def poke(self, *args: Any, **inputs: Any) -> bool | Awaitable[bool]:
        """Return True once the condition holds.

        Write it as ``async def poke(self, path: str) -> bool`` (or a plain ``def``, which runs
        on the service's thread pool); its parameters are the task's inputs.
        """

    def check(self, **inputs: Any) -> None:  # noqa: B027 - optional hook
        """Refuse, at CreateTask, a task that can never succeed (raise ``InvalidRequestError``).

        Called on a copy carrying the task's ``sensor_config``, with the task's inputs. Without
        it a bad value fails every poll instead, and propeller gives up only after several.
        Keep it cheap and local: no calls to the external system.
        """

    def with_config(self, sensor_config: Mapping[str, Any] | None) -> Self:
        if not sensor_config:
            return self
        bound = copy.copy(self)
        bound.sensor_config = {**self.sensor_config, **sensor_config}
        return bound

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Open shared clients once at start-up."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Close what ``setup`` opened, at shutdown."""
