"""``TimeSensor``: done at a given time, or a duration after the task was created."""

from __future__ import annotations

import datetime
from typing import Any

from sensors.base import BaseSensor

__all__ = ["TimeSensor"]

_UTC = datetime.UTC


class TimeSensor(BaseSensor):
    """Waits until ``until`` (a datetime) or for ``duration`` after CreateTask.

    Both can come from the task's inputs or, as defaults, from ``sensor_config``
    (``until``: ISO 8601 string, ``duration``: seconds). ``started_at`` is supplied by the
    sensor engine: the time the task was created, so the sensor itself keeps no state.
    """

    def poke(
        self,
        until: datetime.datetime | str | None = None,
        duration: datetime.timedelta | float | int | None = None,
        started_at: datetime.datetime | None = None,
    ) -> bool:
        until = until if until is not None else self.sensor_config.get("until")
        duration = duration if duration is not None else self.sensor_config.get("duration")
        now = datetime.datetime.now(_UTC)
        if until is not None:
            return now >= _as_datetime(until)
        if duration is not None:
            if started_at is None:
                raise ValueError("TimeSensor: a duration needs the task's start time")
            return now >= started_at + _as_timedelta(duration)
        raise ValueError("TimeSensor: set 'until' or 'duration' (as inputs or in sensor_config)")


def _as_datetime(value: Any) -> datetime.datetime:
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime.datetime):
        raise ValueError(f"TimeSensor: 'until' must be a datetime or ISO 8601 string, got {type(value).__name__}")
    return value if value.tzinfo else value.replace(tzinfo=_UTC)


def _as_timedelta(value: Any) -> datetime.timedelta:
    if isinstance(value, datetime.timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.timedelta(seconds=value)
    raise ValueError(f"TimeSensor: 'duration' must be a timedelta or seconds, got {type(value).__name__}")
