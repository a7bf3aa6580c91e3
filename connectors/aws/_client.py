"""AWS calls over aiobotocore: one client per (service, region, endpoint, role), and what an error means.

aiobotocore directly, not aioboto3 (which pins an old botocore) and not boto3 in a thread. It
is imported on first use: a service that runs no AWS task never pays its import (0.3 s).
Credentials come from botocore's default chain (environment, IRSA web identity, instance
profile); a team's ``role_arn`` is assumed with STS from those credentials and refreshed
before it expires (botocore's own refreshable credentials). Clients are made once and closed
when the connector closes (``SharedClients``).

What an answer means for the task:

- no answer (refused, reset, timed out), 5xx, throttling: ``UnavailableError`` (propeller retries);
- access denied, bad or missing credentials: ``PreconditionError`` naming the role or the chain;
- anything else AWS refused: ``Refused`` with AWS's code and message, for the connector to decide.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from connector_service import InvalidRequestError, PreconditionError, SharedClients, UnavailableError, clip

__all__ = ["AwsClients", "ClientKey", "Refused", "error_of"]

_log = logging.getLogger(__name__)

_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
        "InternalError",
    }
)
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidSignatureException",
        "AuthFailure",
        "MissingAuthenticationToken",
        "NotAuthorized",
    }
)


class ClientKey(NamedTuple):
    """What makes two calls share a client."""

    service: str
    region: str
    endpoint_url: str
    role_arn: str
    external_id: str
    sts_endpoint_url: str
    """Where the role is assumed (only when ``role_arn`` is set)."""


class Refused(Exception):
    """AWS answered with an error that is neither an outage nor a credential problem."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code
        self.message = message
        self.status = status


def error_of(exc: Any) -> tuple[str, str, int]:
    """A botocore ``ClientError``'s code, message and HTTP status."""
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") if isinstance(response, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    meta = response.get("ResponseMetadata") if isinstance(response, Mapping) else None
    status = meta.get("HTTPStatusCode", 0) if isinstance(meta, Mapping) else 0
    return str(error.get("Code", "")), str(error.get("Message", "")), int(status or 0)


@dataclass(frozen=True)
class _Call:
    who: str
    key: ClientKey
    operation: str

    @property
    def where(self) -> str:
        return f"{self.key.service} in {self.key.region}" + (
            f" at {self.key.endpoint_url}" if self.key.endpoint_url else ""
        )

    @property
    def identity(self) -> str:
        return f"role {self.key.role_arn}" if self.key.role_arn else "the service's default AWS credential chain"


class AwsClients:
    """The clients of one connector (closed by its ``close``)."""

    def __init__(self, request_timeout: float) -> None:
        self._request_timeout = request_timeout
        self._clients: SharedClients[ClientKey, Any] = SharedClients(self._make, self._close)
        self._session: Any = None

    async def aclose(self) -> None:
        await self._clients.aclose()

    def budget(self, timeout: float | None) -> float:
        """Seconds one call may take: ``request_timeout``, within the caller's deadline less a margin."""
        limit = self._request_timeout
        if timeout is not None:
            limit = min(limit, timeout - 0.5)
        return max(limit, 0.1)

    def _base_session(self) -> Any:
        if self._session is None:
            from aiobotocore.session import get_session

            self._session = get_session()
        return self._session

    async def _make(self, key: ClientKey) -> Any:
        from botocore.config import Config

        session = self._base_session()
        if key.role_arn:
            session = await self._role_session(key)
        config = Config(
            connect_timeout=min(self._request_timeout, 5.0),
            read_timeout=self._request_timeout,
            retries={"mode": "standard", "max_attempts": 2},
            user_agent_extra="flyte-connector-service",
        )
        context = session.create_client(
            key.service, region_name=key.region, endpoint_url=key.endpoint_url or None, config=config
        )
        client = await context.__aenter__()
        _log.info("made an AWS client for %s in %s (%s)", key.service, key.region, key.role_arn or "default chain")
        return client

    async def _role_session(self, key: ClientKey) -> Any:
        """A session whose credentials are ``key.role_arn`` assumed from the default chain, refreshed as they expire."""
        from aiobotocore.credentials import AioAssumeRoleCredentialFetcher, AioDeferredRefreshableCredentials
        from aiobotocore.session import get_session

        base = self._base_session()
        source = await base.get_credentials()
        if source is None:
            raise PreconditionError(f"no AWS credentials in the service's default chain to assume {key.role_arn} with")
        creator = functools.partial(
            base.create_client, region_name=key.region, endpoint_url=key.sts_endpoint_url or None
        )
        extra: dict[str, Any] = {"RoleSessionName": "flyte-connector-service"}
        if key.external_id:
            extra["ExternalId"] = key.external_id
        fetcher = AioAssumeRoleCredentialFetcher(creator, source, key.role_arn, extra_args=extra)
        session = get_session()
        session._credentials = AioDeferredRefreshableCredentials(
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
        return session

    @staticmethod
    async def _close(client: Any) -> None:
        await client.__aexit__(None, None, None)

    async def call(
        self,
        who: str,
        key: ClientKey,
        operation: str,
        params: Mapping[str, Any],
        timeout: float,
    ) -> dict[str, Any]:
        """``operation`` (a client method name) with ``params``, within ``timeout`` seconds."""
        from botocore import exceptions as bx

        call = _Call(who, key, operation)
        if timeout <= 0:
            raise UnavailableError(f"{who}: no time left to call {call.where} within the call's deadline")
        try:
            async with asyncio.timeout(timeout):
                client = await self._clients.get(key)
                if operation not in client.meta.method_to_api_mapping:
                    raise InvalidRequestError(f"{who}: {clip(key.service)} has no method {clip(operation)!r}")
                answer = await getattr(client, operation)(**params)
        except TimeoutError:
            raise UnavailableError(f"{who}: {operation} on {call.where} did not answer within {timeout:.1f}s") from None
        except bx.ClientError as exc:
            raise _client_error(call, exc) from None
        except bx.ParamValidationError as exc:
            raise InvalidRequestError(
                f"{who}: the request for {key.service}.{operation} is not valid: {clip(str(exc), 600)}"
            ) from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError) as exc:
            raise PreconditionError(
                f"{who}: no usable AWS credentials for {call.where} ({type(exc).__name__}); the service uses "
                f"{call.identity}"
            ) from None
        except (bx.HTTPClientError, bx.ConnectionError) as exc:
            raise UnavailableError(f"{who}: {call.where} cannot be reached: {type(exc).__name__}") from None
        except bx.BotoCoreError as exc:
            raise UnavailableError(f"{who}: {operation} on {call.where} failed: {clip(str(exc), 300)}") from None
        return dict(answer)


def _client_error(call: _Call, exc: Exception) -> Exception:
    code, message, status = error_of(exc)
    text = clip(message, 600)
    if code in _THROTTLING or status == 429 or status >= 500:
        return UnavailableError(f"{call.who}: {call.operation} on {call.where} answered {status} {code}: {text}")
    if code in _DENIED or status in (401, 403) or (code.startswith("AccessDenied")):
        return PreconditionError(
            f"{call.who}: AWS refused {call.operation} on {call.where} to {call.identity} ({code}): {text}"
        )
    return Refused(code, text, status)
