"""Operator settings of the AWS connectors: ``plugins.boto``, ``plugins.sagemaker``, ``plugins.emr_serverless``.

Each connector has its own key (so an operator can enable SageMaker endpoints without opening
the generic boto call), and all three share the same shape:

- ``teams``: per Flyte project/domain (``connectors/_scoped.py``), the role the service assumes
  for that team's calls (empty: the service's own credentials from the default chain, IRSA in
  Kubernetes) and the regions the team may use. Empty table: every task is refused, so a
  service nobody configured for AWS calls nothing.
- ``endpoint_urls``: a URL per service name (``sagemaker``, ``emr-serverless``, ``sts``...)
  instead of AWS's (a VPC endpoint, or an emulator in tests). Only the operator sets them.
- ``plugins.boto.allowed_methods``: which ``service:method`` a ``boto`` task may call. Empty by
  default: the generic call is a privilege escalation (any API with the service's role) unless
  the operator names exactly what is allowed.
"""

from __future__ import annotations

import re
import urllib.parse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector_service import CommaList
from connectors._scoped import Scoped

__all__ = ["AwsSettings", "AwsTeam", "BotoSettings", "EmrServerlessSettings", "SageMakerSettings"]

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_SERVICE = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
_METHOD = re.compile(r"^[a-z][a-z0-9_]{1,127}$")


def check_region(value: str) -> str:
    if not _REGION.match(value):
        raise ValueError(f"{value!r} is not an AWS region name (e.g. us-east-1)")
    return value


class AwsTeam(BaseModel):
    """One team's AWS identity: ``plugins.<key>.teams.<project/domain | project | default>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role_arn: str = Field(
        default="",
        description="IAM role assumed (sts:AssumeRole) for this team's calls; empty: the service's own "
        "credentials from the default chain (IRSA, instance profile, environment).",
    )
    external_id: str | None = Field(default=None, description="ExternalId sent with AssumeRole, if the role asks.")
    regions: CommaList = Field(
        default_factory=list, description="Regions this team's tasks may use; empty: any region."
    )

    @field_validator("role_arn")
    @classmethod
    def _check_role(cls, value: str) -> str:
        if value and not _ROLE.match(value):
            raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)")
        return value

    @field_validator("regions")
    @classmethod
    def _check_regions(cls, value: list[str]) -> list[str]:
        return [check_region(region) for region in value]


class AwsSettings(BaseModel):
    """What the three AWS connectors share: teams, region, endpoints, timeouts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teams: Scoped[AwsTeam] = Field(
        default_factory=dict,
        description="AWS identity by 'project/domain', 'project' or 'default' (the most specific wins). "
        "Empty: every task is refused.",
    )
    default_region: str = Field(default="", description="Region of tasks that name none (empty: they are refused).")
    endpoint_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Service name (sagemaker, emr-serverless, sts, ...) -> URL used instead of AWS's endpoint.",
    )
    request_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds one AWS call may take (within the caller's deadline)."
    )

    @field_validator("default_region")
    @classmethod
    def _check_default_region(cls, value: str) -> str:
        return check_region(value) if value else value

    @field_validator("endpoint_urls")
    @classmethod
    def _check_endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        for service, url in value.items():
            if not _SERVICE.match(service):
                raise ValueError(f"{service!r} is not an AWS service name (e.g. sagemaker, emr-serverless)")
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query:
                raise ValueError(f"endpoint_urls.{service}: {url!r} is not an http(s)://host[:port] URL")
        return value


class BotoSettings(AwsSettings):
    """``plugins.boto``: the generic ``boto`` task."""

    allowed_methods: CommaList = Field(
        default_factory=list,
        description="'service:method' pairs boto tasks may call (e.g. sagemaker:create_model). Empty: none.",
    )

    @field_validator("allowed_methods")
    @classmethod
    def _check_methods(cls, value: list[str]) -> list[str]:
        for item in value:
            service, _, method = item.partition(":")
            if not _SERVICE.match(service) or not _METHOD.match(method):
                raise ValueError(f"{item!r} is not 'service:method' (e.g. sagemaker:create_model)")
        return value


class SageMakerSettings(AwsSettings):
    """``plugins.sagemaker``: the ``sagemaker-endpoint`` task."""


class EmrServerlessSettings(AwsSettings):
    """``plugins.emr_serverless``: the ``emr_serverless`` task."""

    allow_application_names: bool = Field(
        default=True,
        description="Let a task name its application by name (looked up with ListApplications) rather than id.",
    )
