"""The three Jobs API 2.2 calls (``runs/submit``, ``runs/get``, ``runs/cancel``) over the shared httpx client.

Not databricks-sdk: it costs 1.5 s and 55 MiB at import for what is three REST calls. Every
call goes to the workspace the operator configured (``Instance.base_url``), with a token read
from the operator's secrets each time (so a rotated secret takes effect at once), or an
OAuth M2M token fetched from the workspace's ``/oidc/v1/token`` and cached until shortly
before it expires. Secrets are read from the service's own sources only, never from a Flyte 2
request's ``connection``: the credential is the operator's choice for the team, and today's
executor puts the template's secret *names* there (``secrets.databricks_token``), not values.

What an answer means for the task:

- no answer (refused, reset, timed out), 5xx, 429: ``UnavailableError`` (propeller retries);
- 401/403: ``PreconditionError`` naming the secret (never its value); a redirect (a wrong
  host or endpoint) too;
- 404, or 400 saying the run does not exist: ``RunNotFound``;
- any other 4xx: ``Refused`` with Databricks' error code and message.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector_service import PreconditionError, UnavailableError, clip, get_secret
from connectors._http import HttpClients, describe, read_capped
from connectors.databricks.settings import Instance

__all__ = ["JobsClient", "Refused", "RunNotFound", "Target"]

_log = logging.getLogger(__name__)

API = "/api/2.2/jobs"
MAX_BODY = 4 * 1024 * 1024
"""Largest answer read (a runs/get of a run with many tasks and long messages stays far below)."""
_OAUTH_MARGIN = 60.0
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}


@dataclass(frozen=True)
class Target:
    """Where and as whom a task's calls go: the operator's instance entry and the chosen credential."""

    key: str
    instance: Instance
    auth_type: str
    token_secret: str

    @property
    def where(self) -> str:
        return self.instance.host


class RunNotFound(LookupError):
    """The workspace does not know the run."""


class Refused(Exception):
    """The workspace answered a 4xx other than auth, throttling or not-found."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _error_of(status: int, body: bytes) -> tuple[str, str]:
    """Databricks' ``error_code`` and ``message`` (or a short text of whatever else it sent)."""
    try:
        data = json.loads(body)
    except ValueError:
        return "", clip(body.decode(errors="replace").strip() or f"HTTP {status}", 500)
    if not isinstance(data, Mapping):
        return "", clip(str(data), 500)
    code = data.get("error_code") if isinstance(data.get("error_code"), str) else ""
    message = data.get("message") or data.get("detail") or data.get("error") or f"HTTP {status}"
    return clip(code, 80), clip(str(message), 500)


def _service_secret(name: str) -> str:
    """``get_secret`` outside the calling request's context, so a Flyte 2 connection is not consulted."""
    return contextvars.Context().run(get_secret, name).strip()


class JobsClient:
    """Jobs API calls for one connector; OAuth tokens are cached per workspace and client-id secret."""

    def __init__(self, clients: HttpClients) -> None:
        self._clients = clients
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    async def submit(self, target: Target, body: Mapping[str, Any], timeout: float) -> str:
        answer = await self._call(target, "POST", f"{API}/runs/submit", body=body, timeout=timeout)
        run_id = answer.get("run_id")
        if isinstance(run_id, bool) or not isinstance(run_id, int | str) or not str(run_id).isdigit():
            raise UnavailableError(f"databricks: runs/submit on {target.where} answered no run_id")
        return str(run_id)

    async def get(self, target: Target, run_id: str, timeout: float) -> dict[str, Any]:
        return await self._call(target, "GET", f"{API}/runs/get", params={"run_id": run_id}, timeout=timeout)

    async def cancel(self, target: Target, run_id: str, timeout: float) -> None:
        await self._call(target, "POST", f"{API}/runs/cancel", body={"run_id": int(run_id)}, timeout=timeout)

    # ------------------------------------------------------------------ one call

    async def _call(
        self,
        target: Target,
        method: str,
        path: str,
        *,
        timeout: float,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            authorization = await self._authorization(target, deadline - time.monotonic())
            status, raw = await self._send(
                target, method, path, deadline - time.monotonic(), authorization, body=body, params=params
            )
            if status in (401, 403) and target.auth_type == "oauth_m2m" and attempt == 1:
                self._tokens.pop(self._token_key(target), None)  # expired or revoked early: fetch a new one once
                continue
            return self._answer(target, path, status, raw)
        raise AssertionError("unreachable")

    def _answer(self, target: Target, path: str, status: int, raw: bytes) -> dict[str, Any]:
        call = path.rsplit("/jobs/", 1)[-1]
        if 200 <= status < 300:
            try:
                data = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise UnavailableError(f"databricks: {call} on {target.where} answered {status} with no JSON") from None
            if not isinstance(data, dict):
                raise UnavailableError(f"databricks: {call} on {target.where} answered {status} with no JSON object")
            return data
        code, message = _error_of(status, raw)
        if 300 <= status < 400:
            raise PreconditionError(
                f"databricks: {call} on {target.where} answered a redirect ({status}): the API is not at "
                f"{target.instance.base_url}; check plugins.databricks.instances.{target.key}"
            )
        if status == 429 or status >= 500:
            raise UnavailableError(f"databricks: {call} on {target.where} answered {status} {code}: {message}".strip())
        if status in (401, 403):
            raise PreconditionError(
                f"databricks: {target.where} refused the credential ({status} {code}) from {self._who(target)}: "
                f"{message}"
            )
        exists = "does not exist" in message.lower() or "not found" in message.lower()
        if status == 404 or (status == 400 and (code in _NOT_FOUND_CODES or exists)):
            raise RunNotFound(f"{status} {code}: {message}")
        raise Refused(status, code, message)

    @staticmethod
    def _who(target: Target) -> str:
        if target.auth_type == "oauth_m2m":
            return (
                f"the OAuth client in secrets {target.instance.oauth_client_id_secret!r} and "
                f"{target.instance.oauth_client_secret_secret!r}"
            )
        return f"secret {target.token_secret!r}"

    async def _send(
        self,
        target: Target,
        method: str,
        path: str,
        timeout: float,
        authorization: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> tuple[int, bytes]:
        import httpx

        if timeout <= 0:
            raise UnavailableError(f"databricks: no time left to call {target.where} within the call's deadline")
        client = await self._clients.get()
        url = target.instance.base_url + path
        headers = {"Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        try:
            response = await client.request(
                method,
                url,
                json=body,
                params=params,
                data=form,
                auth=auth,
                headers=headers,
                timeout=httpx.Timeout(timeout),
            )
        except httpx.TransportError as exc:
            raise UnavailableError(f"databricks: {target.where} cannot be reached: {describe(exc)}") from None
        try:
            raw, _ = await read_capped(response, MAX_BODY)
        except httpx.TransportError as exc:
            raise UnavailableError(f"databricks: {target.where} broke off its answer: {describe(exc)}") from None
        finally:
            await response.aclose()
        return response.status_code, raw

    # ------------------------------------------------------------------ credentials

    @staticmethod
    def _token_key(target: Target) -> tuple[str, str]:
        return (target.instance.base_url, target.instance.oauth_client_id_secret or "")

    async def _authorization(self, target: Target, timeout: float) -> str:
        if target.auth_type != "oauth_m2m":
            return f"Bearer {_service_secret(target.token_secret)}"
        key = self._token_key(target)
        cached = self._tokens.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        instance = target.instance
        client_id = _service_secret(instance.oauth_client_id_secret or "")
        client_secret = _service_secret(instance.oauth_client_secret_secret or "")
        status, raw = await self._send(
            target,
            "POST",
            "/oidc/v1/token",
            timeout,
            "",
            form={"grant_type": "client_credentials", "scope": "all-apis"},
            auth=(client_id, client_secret),
        )
        if status == 429 or status >= 500:
            raise UnavailableError(f"databricks: the token endpoint of {target.where} answered {status}")
        try:
            data = json.loads(raw)
            token = data["access_token"]
            expires_in = float(data.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            code, message = _error_of(status, raw)
            raise PreconditionError(
                f"databricks: the token endpoint of {target.where} gave no token ({status} {code}) to "
                f"{self._who(target)}: {message}"
            ) from None
        if not isinstance(token, str) or not token:
            raise PreconditionError(f"databricks: the token endpoint of {target.where} gave an empty token")
        self._tokens[key] = (token, time.monotonic() + max(expires_in - _OAUTH_MARGIN, 1.0))
        _log.info("fetched an OAuth token for %s (expires in %.0fs)", target.where, expires_in)
        return f"Bearer {token}"
