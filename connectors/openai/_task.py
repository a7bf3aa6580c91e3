"""What both OpenAI connectors read from a task: its organization, its team's key, JSON values.

A template's ``custom`` is a protobuf Struct, which stores every number as a double: the
``max_tokens=64`` a user wrote arrives as ``64.0``, which OpenAI refuses for integer
parameters (flytekit's plugin sends it as is). ``integral_numbers`` turns integral doubles back into
integers before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from connector_service import InvalidRequestError, clip
from connectors._literal_values import dict_literal, integral_numbers
from connectors._scoped import Scope, choose, lookup
from connectors.openai._api import Credentials, credentials_for
from connectors.openai.settings import OpenAISettings

__all__ = ["KEY", "dict_literal", "integral_numbers", "organization_of", "team_credentials", "team_of"]

KEY = "openai"
_ORGANIZATION = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def organization_of(custom: Mapping[str, Any], who: str) -> str:
    """``custom.openai_organization`` ("" when the task names none, as flytekit allows)."""
    org = custom.get("openai_organization")
    if org is None or org == "":
        return ""
    if not isinstance(org, str) or not _ORGANIZATION.match(org):
        shown = clip(org) if isinstance(org, str) else type(org).__name__
        raise InvalidRequestError(f"{who}: custom.openai_organization {shown!r} is not an OpenAI organization id")
    return org


def team_of(settings: OpenAISettings, scope: Scope) -> str:
    """The ``plugins.openai.teams`` key for a task's project/domain (FAILED_PRECONDITION if none)."""
    key, _ = choose(settings.teams, scope, f"plugins.{KEY}.teams")
    return key


def team_credentials(settings: OpenAISettings, team: str, organization: str) -> Credentials:
    """The key of ``team`` (a key of ``plugins.openai.teams``) for ``organization``."""
    account = lookup(settings.teams, team, f"plugins.{KEY}.teams")
    return credentials_for(account, organization, team)
