"""The three BigQuery REST calls (``jobs.insert``, ``jobs.get``, ``jobs.cancel``) over the shared httpx client.

Not google-cloud-bigquery: it is synchronous and heavy at import, for what is three REST calls.
Calls are authenticated with a self-signed JWT made by google-auth from the service-account key
in the operator's secret (scoped to BigQuery; Google's APIs take it in place of an OAuth access
token, so no token endpoint is called). The key is read from the secret on each call and the
signed token cached by the key's content until shortly before it expires, so a rotated secret
takes effect at once. With ``plugins.bigquery.anonymous`` (an emulator) no key is read.

What an answer means for the task:

- no answer (refused, reset, timed out), 5xx, 429, or an error whose reason is
  ``rateLimitExceeded``/``backendError``/``internalError``: ``UnavailableError``;
- 401, and 403 for any other reason: ``PreconditionError`` naming the key's secret;
- 404: ``JobNotFound``; 409: ``AlreadyExists``;
- any other 4xx: ``Refused`` with BigQuery's reason and message.
"""

from __future__ import annotations

import calendar
import contextvars
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector_service import PreconditionError, UnavailableError, clip, get_secret
from connectors._http import HttpClients, describe, read_capped
from connectors.bigquery.settings import BigQuerySettings

__all__ = ["AlreadyExists", "JobNotFound", "JobsClient", "Refused", "Target"]

_log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/bigquery"
MAX_BODY = 4 * 1024 * 1024
_TOKEN_MARGIN = 300.0
_UNAVAILABLE_REASONS = frozenset({"rateLimitExceeded", "backendError", "internalError"})


@dataclass(frozen=True)
class Target:
    """Where a task's jobs are and as whom they are reached (names only, never a key)."""

    team: str
    project: str
    location: str
    key_secret: str


class JobNotFound(LookupError):
    """BigQuery does not know the job."""


class AlreadyExists(Exception):
    """A job with this id exists already (a retried CreateTask)."""


class Refused(Exception):
    """BigQuery answered a 4xx other than auth, throttling, not-found or already-exists."""


def _error_of(status: int, raw: bytes) -> tuple[str, str]:
    """BigQuery's first error reason and its message (or a short text of whatever else it sent)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "", clip(raw.decode(errors="replace").strip() or f"HTTP {status}", 500)
    error = data.get("error") if isinstance(data, Mapping) else None
    if not isinstance(error, Mapping):
        return "", clip(str(data), 500)
    errors = error.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], Mapping) else {}
    reason = first.get("reason") if isinstance(first.get("reason"), str) else ""
    message = error.get("message") or first.get("message") or f"HTTP {status}"
    return clip(str(reason), 80), clip(str(message), 500)


def _service_secret(name: str) -> str:
    """``get_secret`` outside the calling request's context, so a Flyte 2 connection is not consulted."""
    return contextvars.Context().run(get_secret, name).strip()


class JobsClient:
    """BigQuery job calls for one connector, over the shared client; signed tokens cached by key."""

    def __init__(self, clients: HttpClients, settings: BigQuerySettings) -> None:
        self._clients = clients
        self._settings = settings
        self._tokens: dict[str, tuple[str, float]] = {}

    def _jobs_url(self, project: str, job_id: str = "", action: str = "") -> str:
        url = f"{self._settings.base_url}/bigquery/v2/projects/{urllib.parse.quote(project, safe='')}/jobs"
        if job_id:
            url += f"/{urllib.parse.quote(job_id, safe='')}"
        if action:
            url += f"/{action}"
        return url

    async def insert(self, target: Target, body: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        return await self._call(target, "POST", self._jobs_url(target.project), "jobs.insert", timeout, body=body)

    async def get(self, target: Target, job_id: str, timeout: float) -> dict[str, Any]:
        url = self._jobs_url(target.project, job_id)
        return await self._call(target, "GET", url, "jobs.get", timeout, params=self._where(target))

    async def cancel(self, target: Target, job_id: str, timeout: float) -> dict[str, Any]:
        url = self._jobs_url(target.project, job_id, "cancel")
        return await self._call(target, "POST", url, "jobs.cancel", timeout, params=self._where(target))

    @staticmethod
    def _where(target: Target) -> dict[str, str]:
        return {"location": target.location} if target.location else {}

    # ------------------------------------------------------------------ one call

    async def _call(
        self,
        target: Target,
        method: str,
        url: str,
        call: str,
        timeout: float,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        import httpx

        where = f"project {target.project}"
        headers = {"Accept": "application/json"}
        if not self._settings.anonymous:
            headers["Authorization"] = f"Bearer {self._token(target.key_secret)}"
        client = await self._clients.get()
        try:
            response = await client.request(
                method, url, json=body, params=params, headers=headers, timeout=httpx.Timeout(timeout)
            )
        except httpx.TransportError as exc:
            why = describe(exc)
            raise UnavailableError(f"bigquery: {call} in {where}: BigQuery cannot be reached: {why}") from None
        try:
            raw, _ = await read_capped(response, MAX_BODY)
        except httpx.TransportError as exc:
            why = describe(exc)
            raise UnavailableError(f"bigquery: {call} in {where}: BigQuery broke off its answer: {why}") from None
        finally:
            await response.aclose()
        return self._answer(target, call, response.status_code, raw)

    def _answer(self, target: Target, call: str, status: int, raw: bytes) -> dict[str, Any]:
        where = f"project {target.project}"
        if 200 <= status < 300:
            try:
                data = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise UnavailableError(f"bigquery: {call} in {where} answered {status} with no JSON") from None
            if not isinstance(data, dict):
                raise UnavailableError(f"bigquery: {call} in {where} answered {status} with no JSON object")
            return data
        reason, message = _error_of(status, raw)
        shown = f"{status} {reason}".strip()
        if status == 429 or status >= 500 or reason in _UNAVAILABLE_REASONS:
            raise UnavailableError(f"bigquery: {call} in {where} answered {shown}: {message}")
        if status in (401, 403):
            raise PreconditionError(
                f"bigquery: {call} in {where} was refused ({shown}) for the service account in secret "
                f"{target.key_secret!r}: {message}"
            )
        if status == 404:
            raise JobNotFound(f"{shown}: {message}")
        if status == 409:
            raise AlreadyExists(f"{shown}: {message}")
        if 300 <= status < 400:
            raise PreconditionError(
                f"bigquery: {call} answered a redirect ({status}): the API is not at {self._settings.base_url}; "
                "check plugins.bigquery.endpoint"
            )
        raise Refused(f"{shown}: {message}")

    # ------------------------------------------------------------------ credentials

    def _token(self, secret: str) -> str:
        """A self-signed JWT for BigQuery from the key in ``secret``; cached by the key's content."""
        text = _service_secret(secret)
        digest = hashlib.sha256(text.encode()).hexdigest()
        cached = self._tokens.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            from google.oauth2 import service_account
        except ImportError:  # pragma: no cover - the extra is missing
            raise PreconditionError("bigquery: google-auth is not installed (pip install '.[bigquery]')") from None
        try:
            info = json.loads(text)
            credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE]
            )
            credentials = credentials.with_always_use_jwt_access(True)
            credentials.refresh(None)  # signs locally: no request is made
        except Exception as exc:  # a value, key or format error: never show the secret
            raise PreconditionError(
                f"bigquery: secret {secret!r} does not hold a usable service-account JSON key ({type(exc).__name__})"
            ) from None
        token = str(credentials.token)
        lifetime = 3600.0
        if credentials.expiry is not None:  # google-auth's expiry is naive UTC
            lifetime = calendar.timegm(credentials.expiry.timetuple()) - time.time()
        self._tokens = {k: v for k, v in self._tokens.items() if v[1] > time.monotonic()}
        self._tokens[digest] = (token, time.monotonic() + max(lifetime - _TOKEN_MARGIN, 1.0))
        _log.info("signed a BigQuery token for the key in secret %r", secret)
        return token
