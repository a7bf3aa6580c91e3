"""Operator settings of the Snowflake connector: ``plugins.snowflake``.

Which Snowflake account a team's queries run in, as which user and with which key, is the
operator's decision: a template only *names* an account and a user (flytekit puts them in
``template.config``), and a query runs only when they are the ones the operator configured for
the task's Flyte project/domain. Nothing is reachable by default (no ``accounts`` entry).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors._scoped import Scoped

__all__ = ["AccountEntry", "SnowflakeSettings", "normalize_account"]

_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9_.-]+$")
_IDENT = re.compile(r"^[A-Za-z0-9_$.\"-]+$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def normalize_account(account: str) -> str:
    """The account identifier as Snowflake compares it: case-insensitive, without the host suffix."""
    text = account.strip().lower()
    for suffix in (".snowflakecomputing.com", ".privatelink"):
        text = text.removesuffix(suffix)
    return text


class AccountEntry(BaseModel):
    """One team's Snowflake account: the only account and user its tasks may name, and the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: str = Field(
        description="Account identifier the team's templates must name: orgname-accountname (preferred) or a "
        "legacy locator such as xy12345.us-east-2.aws."
    )
    user: str = Field(description="Snowflake user the key belongs to; templates must name this user.")
    private_key_secret: str = Field(
        default="snowflake_private_key",
        description="Secret (get_secret) holding the user's private key, PEM (PKCS#8 or PKCS#1).",
    )
    private_key_passphrase_secret: str | None = Field(
        default=None, description="Secret holding the private key's passphrase, if it is encrypted."
    )
    role: str | None = Field(default=None, description="Role for the session; a template's role must be this one.")
    warehouse: str | None = Field(default=None, description="Warehouse when the template names none.")

    @field_validator("account")
    @classmethod
    def _check_account(cls, value: str) -> str:
        if not _ACCOUNT.match(value.strip()):
            raise ValueError(f"{value!r} is not a Snowflake account identifier")
        return value.strip()

    @field_validator("user", "role", "warehouse")
    @classmethod
    def _check_ident(cls, value: str | None) -> str | None:
        if value is not None and not _IDENT.match(value):
            raise ValueError(f"{value!r} is not a Snowflake identifier")
        return value

    @field_validator("private_key_secret", "private_key_passphrase_secret")
    @classmethod
    def _check_secret(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_NAME.match(value):
            raise ValueError(f"{value!r} is not a secret name (letters, digits, '_', '.', '-')")
        return value


class SnowflakeSettings(BaseModel):
    """``plugins.snowflake``: per-team accounts, where Snowflake is, and how long a call may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: Scoped[AccountEntry] = Field(
        default_factory=dict,
        description="Per team (keys 'project/domain', 'project' or 'default'): the account, user and key its tasks "
        "use. Empty: every Snowflake task is refused.",
    )
    host: str | None = Field(
        default=None,
        description="Endpoint override for every account (a private link, an emulator); unset: Snowflake's own "
        "host for the account. Tasks can never choose an endpoint.",
    )
    port: int | None = Field(default=None, gt=0, lt=65536, description="Port of the endpoint override.")
    protocol: Literal["https", "http"] = Field(default="https", description="Protocol of the endpoint override.")
    connect_timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds to log in.")
    call_timeout: float = Field(
        default=20.0, gt=0, le=300, description="Upper bound in seconds on one Snowflake call (the caller's too)."
    )
    no_data_grace: float = Field(
        default=600.0,
        ge=0,
        description="Seconds after submission during which Snowflake may have no record of a query yet (NO_DATA: "
        "QUEUED); after them the query counts as lost (RETRYABLE_FAILED, so propeller runs it again).",
    )
    console_url: str = Field(
        default="https://app.snowflake.com",
        description="Base URL of the Snowflake console for the query-history log link; empty: no log link.",
    )

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str | None) -> str | None:
        if value is not None and not _HOST.match(value):
            raise ValueError(f"{value!r} is not a host name or address")
        return value

    @model_validator(mode="after")
    def _port_needs_host(self) -> SnowflakeSettings:
        if self.port is not None and self.host is None:
            raise ValueError("port is set without host: the endpoint override needs a host")
        return self
