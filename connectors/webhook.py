"""``webhook`` (sync, v0): one HTTP call per task, for templates flytekit's ``WebhookTask`` serializes.

flytekit's template ``custom`` is ``{url, method, headers, data, show_data, show_url,
timeout_sec}``; string values may hold ``{inputs.NAME}`` placeholders for the task's inputs,
and the task has one output, ``info: dict`` = ``{status_code, response_data[, input_data][, url]}``.
This connector answers the same output (plus ``response_json``, the parsed body, when the
response is JSON), so workflows written against flytekit's ``WebhookConnector`` keep working.

Differences from flytekit's connector, on purpose:

- Only hosts in ``plugins.webhook.allowed_hosts`` (and schemes in ``allowed_schemes``) may be
  called; a refused URL is INVALID_ARGUMENT and no request leaves the service.
- Templating is ``{inputs.NAME}`` only: no nested lookups, no format-string features; a body is
  templated value by value (a value that is exactly one placeholder takes the input's own
  JSON value, e.g. a number or a list).
- Any 2xx succeeds (flytekit accepts only 200); other statuses fail with the status, never the
  response body, in the message (bodies and header values may hold tokens).
- A connection that could not be made (nothing was sent) is RETRYABLE_FAILED; a timeout or a
  broken connection after sending is FAILED (the call may have had its effect).
- Redirects are not followed unless the operator turns ``follow_redirects`` on.
- A GET's ``data`` is added to the URL's own query string (flytekit's httpx call drops a query
  written in the URL), and integral numbers in the template are sent as integers (``5``, where
  flytekit sends the ``5.0`` its Struct stored).
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgpack
from flyteidl.core import literals_pb2, tasks_pb2, types_pb2

from connector_service import (
    Directory,
    File,
    Phase,
    Resource,
    SyncConnectorBase,
    clip,
    read_custom,
    read_inputs,
)
from connector_service.errors import InvalidRequestError
from connectors._http import (
    HostRule,
    HttpClients,
    HttpSettings,
    check_headers,
    check_url,
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
from connectors._literal_values import integral_numbers

if TYPE_CHECKING:
    import httpx

__all__ = ["WebhookConnector", "WebhookSettings", "render"]

_log = logging.getLogger(__name__)

WHO = "webhook"
KEY = "webhook"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_OUTPUT = "info"

_PLACEHOLDER = re.compile(r"\{(inputs|secrets)\.([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class WebhookSettings(HttpSettings):
    """``plugins.webhook``: what webhook tasks may call, and the operator's secret headers (``HttpSettings``)."""


class WebhookConnector(SyncConnectorBase):
    """Calls the URL a ``WebhookTask`` describes, with the operator's allow-list, on one shared client."""

    name = "Webhook Connector"
    settings_key: ClassVar[str] = KEY
    settings_model: ClassVar[type[WebhookSettings]] = WebhookSettings
    settings: WebhookSettings

    def __init__(self) -> None:
        super().__init__(task_type_name="webhook", task_type_version=0)
        self.clients = HttpClients()
        self.configure(WebhookSettings())

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        self._rules: tuple[HostRule, ...] = settings.rules()

    async def close(self) -> None:
        await self.clients.aclose()

    async def do(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Resource:
        custom = read_custom(task_template)
        values = read_inputs(inputs, task_template)
        call = _Call.build(custom, values, self.settings)
        output_type = _check_outputs(task_template)
        limit = call.timeout
        by_deadline = timeout is not None and timeout < limit
        if timeout is not None:
            limit = max(min(limit, timeout), 0.001)

        url = parse_url(call.url, WHO, "custom.url")
        check_url(url, self.settings, self._rules, KEY, WHO, "custom.url")  # before any client exists

        import httpx

        client = await self.clients.get()
        headers = with_secret_headers(call.headers, url, self.settings)
        if call.method not in _BODY_METHODS and call.data:
            # Merged into the URL's own query (httpx's params= would replace it; flytekit loses it).
            url = url.copy_merge_params(_query_params(call.data))
        request = client.build_request(
            call.method,
            url,
            headers=headers,
            json=call.data if call.method in _BODY_METHODS else None,
            timeout=httpx.Timeout(limit),
        )
        shown = f"{call.method} {safe_url(url)}"
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                response = await send(
                    client, request, self.settings, self._rules, KEY, WHO, "custom.url", sensitive_headers=headers
                )
                try:
                    return await self._answer(response, call, shown, output_type)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException) as exc:
            if not_sent(exc):
                return _unreachable(shown, exc)
            why = "the caller's deadline" if by_deadline else "custom.timeout_sec"
            return Resource(phase=Phase.FAILED, message=f"{WHO}: {shown} did not answer within {limit:g}s ({why})")
        except httpx.TransportError as exc:
            if not_sent(exc):
                return _unreachable(shown, exc)
            return Resource(
                phase=Phase.FAILED, message=f"{WHO}: {shown} failed after the request was sent: {describe(exc)}"
            )
        finally:
            _log.debug("%s %s took %.1fms", WHO, shown, (time.perf_counter() - started) * 1000)

    async def _answer(
        self, response: httpx.Response, call: _Call, shown: str, output_type: types_pb2.LiteralType | None
    ) -> Resource:
        status = response.status_code
        if not 200 <= status < 300:
            await drain(response)
            note = ""
            if response.has_redirect_location:
                note = (
                    " (too many redirects)"
                    if self.settings.follow_redirects
                    else f" (redirects are not followed: plugins.{KEY}.follow_redirects is off)"
                )
            _log.info("%s %s answered %d", WHO, shown, status)
            return Resource(
                phase=Phase.FAILED, message=f"{WHO}: {shown} answered {status} {response.reason_phrase}{note}"
            )
        cap = self.settings.max_response_bytes
        length = response.headers.get("content-length", "")
        body = b""
        too_big = length.isdigit() and int(length) > cap
        if not too_big:
            body, too_big = await read_capped(response, cap)
        if too_big:
            return Resource(
                phase=Phase.FAILED,
                message=f"{WHO}: the response of {shown} is larger than {cap} bytes (plugins.{KEY}.max_response_bytes)",
            )
        text = decode_text(body, response)
        info: dict[str, Any] = {"status_code": status, "response_data": text}
        if call.show_data:
            info["input_data"] = call.data
        if call.show_url:
            info["url"] = call.url
        parsed = _json_body(text, response)
        if parsed is not _NOT_JSON:
            info["response_json"] = parsed
        _log.debug("%s %s answered %d", WHO, shown, status)
        if output_type is None:
            return Resource(phase=Phase.SUCCEEDED, message="Webhook was successfully invoked!")
        return Resource(
            phase=Phase.SUCCEEDED,
            outputs={_OUTPUT: _dict_literal(info) if _is_struct(output_type) else info},
            message="Webhook was successfully invoked!",
        )


def _unreachable(shown: str, exc: BaseException) -> Resource:
    return Resource(
        phase=Phase.RETRYABLE_FAILED,
        message=f"{WHO}: could not reach {shown}: {describe(exc)}; nothing was sent, so a retry is safe",
    )


_NOT_JSON = object()


def _json_body(text: str, response: httpx.Response) -> Any:
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (kind == "application/json" or kind.endswith("+json")):
        return _NOT_JSON
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON


def _check_outputs(template: tasks_pb2.TaskTemplate) -> types_pb2.LiteralType | None:
    """The type of the ``info`` output (None when the task declares no outputs).

    Checked before anything is sent, so a task that cannot take the answer has no side effect.
    """
    declared = template.interface.outputs.variables
    unknown = sorted(name for name in declared if name != _OUTPUT)
    if unknown:
        raise InvalidRequestError(
            f"{WHO}: the task declares output(s) {', '.join(unknown)}; this connector produces only "
            f"'{_OUTPUT}' (a dict, as flytekit's WebhookTask declares)"
        )
    return declared[_OUTPUT].type if _OUTPUT in declared else None


def _is_struct(lt: types_pb2.LiteralType) -> bool:
    return bool(lt.WhichOneof("type") == "simple" and lt.simple == types_pb2.SimpleType.STRUCT)


def _dict_literal(value: Mapping[str, Any]) -> literals_pb2.Literal | Mapping[str, Any]:
    """A ``dict`` output as flytekit ≥ 1.14 writes it (msgpack binary): ints stay ints, however big.

    Falls back to the plain dict (a Struct) for a value msgpack cannot hold (ints beyond 64 bits).
    """
    try:
        packed = msgpack.packb(value, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return dict(value)
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(binary=literals_pb2.Binary(value=packed, tag="msgpack")))


# -- the call a template describes -----------------------------------------------------------


class _Call:
    """The HTTP call of one task, rendered from the template and checked; no I/O."""

    def __init__(
        self, url: str, method: str, headers: dict[str, str], data: Any, show_data: bool, show_url: bool, timeout: float
    ) -> None:
        self.url = url
        self.method = method
        self.headers = headers
        self.data = data
        self.show_data = show_data
        self.show_url = show_url
        self.timeout = timeout

    @classmethod
    def build(cls, custom: Mapping[str, Any], inputs: Mapping[str, Any], settings: WebhookSettings) -> _Call:
        url = custom.get("url")
        if not isinstance(url, str) or not url.strip():
            raise InvalidRequestError(f"{WHO}: custom.url is missing")
        method = custom.get("method", "POST")
        if not isinstance(method, str) or method.upper() not in METHODS:
            shown = method if isinstance(method, str) else type(method).__name__
            raise InvalidRequestError(
                f"{WHO}: custom.method {str(shown)[:20]!r} is not supported (use one of {', '.join(METHODS)})"
            )
        headers = custom.get("headers") or {}
        if not isinstance(headers, dict):
            raise InvalidRequestError(f"{WHO}: custom.headers must be an object, got {type(headers).__name__}")
        data = custom.get("data")
        if data is None:
            data = {}
        if not isinstance(data, (dict, list)):
            raise InvalidRequestError(f"{WHO}: custom.data must be an object or a list, got {type(data).__name__}")
        timeout = custom.get("timeout_sec")
        if timeout is None:
            timeout = settings.default_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise InvalidRequestError(f"{WHO}: custom.timeout_sec must be a positive number of seconds")
        for flag in ("show_data", "show_url"):
            if not isinstance(custom.get(flag, False), bool):
                raise InvalidRequestError(f"{WHO}: custom.{flag} must be true or false")
        rendered_url = render(url, inputs, "custom.url")
        if not isinstance(rendered_url, str):
            rendered_url = _text(rendered_url)
        rendered_headers = render(headers, inputs, "custom.headers")
        return cls(
            url=rendered_url.strip(),
            method=method.upper(),
            headers=check_headers(rendered_headers, WHO, "custom.headers"),
            data=integral_numbers(render(data, inputs, "custom.data")),
            show_data=bool(custom.get("show_data", False)),
            show_url=bool(custom.get("show_url", False)),
            timeout=float(timeout),
        )


def render(value: Any, inputs: Mapping[str, Any], where: str) -> Any:
    """Fill ``{inputs.NAME}`` placeholders in every string inside ``value``.

    A string that is exactly one placeholder becomes the input's JSON value (a number stays a
    number); placeholders inside longer strings become text. Nothing else is interpreted: no
    attribute or index access, no format specs, and other braces are left as they are.
    """
    if isinstance(value, str):
        return _render_text(value, inputs, where)
    if isinstance(value, list):
        return [render(v, inputs, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: render(v, inputs, f"{where}.{k}") for k, v in value.items()}
    return value


def _render_text(text: str, inputs: Mapping[str, Any], where: str) -> Any:
    matches = list(_PLACEHOLDER.finditer(text))
    if not matches:
        return text
    for m in matches:
        kind, name = m.group(1), m.group(2)
        if kind == "secrets":
            raise InvalidRequestError(
                f"{WHO}: {clip(where)}: {{secrets.…}} placeholders are not supported; "
                f"the operator can add secret headers per host (plugins.{KEY}.secret_headers)"
            )
        if not _NAME.fullmatch(name):
            raise InvalidRequestError(
                f"{WHO}: {clip(where)}: only {{inputs.NAME}} placeholders are supported, got {m.group(0)[:60]!r}"
            )
        if name not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise InvalidRequestError(
                f"{WHO}: {clip(where)} uses {{inputs.{clip(name)}}}, not an input of the task (inputs: {known})"
            )
    if len(matches) == 1 and matches[0].group(0) == text:
        return _json_value(inputs[matches[0].group(2)], f"{where} ({{inputs.{matches[0].group(2)}}})")
    return _PLACEHOLDER.sub(lambda m: _text(_json_value(inputs[m.group(2)], f"{where} ({m.group(0)})")), text)


def _json_value(value: Any, where: str) -> Any:
    """An input as a JSON value, the way flytekit's string rendering of literals shows it."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _json_value(value.value, where)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (File, Directory)):
        return value.uri
    if isinstance(value, list):
        return [_json_value(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v, where) for k, v in value.items()}
    raise InvalidRequestError(
        f"{WHO}: {clip(where)}: an input of kind {type(value).__name__} cannot be put in a request"
    )


def _text(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _query_params(data: Any) -> list[tuple[str, str | int | float | bool | None]]:
    """A GET's ``data`` as query parameters (as flytekit sends it): lists repeat the key,
    objects are sent as JSON text."""
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{WHO}: custom.data must be an object for a {WHO} without a body (GET, DELETE)")
    params: list[tuple[str, str | int | float | bool | None]] = []
    for key, value in data.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool):
                params.append((key, "true" if item else "false"))
            elif item is None:
                params.append((key, ""))
            else:
                params.append((key, _text(item)))
    return params
