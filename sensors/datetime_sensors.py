"""``DateTimeSensor`` and ``TimeDeltaSensor``: Airflow's names and meaning, polled by the engine.

- ``DateTimeSensor``: done once now >= ``target_time`` (a datetime input, or an ISO 8601
  string in ``sensor_config``; a time without a UTC offset means UTC).
- ``TimeDeltaSensor``: done once now >= the task's start + ``delta``. The start is the
  CreateTask time the sensor engine passes as ``started_at`` (Airflow counts from the end of
  the data interval, which Flyte does not have). ``delta`` is a timedelta input, or in
  ``sensor_config`` a number of seconds or an ISO 8601 duration such as ``"PT5M"``.

Neither keeps state: everything a poke needs is in the task (its inputs, config and start), so
any replica can answer any poll. Bad values are the task's fault: INVALID_ARGUMENT naming the
field, on the first poll (CreateTask checks only the inputs' names against ``poke``).

The parsing helpers here are shared with ``TimeSensor``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any

from connector_service import clip
from connector_service.errors import InvalidRequestError
from sensors.base import BaseSensor

__all__ = ["DateTimeSensor", "TimeDeltaSensor", "parse_datetime", "parse_duration"]

_UTC = datetime.UTC

_NUMBER = r"(\d+(?:[.,]\d+)?)"
_ISO_DURATION = re.compile(
    rf"P(?:{_NUMBER}W)?(?:{_NUMBER}D)?(?:T(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?",
    re.IGNORECASE,
)
_CALENDAR_UNITS = re.compile(r"P(?:[\d.,]+Y|[^T]*?\d[.,\d]*M)", re.IGNORECASE)


def parse_datetime(value: Any, field: str, sensor: str) -> datetime.datetime:
    """A timezone-aware datetime from a datetime or an ISO 8601 string; naive means UTC."""
    if isinstance(value, str):
        text = value.strip()
        try:
            # 3.11's fromisoformat reads "Z", offsets and a bare date ("2024-01-01": midnight).
            value = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidRequestError(
                f"{sensor}: {field} is not an ISO 8601 date-time (e.g. 2024-01-01T06:00:00Z)"
            ) from None
    elif isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        value = datetime.datetime.combine(value, datetime.time())
    if not isinstance(value, datetime.datetime):
        raise InvalidRequestError(
            f"{sensor}: {field} must be a datetime or an ISO 8601 string, got {type(value).__name__}"
        )
    return value if value.tzinfo else value.replace(tzinfo=_UTC)


def parse_duration(value: Any, field: str, sensor: str) -> datetime.timedelta:
    """A timedelta from a timedelta, seconds (a number), or an ISO 8601 duration.

    ISO durations take weeks, days, hours, minutes and seconds (``P1DT2H``, ``PT0.5S``); years
    and months are refused because their length depends on the calendar.
    """
    if isinstance(value, datetime.timedelta):
        delta = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            delta = datetime.timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise InvalidRequestError(f"{sensor}: {field} is out of range: {clip(repr(value))} seconds") from None
    elif isinstance(value, str):
        delta = _iso_duration(value.strip(), field, sensor)
    else:
        raise InvalidRequestError(
            f"{sensor}: {field} must be a timedelta, a number of seconds or an ISO 8601 duration "
            f"(e.g. PT5M), got {type(value).__name__}"
        )
    return delta


def _iso_duration(text: str, field: str, sensor: str) -> datetime.timedelta:
    match = _ISO_DURATION.fullmatch(text)
    if match is None or not any(match.groups()) or text.upper().endswith("T"):
        if _CALENDAR_UNITS.match(text):
            raise InvalidRequestError(
                f"{sensor}: {field}: ISO 8601 years and months have no fixed length; use weeks or days (e.g. P30D)"
            )
        raise InvalidRequestError(
            f"{sensor}: {field} is not an ISO 8601 duration (e.g. PT5M, PT30S, P1DT2H) nor a number of seconds"
        )
    weeks, days, hours, minutes, seconds = (float(g.replace(",", ".")) if g else 0.0 for g in match.groups())
    try:
        return datetime.timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise InvalidRequestError(f"{sensor}: {field} is out of range") from None


def check_config(sensor: str, config: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse unknown ``sensor_config`` keys: a misspelt key would otherwise be silently ignored."""
    allowed = tuple(known)
    unknown = sorted(str(key) for key in config if key not in allowed)
    if unknown:
        raise InvalidRequestError(
            f"{sensor}: sensor_config.{clip(unknown[0])} is not a setting (settings: {', '.join(allowed)})"
        )


def _input_or_config(sensor: str, name: str, value: Any, config: Mapping[str, Any]) -> tuple[Any, str]:
    """The input ``name``, else ``sensor_config.<name>`` (the only setting), and where it came from."""
    check_config(sensor, config, (name,))
    if value is not None:
        return value, name
    value = config.get(name)
    if value is None:
        raise InvalidRequestError(f"{sensor}: {name} is missing: give it as an input or in sensor_config.{name}")
    return value, f"sensor_config.{name}"


class DateTimeSensor(BaseSensor):
    """Done once now >= ``target_time`` (input, else ``sensor_config.target_time``)."""

    aliases = ("sensors.flytekit_side.time_sensors.DateTimeSensor",)

    async def poke(self, target_time: datetime.datetime | str | None = None) -> bool:
        return datetime.datetime.now(_UTC) >= self._target(target_time)

    def check(self, target_time: datetime.datetime | str | None = None, **inputs: Any) -> None:
        self._target(target_time)

    def _target(self, target_time: datetime.datetime | str | None) -> datetime.datetime:
        value, field = _input_or_config("DateTimeSensor", "target_time", target_time, self.sensor_config)
        return parse_datetime(value, field, "DateTimeSensor")


class TimeDeltaSensor(BaseSensor):
    """Done once now >= the task's start (CreateTask) + ``delta`` (input, else ``sensor_config.delta``)."""

    aliases = ("sensors.flytekit_side.time_sensors.TimeDeltaSensor",)

    async def poke(
        self,
        delta: datetime.timedelta | float | str | None = None,
        started_at: datetime.datetime | None = None,
    ) -> bool:
        wait = self._delta(delta)
        if started_at is None:
            raise InvalidRequestError("TimeDeltaSensor: the task's start time is unknown (a resource_meta without it)")
        start = parse_datetime(started_at, "started_at", "TimeDeltaSensor")
        return datetime.datetime.now(_UTC) >= start + wait

    def check(self, delta: datetime.timedelta | float | str | None = None, **inputs: Any) -> None:
        self._delta(delta)

    def _delta(self, delta: datetime.timedelta | float | str | None) -> datetime.timedelta:
        value, field = _input_or_config("TimeDeltaSensor", "delta", delta, self.sensor_config)
        wait = parse_duration(value, field, "TimeDeltaSensor")
        if wait < datetime.timedelta(0):
            raise InvalidRequestError(f"TimeDeltaSensor: {field} must not be negative")
        return wait
