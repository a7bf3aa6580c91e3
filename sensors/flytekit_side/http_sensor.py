"""Workflow-side ``HttpSensor`` for flytekit: declare the task; the service's ``sensors.http_sensor`` runs it.

Example::

    from sensors.flytekit_side.http_sensor import HttpSensor

    wait_ready = HttpSensor(
        name="wait_ready",
        url="https://api.example.com/health",   # default; the task input ``url`` overrides it
        expected_status=[200, 204],
        body_contains="ready",
        timeout=datetime.timedelta(hours=1),   # the task's timeout
    )

    @workflow
    def wf():
        wait_ready() >> next_task()              # or wait_ready(url="https://.../jobs/42")

The constructor's options become the task's ``sensor_config``; ``poke``'s signature
(``url: str | None = None``) is the task's input. ``poke`` also works locally (``pyflyte run``
without a cluster): it makes one request with urllib in a thread, with the same rules.
Only flytekit (and the standard library) is imported here, never the service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import re
import typing
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from flytekit.sensor.base_sensor import BaseSensor

__all__ = ["HttpSensor", "HttpSensorConfig"]


@dataclasses.dataclass
class HttpSensorConfig:
    """What ``sensor_config`` carries; the keys are the ones the service's HttpSensor reads."""

    url: str | None = None
    method: str = "GET"
    headers: dict[str, str] | None = None
    expected_status: list[int] = dataclasses.field(default_factory=lambda: [200])
    body_contains: str | None = None
    body_matches: str | None = None
    request_timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: typing.Mapping[str, Any]) -> HttpSensorConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        if "expected_status" in values:
            values["expected_status"] = [int(s) for s in _as_list(values["expected_status"])]
        return cls(**values)


def _as_list(value: int | float | Sequence[Any]) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class HttpSensor(BaseSensor):
    """Waits until a URL answers one of ``expected_status`` (and its body matches, if asked)."""

    def __init__(
        self,
        name: str,
        url: str | None = None,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        expected_status: int | Sequence[int] = 200,
        body_contains: str | None = None,
        body_matches: str | None = None,
        request_timeout: float | None = None,
        timeout: datetime.timedelta | int | None = None,
        config: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        if config is not None:
            # flytekit's own (local) sensor engine re-creates the sensor as cls("sensor", config=...).
            cfg = HttpSensorConfig.from_dict(config)
        else:
            if method.upper() not in ("GET", "HEAD"):
                raise ValueError(f"HttpSensor: method must be GET or HEAD, got {method!r}")
            if body_matches is not None:
                re.compile(body_matches)  # fail at declaration, not on the first poke
            cfg = HttpSensorConfig(
                url=url,
                method=method.upper(),
                headers=dict(headers) if headers else None,
                expected_status=[int(s) for s in _as_list(expected_status)],
                body_contains=body_contains,
                body_matches=body_matches,
                request_timeout=float(request_timeout) if request_timeout is not None else None,
            )
        super().__init__(name=name, timeout=timeout, sensor_config=cfg, **kwargs)
        self._http_config = cfg

    async def poke(self, url: str | None = None) -> bool:
        target = url or self._http_config.url
        if not target:
            raise ValueError("HttpSensor: no URL: give the input 'url' or url= to the constructor")
        return await asyncio.to_thread(_poke_once, target, self._http_config)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed (as the service's default): a 3xx is just a status."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _poke_once(url: str, cfg: HttpSensorConfig) -> bool:
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"HttpSensor: only http(s) URLs can be polled, got {url.split(':', 1)[0]!r}")
    request = urllib.request.Request(url, method=cfg.method, headers=dict(cfg.headers or {}))
    opener = urllib.request.build_opener(_NoRedirect)
    timeout = cfg.request_timeout or 10.0
    try:
        with opener.open(request, timeout=timeout) as response:
            status, body = response.status, _read(response, cfg)
    except urllib.error.HTTPError as err:  # a non-2xx answer is still an answer
        with err:
            status, body = err.code, _read(err, cfg)
    except TimeoutError:
        return False  # too slow to answer: not yet
    except urllib.error.URLError as err:
        raise ConnectionError(f"HttpSensor: cannot reach {url.split('?')[0]}: {err.reason}") from None
    if status not in set(cfg.expected_status):
        return False
    text = body.decode("utf-8", errors="replace")
    if cfg.body_contains is not None and cfg.body_contains not in text:
        return False
    if cfg.body_matches is not None and re.search(cfg.body_matches, text) is None:
        return False
    return True


def _read(response: Any, cfg: HttpSensorConfig) -> bytes:
    if cfg.body_contains is None and cfg.body_matches is None:
        return b""
    return bytes(response.read(1024 * 1024))
