"""Workflow-side ``DateTimeSensor`` and ``TimeDeltaSensor`` for flytekit (Airflow's names and meaning).

Example::

    from sensors.flytekit_side.time_sensors import DateTimeSensor, TimeDeltaSensor

    at_six = DateTimeSensor(name="at_six", target_time="2030-01-01T06:00:00Z")  # default target
    cool_down = TimeDeltaSensor(name="cool_down", delta=datetime.timedelta(minutes=5))

    @workflow
    def wf(when: datetime.datetime):
        at_six(target_time=when) >> cool_down() >> report()

- ``DateTimeSensor``: done once now >= ``target_time`` (the input, else the constructor's; a
  datetime or an ISO 8601 string; without a UTC offset it means UTC).
- ``TimeDeltaSensor``: done once ``delta`` has passed since the task started (the input, else
  the constructor's: a timedelta or seconds). The service counts from CreateTask.

``poke``'s parameters are the task's (optional) inputs; the constructor's values travel in
``sensor_config``. Both sensors also run locally (``pyflyte run`` without a cluster): flytekit's
local engine polls ``poke`` once a second. Only flytekit (and the standard library) is imported
here, never the service.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
from typing import Any

from flytekit.sensor.base_sensor import BaseSensor

__all__ = ["DateTimeSensor", "DateTimeSensorConfig", "TimeDeltaSensor", "TimeDeltaSensorConfig"]

_UTC = datetime.UTC
_LOCAL_START = "local_started_at"
"""Only in local runs: flytekit's local engine makes a new sensor per poll, so the start time
travels in the config it passes along. Never sent to the service (which counts from CreateTask)."""


def _as_datetime(value: Any, field: str) -> datetime.datetime:
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"DateTimeSensor: {field} is not an ISO 8601 date-time (e.g. 2024-01-01T06:00:00Z)"
            ) from None
    if not isinstance(value, datetime.datetime):
        raise ValueError(
            f"DateTimeSensor: {field} must be a datetime or an ISO 8601 string, got {type(value).__name__}"
        )
    return value if value.tzinfo else value.replace(tzinfo=_UTC)


def _as_seconds(value: Any, field: str) -> float:
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(
            f"TimeDeltaSensor: {field} must be a timedelta or a number of seconds, got {type(value).__name__}"
        )
    if seconds < 0:
        raise ValueError(f"TimeDeltaSensor: {field} must not be negative")
    return seconds


@dataclasses.dataclass
class DateTimeSensorConfig:
    """``sensor_config`` of DateTimeSensor: ``target_time`` as an ISO 8601 string."""

    target_time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: typing.Mapping[str, Any]) -> DateTimeSensorConfig:
        return cls(target_time=d.get("target_time"))


class DateTimeSensor(BaseSensor):
    """Waits until ``target_time``."""

    def __init__(
        self,
        name: str,
        target_time: datetime.datetime | str | None = None,
        *,
        timeout: datetime.timedelta | int | None = None,
        config: typing.Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # flytekit's local sensor engine re-creates the sensor as cls("sensor", config=sensor_config).
        if target_time is None and config is not None:
            target_time = DateTimeSensorConfig.from_dict(config).target_time
        if isinstance(target_time, datetime.datetime):
            target_time = target_time.isoformat()
        elif target_time is not None:
            _as_datetime(target_time, "target_time")  # refuse a bad string when the workflow is declared
        self._config = DateTimeSensorConfig(target_time=target_time)
        super().__init__(name=name, timeout=timeout, sensor_config=self._config, **kwargs)

    async def poke(self, target_time: datetime.datetime | None = None) -> bool:
        field = "target_time"
        value: Any = target_time
        if value is None:
            value, field = self._config.target_time, "the constructor's target_time"
        if value is None:
            raise ValueError("DateTimeSensor: target_time is missing: give it as an input or to the constructor")
        return datetime.datetime.now(_UTC) >= _as_datetime(value, field)


@dataclasses.dataclass
class TimeDeltaSensorConfig:
    """``sensor_config`` of TimeDeltaSensor: ``delta`` in seconds (the service also reads ISO 8601, e.g. PT5M)."""

    delta: float | None = None
    local_started_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: typing.Mapping[str, Any]) -> TimeDeltaSensorConfig:
        return cls(delta=d.get("delta"), local_started_at=d.get(_LOCAL_START))


class TimeDeltaSensor(BaseSensor):
    """Waits until ``delta`` has passed since the task started."""

    def __init__(
        self,
        name: str,
        delta: datetime.timedelta | float | None = None,
        *,
        timeout: datetime.timedelta | int | None = None,
        config: typing.Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        restored = TimeDeltaSensorConfig.from_dict(config or {})
        seconds = _as_seconds(delta, "delta") if delta is not None else restored.delta
        self._config = TimeDeltaSensorConfig(delta=seconds, local_started_at=restored.local_started_at)
        super().__init__(name=name, timeout=timeout, sensor_config=self._config, **kwargs)

    def execute(self, **kwargs: Any) -> Any:
        """Local run: remember when it started, for the sensors flytekit's engine makes per poll."""
        self._config.local_started_at = datetime.datetime.now(_UTC).isoformat()
        try:
            return super().execute(**kwargs)
        finally:
            self._config.local_started_at = None

    async def poke(self, delta: datetime.timedelta | None = None) -> bool:
        field = "delta"
        value: Any = delta
        if value is None:
            value, field = self._config.delta, "the constructor's delta"
        if value is None:
            raise ValueError("TimeDeltaSensor: delta is missing: give it as an input or to the constructor")
        if self._config.local_started_at is None:
            raise RuntimeError("TimeDeltaSensor: the task's start time is unknown here (the service supplies it)")
        started = datetime.datetime.fromisoformat(self._config.local_started_at)
        return datetime.datetime.now(_UTC) >= started + datetime.timedelta(seconds=_as_seconds(value, field))
