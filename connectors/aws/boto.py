"""``boto`` (v0, sync): one AWS API call (flytekitplugins-awssagemaker's ``BotoTask``) within the caller's deadline.

``custom = {service, method, config, region, images}``; ``config`` is the call's parameters with
``{inputs.x}``, ``{images.x}`` and ``{idempotence_token}`` placeholders (``_values.py``); an
input named ``region`` overrides ``custom.region`` (as flytekit does). Outputs: ``result``
(the answer as a dict, msgpack as flytekit writes dicts; for ``create_model`` and
``create_endpoint_config`` only the ARN, as flytekit) and ``idempotence_token``.

Only the ``service:method`` pairs in ``plugins.boto.allowed_methods`` are called; anything else
is refused before a client is made or a request sent. Unlike flytekit's connector: the answer's
datetimes and bytes become strings rather than a pickle in the output; a refused call is a
FAILED task with AWS's message (flytekit raises, and propeller sees an internal error), and
throttling or an unreachable endpoint is UNAVAILABLE so propeller retries.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, ClassVar

from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2, tasks_pb2

from connector_service import (
    InvalidRequestError,
    Phase,
    Resource,
    SyncConnectorBase,
    UnavailableError,
    clip,
    read_custom,
    read_inputs,
)
from connectors.aws._client import AwsClients, Refused
from connectors.aws._team import client_key, region_of, team_of
from connectors.aws._values import dict_literal, format_config, plain, resolve_images
from connectors.aws.settings import BotoSettings

__all__ = ["BotoConnector"]

_log = logging.getLogger(__name__)

WHO = "boto"
KEY = "boto"
MAX_STREAM = 1024 * 1024
"""Largest streamed answer body read into ``result`` (e.g. an ``invoke_endpoint`` answer)."""
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,127}$")
_ARN = re.compile(r"arn:aws[a-z-]*:[a-zA-Z0-9-]+:[a-zA-Z0-9-]*:\d{12}:[a-zA-Z0-9\-/_.]+")
_ARN_OF = {"create_model": "ModelArn", "create_endpoint_config": "EndpointConfigArn"}
_EXISTS = "Cannot create already existing"


class BotoConnector(SyncConnectorBase):
    """Calls one allowed AWS API method per task."""

    name = "Boto Connector"
    settings_key: ClassVar[str] = KEY
    settings_model: ClassVar[type[BotoSettings]] = BotoSettings
    settings: BotoSettings

    def __init__(self) -> None:
        super().__init__(task_type_name="boto", task_type_version=0)
        self.configure(BotoSettings())

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        self.clients = AwsClients(settings.request_timeout)

    async def close(self) -> None:
        await self.clients.aclose()

    def _allowed(self, custom: dict[str, Any]) -> tuple[str, str]:
        service, method = custom.get("service"), custom.get("method")
        if not isinstance(service, str) or not _NAME.match(service):
            raise InvalidRequestError(f"{WHO}: custom.service must be an AWS service name (e.g. sagemaker)")
        if not isinstance(method, str) or not _NAME.match(method):
            raise InvalidRequestError(f"{WHO}: custom.method must be a boto3 method name (e.g. create_model)")
        if f"{service}:{method}" not in self.settings.allowed_methods:
            raise InvalidRequestError(
                f"{WHO}: {service}:{method} is not allowed on this service (plugins.{KEY}.allowed_methods); "
                "nothing was called"
            )
        return service, method

    async def do(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Resource:
        started = time.monotonic()
        custom = read_custom(task_template)
        service, method = self._allowed(custom)
        key, team = team_of(self.settings, KEY, task_execution_metadata)
        values = read_inputs(inputs, task_template)
        asked = values.get("region") or custom.get("region")
        field = "the input region" if values.get("region") else "custom.region"
        region = region_of(self.settings, KEY, key, team, asked, WHO, field)
        images = resolve_images(custom.get("images"), region, WHO)
        params, token = format_config(custom.get("config"), values, images, service, WHO)
        limit = self.settings.request_timeout
        if timeout is not None:
            limit = min(limit, timeout - 0.5)
        target = client_key(self.settings, team, service, region)
        try:
            answer = await self.clients.call(WHO, target, method, params, limit)
            remaining = limit - (time.monotonic() - started)
            answer = await _read_streams(answer, remaining)
        except Refused as exc:
            if exc.code == "ValidationException" and _EXISTS in exc.message:
                return self._exists(method, exc.message, token, task_template)
            return Resource(phase=Phase.FAILED, message=f"{WHO}: AWS refused {service}.{method}: {exc}")
        result = plain(answer)
        if method in _ARN_OF:
            result = {_ARN_OF[method]: result.get(_ARN_OF[method])}
        _log.info("called %s.%s in %s for team %s", service, method, region, key)
        return Resource(
            phase=Phase.SUCCEEDED,
            outputs=_outputs(task_template, result, token),
            message=f"{WHO}: {service}.{method} succeeded",
        )

    @staticmethod
    def _exists(method: str, message: str, token: str, template: tasks_pb2.TaskTemplate) -> Resource:
        """A retried ``create_*`` (same idempotence token): the resource the first call made, as flytekit answers."""
        found = _ARN.search(message)
        if found and method in _ARN_OF:
            result: dict[str, Any] = {_ARN_OF[method]: found.group(0)}
        elif found:
            result = {"result": f"Entity already exists {found.group(0)}."}
        else:
            result = {"result": "Entity already exists."}
        return Resource(
            phase=Phase.SUCCEEDED,
            outputs=_outputs(template, result, token),
            message=f"{WHO}: {method}: {clip(message, 300)}",
        )


async def _read_streams(answer: dict[str, Any], remaining: float) -> dict[str, Any]:
    """Streamed bodies (``invoke_endpoint``'s ``Body``) read into bytes, within the deadline and ``MAX_STREAM``."""
    out = dict(answer)
    for name, value in answer.items():
        read = getattr(value, "read", None)
        if read is None or isinstance(value, bytes | str):
            continue
        try:
            async with asyncio.timeout(max(remaining, 0.01)):
                data = await read(MAX_STREAM + 1)
        except TimeoutError:
            raise UnavailableError(f"{WHO}: the answer's {clip(name)} did not arrive within the deadline") from None
        finally:
            close = getattr(value, "close", None)
            if close is not None:
                close()
        if len(data) > MAX_STREAM:
            raise InvalidRequestError(f"{WHO}: the answer's {clip(name)} is larger than {MAX_STREAM} bytes")
        out[name] = bytes(data)
    return out


def _outputs(template: tasks_pb2.TaskTemplate, result: dict[str, Any], token: str) -> literals_pb2.LiteralMap:
    declared = template.interface.outputs.variables
    out = literals_pb2.LiteralMap()
    if "result" in declared:
        out.literals["result"].CopyFrom(dict_literal(result))
    if "idempotence_token" in declared:
        out.literals["idempotence_token"].scalar.primitive.string_value = token
    return out
