"""Operator settings of the BigQuery connector: ``plugins.bigquery``.

Which Google Cloud projects a team's queries may run in, and with which service-account key,
is the operator's decision, made per Flyte project/domain in ``projects``
(``connectors._scoped``). A template names a project (``custom.ProjectID``) and, in Flyte 2, a
key secret (``custom.secrets.google_application_credentials``): both are accepted only when the
team's entry allows them. Where BigQuery is (``endpoint``: a private endpoint or an emulator) and
whether calls go without credentials (``anonymous``: an emulator) are the operator's settings; a
task can never pick its own endpoint. The default has no entry, so nothing is reachable.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connector_service import CommaList
from connectors._http import endpoint_url
from connectors._scoped import Scoped

__all__ = ["API_ROOT", "BigQuerySettings", "ProjectEntry"]

API_ROOT = "https://bigquery.googleapis.com"
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# Google Cloud project ids (6-30 of [a-z0-9-]), and the older domain-scoped ones (example.com:proj).
_PROJECT = re.compile(r"^([a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")


def _check_secret(value: str) -> str:
    if not _SECRET_NAME.match(value):
        raise ValueError(f"{value!r} is not a secret name (letters, digits, '_', '.', '-')")
    return value


class ProjectEntry(BaseModel):
    """One team's BigQuery access: the projects its tasks may name and the key they run with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_secret: str = Field(
        default="bigquery_service_account",
        description="Secret (get_secret) holding the service account's JSON key.",
    )
    allowed_key_secrets: CommaList = Field(
        default_factory=list,
        description="Other key secrets this team's Flyte 2 templates may name "
        "(custom.secrets.google_application_credentials); any other name is refused.",
    )
    allowed_projects: CommaList = Field(
        default_factory=list,
        description="Google Cloud projects the team's tasks may name in custom.ProjectID. Empty: every task "
        "of the team is refused.",
    )
    default_location: str | None = Field(
        default=None, description="Location (US, EU, europe-west1...) when the template names none."
    )

    @field_validator("key_secret")
    @classmethod
    def _key_secret(cls, value: str) -> str:
        return _check_secret(value)

    @field_validator("allowed_key_secrets")
    @classmethod
    def _key_secrets(cls, value: list[str]) -> list[str]:
        return [_check_secret(v) for v in value]

    @field_validator("allowed_projects")
    @classmethod
    def _projects(cls, value: list[str]) -> list[str]:
        for project in value:
            if not _PROJECT.match(project):
                raise ValueError(f"{project!r} is not a Google Cloud project id")
        return value

    def key_secrets(self) -> list[str]:
        return [self.key_secret, *self.allowed_key_secrets]


class BigQuerySettings(BaseModel):
    """``plugins.bigquery``: per-team projects and keys, where BigQuery is, and how long a call may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    projects: Scoped[ProjectEntry] = Field(
        default_factory=dict,
        description="Per team (keys 'project/domain', 'project' or 'default'; the most specific wins): the "
        "Google Cloud projects its tasks may use and the key they run with. Empty: every task is refused.",
    )
    endpoint: str = Field(
        default="",
        description="Base URL of the BigQuery API instead of https://bigquery.googleapis.com (a private "
        "endpoint, an emulator). Tasks can never choose an endpoint.",
    )
    anonymous: bool = Field(
        default=False,
        description="Call the endpoint without credentials (an emulator); needs endpoint. No key is read.",
    )
    allow_http: bool = Field(
        default=False,
        description="Allow an http:// endpoint with credentials (tokens then travel in clear); an anonymous "
        "endpoint may be http:// without it.",
    )
    request_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds one BigQuery call may take (within the caller's deadline)."
    )
    console_url: str = Field(
        default="https://console.cloud.google.com/bigquery",
        description="The BigQuery console, for each job's log link; empty: no log link.",
    )

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        return endpoint_url(value)

    @model_validator(mode="after")
    def _anonymous_needs_endpoint(self) -> BigQuerySettings:
        if self.anonymous and not self.endpoint:
            raise ValueError("anonymous is set without endpoint: only an emulator takes calls without credentials")
        if self.endpoint.startswith("http://") and not (self.anonymous or self.allow_http):
            raise ValueError(
                "endpoint is http://, which would send tokens in clear: set allow_http to allow it, or anonymous "
                "(emulators)"
            )
        return self

    @property
    def base_url(self) -> str:
        return self.endpoint or API_ROOT
