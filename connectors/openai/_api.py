"""The four OpenAI REST calls the connectors make, over one shared httpx client.

``POST /batches``, ``GET /batches/{id}`` (and the list, for idempotent re-creation),
``POST /batches/{id}/cancel`` and ``POST /chat/completions`` are plain JSON over HTTP, so the
``openai`` package (and its import time and memory) is not needed. What the answers mean for
propeller is decided here, once for both connectors:

- the API cannot be reached, drops the connection, throttles (429) or fails (5xx):
  ``UnavailableError`` (UNAVAILABLE; propeller polls or retries again);
- the key is refused (401/403): ``PreconditionError`` naming the *secret*, never the key
  (OpenAI's own 401 text quotes part of the key, so it is not passed on);
- the request is refused (400, 422...): ``ApiError`` with OpenAI's message, which the
  connectors turn into INVALID_ARGUMENT on create or a FAILED phase;
- 404: ``ApiError`` with ``status == 404`` (an unknown batch).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connector_service import PreconditionError, SecretNotFoundError, UnavailableError, clip, get_secret
from connectors._http import HttpClients, decode_text, describe, drain, not_sent, read_capped
from connectors.openai.settings import DEFAULT_KEY_SECRET, FLYTEKIT_KEY_SECRET, OpenAIAccount, OpenAISettings

if TYPE_CHECKING:
    import httpx

__all__ = ["ApiError", "Credentials", "NoAnswerInTime", "OpenAIApi", "credentials_for", "redact"]

_log = logging.getLogger(__name__)

_KEYLIKE = re.compile(r"\b(sk|sess|rk)-[A-Za-z0-9_*.\-]{4,}")


def redact(text: str) -> str:
    """``text`` without anything shaped like an OpenAI key, clipped: what may reach a message."""
    return clip(_KEYLIKE.sub(r"\1-***", text))


class ApiError(Exception):
    """OpenAI answered with a client error other than an auth failure; ``message`` is OpenAI's (redacted)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NoAnswerInTime(UnavailableError):
    """The call was sent but not answered in time (UNAVAILABLE for batch calls; chatgpt says so in its phase)."""


@dataclass(frozen=True)
class Credentials:
    """The key for one call, and which secret it came from (for messages; never the key itself)."""

    api_key: str
    secret: str
    organization: str

    def __repr__(self) -> str:  # never show the key, not even in a traceback's locals
        return f"Credentials(secret={self.secret!r}, organization={self.organization!r})"


def credentials_for(account: OpenAIAccount, organization: str, team: str) -> Credentials:
    """The key a team uses for ``organization`` ("" for none), read from its secret now (so a
    rotated secret is picked up without a restart); FAILED_PRECONDITION when there is none."""
    secret = account.organizations.get(organization) if organization else None
    if secret is None:
        secret = account.api_key_secret
    if secret is None:
        listed = ", ".join(sorted(account.organizations)) or "none"
        raise PreconditionError(
            f"plugins.openai.teams.{clip(team)} has no key for organization {clip(organization or '(none)')!r} "
            f"(organizations: {listed}; api_key_secret is null)"
        )
    try:
        return Credentials(get_secret(secret).strip(), secret, organization)
    except SecretNotFoundError as exc:
        if secret != DEFAULT_KEY_SECRET:
            raise
        try:
            return Credentials(get_secret(FLYTEKIT_KEY_SECRET).strip(), FLYTEKIT_KEY_SECRET, organization)
        except SecretNotFoundError as fallback:
            raise SecretNotFoundError(f"no OpenAI key: {exc}; and flytekit's name: {fallback}") from None


class OpenAIApi:
    """The calls, with the operator's base URL, headers and timeouts."""

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        self.clients = HttpClients()

    async def aclose(self) -> None:
        await self.clients.aclose()

    async def create_batch(
        self, creds: Credentials, body: Mapping[str, Any], idempotency_key: str | None, timeout: float | None
    ) -> dict[str, Any]:
        extra = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._call("POST", "/batches", creds, timeout, body=body, headers=extra)

    async def retrieve_batch(self, creds: Credentials, batch_id: str, timeout: float | None) -> dict[str, Any]:
        return await self._call("GET", f"/batches/{batch_id}", creds, timeout)

    async def cancel_batch(self, creds: Credentials, batch_id: str, timeout: float | None) -> dict[str, Any]:
        return await self._call("POST", f"/batches/{batch_id}/cancel", creds, timeout)

    async def recent_batches(self, creds: Credentials, limit: int, timeout: float | None) -> list[dict[str, Any]]:
        """The organization's ``limit`` newest batches (one page: OpenAI's limit is 100 per page)."""
        found: list[dict[str, Any]] = []
        after: str | None = None
        while len(found) < limit:
            params = {"limit": str(min(100, limit - len(found)))} | ({"after": after} if after else {})
            page = await self._call("GET", "/batches", creds, timeout, params=params)
            data = [b for b in page.get("data") or [] if isinstance(b, dict)]
            found += data
            if not page.get("has_more") or not data:
                break
            after = str(data[-1].get("id", ""))
        return found

    async def chat(self, creds: Credentials, body: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
        return await self._call("POST", "/chat/completions", creds, timeout, body=body)

    async def _call(
        self,
        method: str,
        path: str,
        creds: Credentials,
        timeout: float | None,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        import httpx

        settings = self.settings
        limit = settings.request_timeout if timeout is None else max(min(settings.request_timeout, timeout), 0.001)
        sent = {
            **settings.default_headers,
            **(headers or {}),
            "Authorization": f"Bearer {creds.api_key}",
            "Accept": "application/json",
        }
        if creds.organization:
            sent["OpenAI-Organization"] = creds.organization
        shown = f"{method} {path.split('/')[1]}"
        client = await self.clients.get()
        try:
            request = client.build_request(
                method, settings.base_url + path, json=body, params=params, headers=sent, timeout=httpx.Timeout(limit)
            )
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            if not_sent(exc):  # no connection in time: nothing reached OpenAI
                raise UnavailableError(
                    f"cannot reach OpenAI at {settings.base_url} ({shown}): {describe(exc)}"
                ) from None
            raise NoAnswerInTime(f"OpenAI ({shown}) did not answer within {limit:g}s: {describe(exc)}") from None
        except httpx.TransportError as exc:
            if not_sent(exc):
                raise UnavailableError(
                    f"cannot reach OpenAI at {settings.base_url} ({shown}): {describe(exc)}"
                ) from None
            raise UnavailableError(f"OpenAI ({shown}) dropped the connection: {describe(exc)}") from None
        try:
            return await self._answer(response, creds, shown)
        except httpx.TransportError as exc:
            raise UnavailableError(f"OpenAI ({shown}) dropped the connection: {describe(exc)}") from None
        finally:
            await response.aclose()

    async def _answer(self, response: httpx.Response, creds: Credentials, shown: str) -> dict[str, Any]:
        status = response.status_code
        if status in (401, 403):
            await drain(response)
            why = "refused the key" if status == 401 else "does not let the key do this"
            raise PreconditionError(
                f"OpenAI {why} ({status}) from secret {creds.secret!r}"
                + (f" for organization {clip(creds.organization)!r}" if creds.organization else "")
                + ": check the secret and plugins.openai.teams"
            )
        if status == 429 or status >= 500 or status == 408:
            message = await self._error_message(response)
            retry = response.headers.get("retry-after", "")
            raise UnavailableError(
                f"OpenAI ({shown}) answered {status}: {message}"
                + (f" (retry after {clip(retry)}s)" if retry.isdigit() else "")
            )
        if status >= 300:
            raise ApiError(status, await self._error_message(response))
        body, too_big = await read_capped(response, self.settings.max_response_bytes)
        if too_big:
            raise UnavailableError(
                f"OpenAI's answer ({shown}) is larger than plugins.openai.max_response_bytes "
                f"({self.settings.max_response_bytes})"
            )
        try:
            parsed = json.loads(decode_text(body, response))
        except ValueError:
            raise UnavailableError(f"OpenAI ({shown}) answered {status} with something that is not JSON") from None
        if not isinstance(parsed, dict):
            raise UnavailableError(f"OpenAI ({shown}) answered {status} with a JSON {type(parsed).__name__}")
        return parsed

    async def _error_message(self, response: httpx.Response) -> str:
        body, _ = await read_capped(response, 64 * 1024)
        text = decode_text(body, response)
        try:
            error = json.loads(text).get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return redact(error["message"])
        if isinstance(error, str):
            return redact(error)
        return redact(response.reason_phrase or f"HTTP {response.status_code}")
