"""``chatgpt``: one chat completion (flytekitplugins-openai's ``ChatGPTTask``), synchronously.

The task's ``custom.chatgpt_config`` is the request (``model`` required) and its ``message``
input the user's message; the output ``o0`` is the first choice's text. The call is bounded
by ``plugins.openai.chat_timeout`` and by the caller's deadline (propeller's ExecuteTaskSync
timeout, 10 s by default), whichever is sooner, so propeller always gets an answer.

Unlike flytekit's connector: messages already in ``chatgpt_config`` (a system prompt) are kept
and the user's message is appended (flytekit replaces them); integer parameters are sent as
integers (a Struct makes ``max_tokens=64`` into ``64.0``, which OpenAI refuses); throttling and
an unreachable API are UNAVAILABLE (propeller retries) rather than an internal error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2, tasks_pb2

from connector_service import (
    InvalidRequestError,
    Phase,
    Resource,
    SyncConnectorBase,
    clip,
    read_custom,
    read_inputs,
)
from connectors._scoped import scope_of
from connectors.openai._api import ApiError, NoAnswerInTime, OpenAIApi
from connectors.openai._task import KEY, integral_numbers, organization_of, team_credentials, team_of
from connectors.openai.settings import OpenAISettings

__all__ = ["ChatGPTConnector"]

_log = logging.getLogger(__name__)

WHO = "chatgpt"
_OUTPUT = "o0"


class ChatGPTConnector(SyncConnectorBase):
    """Answers a ``ChatGPTTask`` with the operator's per-team key."""

    name = "ChatGPT Connector"
    settings_key: ClassVar[str] = KEY
    settings_model: ClassVar[type[OpenAISettings]] = OpenAISettings
    settings: OpenAISettings

    def __init__(self) -> None:
        super().__init__(task_type_name="chatgpt", task_type_version=0)
        self.configure(OpenAISettings())

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        self.api = OpenAIApi(settings)

    async def close(self) -> None:
        await self.api.aclose()

    async def do(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Resource:
        custom = read_custom(task_template)
        organization = organization_of(custom, WHO)
        body = _chat_body(custom, read_inputs(inputs, task_template))
        declared = task_template.interface.outputs.variables
        if any(name != _OUTPUT for name in declared):
            raise InvalidRequestError(f"{WHO}: the task declares outputs other than {_OUTPUT!r} (a str)")
        team = team_of(self.settings, scope_of(task_execution_metadata))
        creds = team_credentials(self.settings, team, organization)
        limit = self.settings.chat_timeout
        by_deadline = timeout is not None and timeout < limit
        if timeout is not None:
            limit = max(min(limit, timeout), 0.001)
        try:
            async with asyncio.timeout(limit):
                answer = await self.api.chat(creds, body, limit)
        except (TimeoutError, NoAnswerInTime):
            return _late(limit, by_deadline)
        except ApiError as exc:
            return Resource(
                phase=Phase.FAILED, message=f"{WHO}: OpenAI refused the request ({exc.status}): {exc.message}"
            )
        return _answer(answer, _OUTPUT in declared)


def _late(limit: float, by_deadline: bool) -> Resource:
    why = (
        "the caller's deadline (propeller's ExecuteTaskSync timeout)" if by_deadline else "plugins.openai.chat_timeout"
    )
    return Resource(phase=Phase.RETRYABLE_FAILED, message=f"{WHO}: OpenAI did not answer within {limit:g}s ({why})")


def _answer(answer: dict[str, Any], wants_output: bool) -> Resource:
    choices = answer.get("choices")
    first: dict[str, Any] = {}
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
    message: dict[str, Any] = first["message"] if isinstance(first.get("message"), dict) else {}
    content = message.get("content")
    if not isinstance(content, str):
        refusal = message.get("refusal")
        why = f"the model refused: {clip(str(refusal))}" if refusal else "the answer has no text content"
        return Resource(
            phase=Phase.FAILED, message=f"{WHO}: {why} (finish_reason {clip(str(first.get('finish_reason')))})"
        )
    note = " (cut short: finish_reason length)" if first.get("finish_reason") == "length" else ""
    return Resource(
        phase=Phase.SUCCEEDED,
        outputs={_OUTPUT: content} if wants_output else None,
        message=f"{WHO}: answered by {clip(str(answer.get('model', '')))}{note}",
    )


def _chat_body(custom: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    config = custom.get("chatgpt_config")
    if not isinstance(config, dict):
        raise InvalidRequestError(f"{WHO}: custom.chatgpt_config must be an object")
    model = config.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(f"{WHO}: custom.chatgpt_config.model is required (a model name)")
    if config.get("stream"):
        raise InvalidRequestError(f"{WHO}: custom.chatgpt_config.stream is not supported: the task takes one answer")
    message = inputs.get("message")
    if not isinstance(message, str):
        raise InvalidRequestError(f"{WHO}: the input message (a str) is missing")
    body: dict[str, Any] = integral_numbers(config)
    earlier = body.get("messages") or []
    if not isinstance(earlier, list):
        raise InvalidRequestError(f"{WHO}: custom.chatgpt_config.messages must be a list")
    body["messages"] = [*earlier, {"role": "user", "content": message}]
    return body
