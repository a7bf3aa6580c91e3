"""``openai-batch``: an OpenAI batch (flytekitplugins-openai's ``BatchEndpointTask``) as a Flyte task.

CreateTask calls ``POST /batches`` with the task's ``custom.config`` (``completion_window``
24h and ``endpoint`` /v1/chat/completions by default, as flytekit) and the ``input_file_id``
input; GetTask retrieves the batch (``states.py`` maps its status); DeleteTask cancels it.
The output ``result`` (the batch object as a dict) is sent once, at the terminal phase.

Unlike flytekit's connector: the meta is small JSON (batch id, the team's settings key, the
organization), never a pickle; the key comes from the operator's per-team secret; a
throttled or unreachable API is UNAVAILABLE instead of a failed task; and a CreateTask that
propeller retries after a timeout finds the batch the first call made (the task execution
attempt's token is stored in the batch's ``metadata``) instead of starting a second one.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service import (
    AsyncConnectorBase,
    InvalidRequestError,
    Phase,
    Resource,
    ResourceMeta,
    UnavailableError,
    clip,
    is_terminal_phase,
    read_custom,
    read_inputs,
)
from connectors._scoped import execution_token, scope_of
from connectors.openai._api import ApiError, Credentials, OpenAIApi
from connectors.openai._task import KEY, dict_literal, integral_numbers, organization_of, team_credentials, team_of
from connectors.openai.settings import OpenAISettings
from connectors.openai.states import batch_message, phase_of

__all__ = ["TOKEN_KEY", "OpenAIBatchConnector", "OpenAIBatchMeta"]

_log = logging.getLogger(__name__)

WHO = "openai-batch"
TOKEN_KEY = "flyte_execution"
"""The batch ``metadata`` key holding the task execution attempt's token (see ``_scoped.execution_token``)."""
_MAX_METADATA_KEYS = 16  # OpenAI's limit on a batch's metadata
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_FINISHED_ON_CANCEL = (400, 404, 409)
"""Cancel answers meaning there is nothing (left) to cancel: already finished, or unknown."""


@dataclass
class OpenAIBatchMeta(ResourceMeta):
    """What finds a batch again: its id, the ``plugins.openai.teams`` key and the organization."""

    batch_id: str
    team: str
    organization: str = ""


class OpenAIBatchConnector(AsyncConnectorBase):
    """Runs OpenAI batches with the operator's per-team keys."""

    name = "OpenAI Batch Endpoint Connector"
    settings_key: ClassVar[str] = KEY
    settings_model: ClassVar[type[OpenAISettings]] = OpenAISettings
    settings: OpenAISettings

    def __init__(self) -> None:
        super().__init__(task_type_name="openai-batch", task_type_version=0, metadata_type=OpenAIBatchMeta)
        self._unknown_statuses: set[str] = set()
        self.configure(OpenAISettings())

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        self.api = OpenAIApi(settings)

    async def close(self) -> None:
        await self.api.aclose()

    async def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> OpenAIBatchMeta:
        custom = read_custom(task_template)
        organization = organization_of(custom, WHO)
        body = _batch_body(custom, read_inputs(inputs, task_template))
        team = team_of(self.settings, scope_of(task_execution_metadata))
        creds = team_credentials(self.settings, team, organization)
        token = execution_token(task_execution_metadata, prefix="flyte", length=64)
        if token is not None and not _add_token(body, token):
            token = None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        batch = None
        if token is not None and self.settings.dedupe_recent_batches:
            batch = await self._find(creds, token, timeout)
        if batch is None:
            left = None if deadline is None else max(deadline - loop.time(), 0.001)
            try:
                batch = await self.api.create_batch(creds, body, token, left)
            except ApiError as exc:
                raise InvalidRequestError(f"{WHO}: OpenAI refused the batch ({exc.status}): {exc.message}") from None
        batch_id = batch.get("id")
        if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id):
            raise UnavailableError(f"{WHO}: OpenAI's answer to the create call has no valid batch id")
        _log.info("%s: created batch %s for team %s", WHO, batch_id, team)
        return OpenAIBatchMeta(batch_id=batch_id, team=team, organization=organization)

    async def _find(self, creds: Credentials, token: str, timeout: float | None) -> dict[str, Any] | None:
        """The batch an earlier call for the same attempt made, if it is among the newest."""
        recent = await self.api.recent_batches(creds, self.settings.dedupe_recent_batches, timeout)
        for batch in recent:
            metadata = batch.get("metadata")
            if isinstance(metadata, dict) and metadata.get(TOKEN_KEY) == token:
                _log.info("%s: batch %s was already created for this attempt; reusing it", WHO, batch.get("id"))
                return batch
        return None

    async def get(self, resource_meta: OpenAIBatchMeta, timeout: float | None = None, **kwargs: Any) -> Resource:
        batch_id = _checked_id(resource_meta.batch_id, "resource_meta.batch_id")
        creds = team_credentials(self.settings, resource_meta.team, resource_meta.organization)
        links = self._links(batch_id)
        try:
            batch = await self.api.retrieve_batch(creds, batch_id, timeout)
        except ApiError as exc:
            where = f" for organization {clip(creds.organization)!r}" if creds.organization else ""
            return Resource(
                phase=Phase.FAILED,
                message=f"{WHO}: OpenAI cannot show batch {batch_id}{where} ({exc.status}): {exc.message}",
                log_links=links,
            )
        status = str(batch.get("status", ""))
        phase = phase_of(status, self._unknown_statuses)
        info: dict[str, Any] = {"batch_id": batch_id, "status": clip(status)}
        if isinstance(batch.get("request_counts"), dict):
            info["request_counts"] = batch["request_counts"]
        return Resource(
            phase=phase,
            message=batch_message(batch, phase),
            log_links=links,
            custom_info=info,
            outputs={"result": dict_literal(batch)} if is_terminal_phase(phase) else None,
        )

    async def delete(self, resource_meta: OpenAIBatchMeta, timeout: float | None = None, **kwargs: Any) -> None:
        batch_id = _checked_id(resource_meta.batch_id, "resource_meta.batch_id")
        creds = team_credentials(self.settings, resource_meta.team, resource_meta.organization)
        try:
            await self.api.cancel_batch(creds, batch_id, timeout)
        except ApiError as exc:
            if exc.status not in _FINISHED_ON_CANCEL:
                raise UnavailableError(
                    f"{WHO}: cancelling batch {batch_id} failed ({exc.status}): {exc.message}"
                ) from None
            _log.info("%s: nothing to cancel for batch %s (%d: %s)", WHO, batch_id, exc.status, exc.message)
        else:
            _log.info("%s: cancelled batch %s", WHO, batch_id)

    def _links(self, batch_id: str) -> list[execution_pb2.TaskLog] | None:
        url = self.settings.console_url
        if not url:
            return None
        return [execution_pb2.TaskLog(name="OpenAI batch", uri=url.replace("{batch_id}", batch_id))]


def _batch_body(custom: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    config = custom.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InvalidRequestError(f"{WHO}: custom.config must be an object, got {type(config).__name__}")
    if "input_file_id" in config:
        raise InvalidRequestError(f"{WHO}: custom.config.input_file_id is not allowed: it comes from the task's input")
    body: dict[str, Any] = integral_numbers(config)
    body.setdefault("completion_window", "24h")
    body.setdefault("endpoint", "/v1/chat/completions")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequestError(f"{WHO}: custom.config.metadata must be an object, got {type(metadata).__name__}")
    file_id = inputs.get("input_file_id")
    if not isinstance(file_id, str) or not file_id.strip():
        raise InvalidRequestError(f"{WHO}: the input input_file_id (an uploaded file's id) is missing or empty")
    body["input_file_id"] = file_id.strip()
    return body


def _add_token(body: dict[str, Any], token: str) -> bool:
    """Put the attempt's token into the batch's metadata; False when the user's fill all 16 slots."""
    metadata = dict(body.get("metadata") or {})
    if TOKEN_KEY not in metadata and len(metadata) >= _MAX_METADATA_KEYS:
        _log.info("%s: custom.config.metadata has %d keys; CreateTask cannot be made idempotent", WHO, len(metadata))
        return False
    metadata[TOKEN_KEY] = token
    body["metadata"] = metadata
    return True


def _checked_id(value: Any, where: str) -> str:
    """A batch id as it may go into a URL path (a meta is replayed by the caller, not trusted)."""
    if not isinstance(value, str) or not _BATCH_ID.match(value):
        raise InvalidRequestError(f"{WHO}: {where} holds no valid batch id")
    return value
