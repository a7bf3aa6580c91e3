"""Which AWS identity, region and endpoint a task's calls use: the operator's team entry decides.

The team comes from propeller's task execution id (never the template); the region from the
template (or ``default_region``) within the team's ``regions``; the endpoint only from
``endpoint_urls``. The team's key goes into ``resource_meta`` and its entry is looked up again
on every GetTask/DeleteTask, so a changed role applies to running tasks at once.
"""

from __future__ import annotations

from typing import Any

from connector_service import InvalidRequestError, clip
from connectors._scoped import choose, lookup, scope_of
from connectors.aws._client import ClientKey
from connectors.aws.settings import AwsSettings, AwsTeam, check_region

__all__ = ["client_key", "region_of", "team_of", "team_named"]


def team_of(settings: AwsSettings, plugin: str, task_execution_metadata: Any) -> tuple[str, AwsTeam]:
    """The key and entry of ``plugins.<plugin>.teams`` for the task's project/domain."""
    return choose(settings.teams, scope_of(task_execution_metadata), f"plugins.{plugin}.teams")


def team_named(settings: AwsSettings, plugin: str, key: str) -> AwsTeam:
    """The entry a running task was created with."""
    return lookup(settings.teams, key, f"plugins.{plugin}.teams")


def region_of(settings: AwsSettings, plugin: str, key: str, team: AwsTeam, asked: Any, who: str, field: str) -> str:
    """The region a task asked for (``field``), or the operator's default; within the team's regions."""
    if asked is None or asked == "":
        if not settings.default_region:
            raise InvalidRequestError(f"{who}: {field} is not set and plugins.{plugin}.default_region is empty")
        region = settings.default_region
    else:
        if not isinstance(asked, str):
            raise InvalidRequestError(f"{who}: {field} must be a region name")
        try:
            region = check_region(asked)
        except ValueError:
            raise InvalidRequestError(f"{who}: {field} {clip(asked, 40)!r} is not an AWS region name") from None
    if team.regions and region not in team.regions:
        raise InvalidRequestError(
            f"{who}: {field} {region} is not allowed for this task's project/domain "
            f"(plugins.{plugin}.teams.{key}.regions)"
        )
    return region


def client_key(settings: AwsSettings, team: AwsTeam, service: str, region: str) -> ClientKey:
    return ClientKey(
        service=service,
        region=region,
        endpoint_url=settings.endpoint_urls.get(service, ""),
        role_arn=team.role_arn,
        external_id=team.external_id or "",
        sts_endpoint_url=settings.endpoint_urls.get("sts", "") if team.role_arn else "",
    )
