"""Operator settings of the OpenAI connectors: ``plugins.openai``.

Which API key a task spends is the operator's decision, made per team: ``teams`` is a table
keyed by ``project/domain``, ``project`` or ``default`` (``connectors/_scoped.py``), and each
entry names the *secrets* holding the keys, optionally one per OpenAI organization. A task
only names an organization (``openai_organization``); it never sees or picks a key. The
default table is empty: no team can spend a key until the operator says so.

``base_url`` and ``default_headers`` exist for private gateways (Azure-style proxies, an
egress proxy that adds its own header) and for the tests' emulator.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector_service import InvalidRequestError
from connectors._http import check_headers
from connectors._scoped import Scoped

__all__ = ["DEFAULT_KEY_SECRET", "FLYTEKIT_KEY_SECRET", "OpenAIAccount", "OpenAISettings"]

DEFAULT_KEY_SECRET = "openai_api_key"
FLYTEKIT_KEY_SECRET = "FLYTE_OPENAI_API_KEY"
"""The name flytekitplugins-openai reads (env ``_FSEC_FLYTE_OPENAI_API_KEY``); accepted when
``openai_api_key`` is not found, so an existing deployment's secret keeps working."""

_SECRET = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_ORGANIZATION = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_RESERVED_HEADERS = frozenset({"authorization", "openai-organization", "idempotency-key", "content-type"})


def _check_secret(name: str) -> str:
    if not _SECRET.match(name):
        raise ValueError(f"{name!r} is not a secret name (letters, digits, '_', '.', '-')")
    return name


class OpenAIAccount(BaseModel):
    """One team's keys: ``plugins.openai.teams.<project/domain | project | default>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key_secret: str | None = Field(
        DEFAULT_KEY_SECRET,
        description="Secret holding the key used when the task names no organization, or one not listed in "
        "'organizations' (then OpenAI decides whether the key may act for it). null: only the listed "
        f"organizations. The default, '{DEFAULT_KEY_SECRET}', falls back to flytekit's '{FLYTEKIT_KEY_SECRET}'.",
    )
    organizations: dict[str, str] = Field(
        default_factory=dict,
        description="Organization id -> secret holding that organization's key: {'org-abc': 'openai_key_abc'}.",
    )

    @field_validator("api_key_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        return None if value is None else _check_secret(value)

    @field_validator("organizations")
    @classmethod
    def _organizations(cls, value: dict[str, str]) -> dict[str, str]:
        for org, secret in value.items():
            if not _ORGANIZATION.match(org):
                raise ValueError(f"{org!r} is not an OpenAI organization id")
            _check_secret(secret)
        return value


class OpenAISettings(BaseModel):
    """``plugins.openai``: shared by ``openai-batch`` and ``chatgpt``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(
        "https://api.openai.com/v1", description="The API's root: OpenAI, a gateway, or an emulator in tests."
    )
    default_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers sent with every call (a gateway's routing header; the tests' X-AIMock-Batch-Outcome). "
        "Not Authorization, OpenAI-Organization or Idempotency-Key: the connector sets those.",
    )
    teams: Scoped[OpenAIAccount] = Field(
        default_factory=dict,
        description="Keys per Flyte project/domain, project or 'default'. Empty (the default): no task may run.",
    )
    request_timeout: float = Field(
        30.0, gt=0, le=600, description="Seconds for one batch API call (create, retrieve, cancel, list)."
    )
    chat_timeout: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Most seconds a chatgpt completion may take; the caller's (propeller's) deadline caps it too.",
    )
    max_response_bytes: int = Field(
        4 * 1024 * 1024, gt=0, le=64 * 1024 * 1024, description="Largest API answer read into memory."
    )
    dedupe_recent_batches: int = Field(
        100,
        ge=0,
        le=1000,
        description="How many of the organization's newest batches CreateTask looks through for one this task "
        "execution attempt already created (a retried CreateTask); 0 turns the look-up off.",
    )
    console_url: str = Field(
        "https://platform.openai.com/batches/{batch_id}",
        description="Log link shown for a batch ('{batch_id}' is replaced); empty: no link.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        import httpx

        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a URL ({type(exc).__name__})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{value!r} must be an absolute http(s) URL")
        if url.query or url.userinfo:
            raise ValueError("must not carry a query or credentials (keys come from secrets)")
        return value.rstrip("/")

    @field_validator("default_headers")
    @classmethod
    def _headers(cls, value: dict[str, Any]) -> dict[str, str]:
        try:
            headers = check_headers(value, "plugins.openai", "default_headers")
        except InvalidRequestError as exc:
            raise ValueError(str(exc)) from None
        reserved = sorted(name for name in headers if name.lower() in _RESERVED_HEADERS)
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: set by the connector, not by default_headers")
        return headers

    @field_validator("console_url")
    @classmethod
    def _console(cls, value: str) -> str:
        if value and "{batch_id}" not in value:
            raise ValueError("must contain '{batch_id}' (or be empty for no link)")
        return value
