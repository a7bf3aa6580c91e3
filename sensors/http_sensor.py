"""``HttpSensor``: done when a URL answers an expected status (and, optionally, its body matches).

Modelled on Airflow's HttpSensor. The URL is the task's input ``url`` (or ``sensor_config.url``
when the input is not given); ``sensor_config`` holds ``method`` (GET or HEAD), ``headers``,
``expected_status`` (an int or a list; default 200), ``body_contains``, ``body_matches`` (a
regular expression, searched) and ``request_timeout`` (seconds).

Which hosts may be polled is the operator's choice (``plugins.http_sensor.allowed_hosts``,
empty by default: nothing), as for the webhook connector. Another status, a body that does not
match yet, or a server too slow to answer within the request timeout mean "not yet"
(RUNNING); a server that cannot be reached (refused, reset, DNS failure) raises
``UnavailableError``, so GetTask answers UNAVAILABLE and propeller polls again (and gives up
after a handful of such answers).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from connector_service import clip
from connector_service.errors import InvalidRequestError, UnavailableError
from connectors._http import (
    HostRule,
    HttpClients,
    HttpSettings,
    check_headers,
    check_url,
    connection_failed,
    decode_text,
    describe,
    drain,
    not_sent,
    parse_url,
    read_capped,
    safe_url,
    send,
    with_secret_headers,
)
from sensors.base import BaseSensor

__all__ = ["HttpSensor", "HttpSensorSettings"]

_log = logging.getLogger(__name__)

WHO = "HttpSensor"
KEY = "http_sensor"
_CONFIG_KEYS = ("url", "method", "headers", "expected_status", "body_contains", "body_matches", "request_timeout")


class HttpSensorSettings(HttpSettings):
    """``plugins.http_sensor``: which hosts and schemes may be polled, response cap, default timeout,
    secret headers (see ``HttpSettings``)."""


@dataclass(frozen=True)
class _Config:
    url: str | None
    method: str
    headers: dict[str, str]
    expected: frozenset[int]
    contains: str | None
    pattern: re.Pattern[str] | None
    timeout: float | None

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> _Config:
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if unknown:
            raise InvalidRequestError(
                f"{WHO}: sensor_config.{clip(unknown[0])} is not a setting (settings: {', '.join(_CONFIG_KEYS)})"
            )
        url = config.get("url")
        if url is not None and not isinstance(url, str):
            raise InvalidRequestError(f"{WHO}: sensor_config.url must be a string")
        method = config.get("method") or "GET"
        if not isinstance(method, str) or method.upper() not in ("GET", "HEAD"):
            raise InvalidRequestError(f"{WHO}: sensor_config.method must be GET or HEAD")
        headers = config.get("headers") or {}
        if not isinstance(headers, dict):
            raise InvalidRequestError(f"{WHO}: sensor_config.headers must be an object")
        contains = config.get("body_contains")
        if contains is not None and not isinstance(contains, str):
            raise InvalidRequestError(f"{WHO}: sensor_config.body_contains must be a string")
        matches = config.get("body_matches")
        pattern = None
        if matches is not None:
            if not isinstance(matches, str):
                raise InvalidRequestError(f"{WHO}: sensor_config.body_matches must be a string (a regular expression)")
            try:
                pattern = re.compile(matches)
            except re.error as exc:
                raise InvalidRequestError(
                    f"{WHO}: sensor_config.body_matches is not a valid regular expression: {exc}"
                ) from None
        if method.upper() == "HEAD" and (contains is not None or pattern is not None):
            raise InvalidRequestError(
                f"{WHO}: sensor_config.body_contains/body_matches need method GET (HEAD has no body)"
            )
        timeout = config.get("request_timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
        ):
            raise InvalidRequestError(f"{WHO}: sensor_config.request_timeout must be a positive number of seconds")
        return cls(
            url=url,
            method=method.upper(),
            headers=check_headers(headers, WHO, "sensor_config.headers"),
            expected=_statuses(config.get("expected_status", 200)),
            contains=contains,
            pattern=pattern,
            timeout=float(timeout) if timeout is not None else None,
        )


def _statuses(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    out: set[int] = set()
    for item in items:
        # Struct numbers arrive as floats (200.0): accept integral ones.
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not float(item).is_integer():
            raise InvalidRequestError(f"{WHO}: sensor_config.expected_status must be an HTTP status or a list of them")
        if not 100 <= int(item) <= 599:
            raise InvalidRequestError(f"{WHO}: sensor_config.expected_status {int(item)} is not an HTTP status")
        out.add(int(item))
    if not out:
        raise InvalidRequestError(f"{WHO}: sensor_config.expected_status is an empty list")
    return frozenset(out)


class HttpSensor(BaseSensor):
    """Polls a URL until it answers as expected; one shared HTTP client for every task."""

    aliases = ("sensors.flytekit_side.http_sensor.HttpSensor",)
    settings_key: ClassVar[str] = KEY
    settings_model: ClassVar[type[HttpSensorSettings]] = HttpSensorSettings
    settings: HttpSensorSettings

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.clients = HttpClients()
        self.configure(HttpSensorSettings())

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        self._rules: tuple[HostRule, ...] = settings.rules()

    async def close(self) -> None:
        await self.clients.aclose()

    def check(self, url: str | None = None, **inputs: Any) -> None:
        self._target(url)

    def _target(self, url: str | None) -> tuple[_Config, Any, str]:
        """The task's config and its URL, checked against the allow-list before any client exists."""
        config = _Config.parse(self.sensor_config)
        target = url or config.url
        if not target:
            raise InvalidRequestError(f"{WHO}: no URL: give the task's input 'url' or sensor_config.url")
        field = "the input 'url'" if url else "sensor_config.url"
        parsed = parse_url(target, WHO, field)
        check_url(parsed, self.settings, self._rules, KEY, WHO, field)
        return config, parsed, field

    async def poke(self, url: str | None = None) -> bool:
        config, parsed, field = self._target(url)

        import httpx

        client = await self.clients.get()
        timeout = config.timeout or self.settings.default_timeout
        headers = with_secret_headers(config.headers, parsed, self.settings)
        request = client.build_request(config.method, parsed, headers=headers, timeout=httpx.Timeout(timeout))
        shown = f"{config.method} {safe_url(parsed)}"
        try:
            response = await send(
                client, request, self.settings, self._rules, KEY, WHO, field, sensitive_headers=headers
            )
            try:
                return await self._check(response, config, shown)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            if not_sent(exc):
                raise UnavailableError(f"{WHO}: cannot reach {shown}: {describe(exc)}") from None
            _log.debug("%s: %s did not answer within %gs; not yet", WHO, shown, timeout)
            return False
        except httpx.TransportError as exc:
            if connection_failed(exc):
                raise UnavailableError(f"{WHO}: cannot reach {shown}: {describe(exc)}") from None
            raise

    async def _check(self, response: Any, config: _Config, shown: str) -> bool:
        status = response.status_code
        if status not in config.expected:
            _log.debug("%s: %s answered %d; not yet", WHO, shown, status)
            await drain(response)
            return False
        if config.contains is None and config.pattern is None:
            await drain(response)
            return True
        # Only the first max_response_bytes are matched: a sensor has no use for more.
        body, _ = await read_capped(response, self.settings.max_response_bytes)
        text = decode_text(body, response)
        if config.contains is not None and config.contains not in text:
            return False
        if config.pattern is not None:
            # A regular expression may be slow on a large body: keep it off the event loop.
            return await asyncio.to_thread(config.pattern.search, text) is not None
        return True
