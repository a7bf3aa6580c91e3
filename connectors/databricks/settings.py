"""Operator settings of the Databricks connectors: ``plugins.databricks``.

Which workspace a task reaches, and with which credential, is the operator's decision, made
per Flyte project/domain in ``instances`` (``connectors._scoped``). A template may *name* a
workspace (``databricksInstance``) or a token secret (``databricksTokenSecret``, Flyte 2's
``secrets.databricks_token``), and the name is accepted only when it is the one the operator
gave that team: a task can never send a token to a host of its choosing. The default has no
instance, so a service nobody configured for Databricks reaches nothing.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connector_service import CommaList
from connectors._http import endpoint_url
from connectors._scoped import Scoped

__all__ = ["DatabricksSettings", "Instance", "normalize_host"]

_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def normalize_host(text: str) -> str:
    """``https://Dbc-1.cloud.databricks.com/`` -> ``dbc-1.cloud.databricks.com``: how templates and settings compare."""
    host = text.strip().lower()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    return host.rstrip("/")


class Instance(BaseModel):
    """One team's workspace: its host, how the service authenticates there, and an optional endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(description="The workspace's host name (e.g. dbc-1234.cloud.databricks.com), as in its URL.")
    token_secret: str = Field(
        default="databricks_token", description="Secret (get_secret) holding the personal access token (pat)."
    )
    allowed_token_secrets: CommaList = Field(
        default_factory=list,
        description="Other secrets this team's templates may name as their token (databricksTokenSecret, "
        "Flyte 2's secrets.databricks_token); any other name is refused.",
    )
    auth_type: Literal["pat", "oauth_m2m"] = Field(
        default="pat", description="How tasks authenticate unless their template asks for the other one."
    )
    oauth_client_id_secret: str | None = Field(
        default=None, description="Secret holding the service principal's client id (oauth_m2m)."
    )
    oauth_client_secret_secret: str | None = Field(
        default=None, description="Secret holding the service principal's client secret (oauth_m2m)."
    )
    endpoint: str = Field(
        default="",
        description="Base URL the API calls go to instead of https://HOST (a private link, an emulator); "
        "http:// only with plugins.databricks.allow_http.",
    )

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        host = normalize_host(value)
        if not _HOST.match(host):
            raise ValueError(f"{value!r} is not a host name (give the workspace's host, without path)")
        return host

    @field_validator("token_secret", "oauth_client_id_secret", "oauth_client_secret_secret")
    @classmethod
    def _check_secret(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_NAME.match(value):
            raise ValueError(f"{value!r} is not a secret name (letters, digits, '_', '.', '-')")
        return value

    @field_validator("allowed_token_secrets")
    @classmethod
    def _check_secrets(cls, value: list[str]) -> list[str]:
        for name in value:
            cls._check_secret(name)
        return value

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        return endpoint_url(value)

    @model_validator(mode="after")
    def _check_oauth(self) -> Instance:
        if self.auth_type == "oauth_m2m" and not self.oauth_ready:
            raise ValueError("auth_type oauth_m2m needs oauth_client_id_secret and oauth_client_secret_secret")
        return self

    @property
    def oauth_ready(self) -> bool:
        return bool(self.oauth_client_id_secret and self.oauth_client_secret_secret)

    @property
    def base_url(self) -> str:
        return self.endpoint or f"https://{self.host}"

    def token_secrets(self) -> list[str]:
        return [self.token_secret, *self.allowed_token_secrets]


class DatabricksSettings(BaseModel):
    """``plugins.databricks``: the workspaces the ``databricks`` and ``spark`` task types may use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instances: Scoped[Instance] = Field(
        default_factory=dict,
        description="Workspaces by 'project/domain', 'project' or 'default' (the most specific wins). Empty: "
        "every task is refused.",
    )
    allow_http: bool = Field(
        default=False, description="Allow http:// endpoints (an emulator on loopback); tokens then travel in clear."
    )
    request_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds one Jobs API call may take (the call's deadline too)."
    )

    @model_validator(mode="after")
    def _http_allowed(self) -> DatabricksSettings:
        if not self.allow_http:
            for key, entry in self.instances.items():
                if entry.endpoint.startswith("http://"):
                    raise ValueError(
                        f"instances.{key}.endpoint is http://, which sends tokens in clear: "
                        "set allow_http to allow it (emulators)"
                    )
        return self
