"""``TimeSensor``: done at a given time, or a duration after the task was created."""

from __future__ import annotations

import datetime

from sensors.base import BaseSensor
from sensors.datetime_sensors import parse_datetime, parse_duration

__all__ = ["TimeSensor"]

_UTC = datetime.UTC


class TimeSensor(BaseSensor):
    """Waits until ``until`` (a datetime) or for ``duration`` after CreateTask.

    Both can come from the task's inputs or, as defaults, from ``sensor_config``
    (``until``: ISO 8601 string, ``duration``: seconds or an ISO 8601 duration such as
    ``PT5M``); a bad value is INVALID_ARGUMENT naming it. ``started_at`` is supplied by the
    sensor engine: the time the task was created, so the sensor itself keeps no state.
    """

    def poke(
        self,
        until: datetime.datetime | str | None = None,
        duration: datetime.timedelta | float | int | str | None = None,
        started_at: datetime.datetime | None = None,
    ) -> bool:
        until = until if until is not None else self.sensor_config.get("until")
        duration = duration if duration is not None else self.sensor_config.get("duration")
        now = datetime.datetime.now(_UTC)
        if until is not None:
            return now >= parse_datetime(until, "until", "TimeSensor")
        if duration is not None:
            if started_at is None:
                raise ValueError("TimeSensor: a duration needs the task's start time")
            return now >= started_at + parse_duration(duration, "duration", "TimeSensor")
        raise ValueError("TimeSensor: set 'until' or 'duration' (as inputs or in sensor_config)")
