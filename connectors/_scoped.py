"""Per-team settings: which workspace, account or credential a task uses, chosen by its Flyte project and domain.

One service serves several teams, and each team's tasks must reach only that team's workspace
with that team's credential. The operator writes a table keyed by ``project/domain``,
``project`` or ``default`` (the most specific key wins); the task's project and domain come
from propeller's task execution id, never from the template, so a task cannot choose another
team's entry. The chosen key is stored in ``resource_meta`` (it is not a secret) so GetTask and
DeleteTask use the same entry; the entry itself is looked up again from the settings each time,
so a rotated secret or a removed team takes effect without touching running tasks' metas.

``execution_token`` gives the deterministic token that makes CreateTask idempotent where the
vendor takes one (a BigQuery job id, a Databricks ``idempotency_token``, an EMR ``clientToken``):
propeller retries a CreateTask that timed out with the same task execution id and attempt, so
the retry names the job the first call may already have started.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Annotated, Any, NamedTuple, TypeVar

from pydantic import AfterValidator

from connector_service import PreconditionError, clip

__all__ = ["DEFAULT", "Scope", "Scoped", "choose", "execution_token", "lookup", "scope_of"]

T = TypeVar("T")

DEFAULT = "default"
_PART = re.compile(r"^[A-Za-z0-9_.-]+$")


class Scope(NamedTuple):
    """A task's Flyte project and domain ("" when the caller sent no execution metadata)."""

    project: str
    domain: str

    def __str__(self) -> str:
        return f"{clip(self.project) or '-'}/{clip(self.domain) or '-'}"


def scope_of(task_execution_metadata: Any) -> Scope:
    """The project and domain of propeller's task execution id (Flyte 2 sends the same message)."""
    if task_execution_metadata is None:
        return Scope("", "")
    wf = task_execution_metadata.task_execution_id.node_execution_id.execution_id
    return Scope(wf.project, wf.domain)


def _check_keys(table: dict[str, T]) -> dict[str, T]:
    for key in table:
        parts = key.split("/")
        if key == DEFAULT:
            continue
        if len(parts) > 2 or not all(_PART.match(part) for part in parts):
            raise ValueError(f"{key!r} is not 'default', 'project' or 'project/domain'")
    return table


Scoped = Annotated[dict[str, T], AfterValidator(_check_keys)]
"""A settings table keyed by ``project/domain``, ``project`` or ``default``."""


def choose(table: Mapping[str, T], scope: Scope, setting: str) -> tuple[str, T]:
    """The most specific entry for ``scope`` and its key; FAILED_PRECONDITION when the operator gave none.

    ``setting`` is the settings path named in the message (e.g. ``plugins.databricks.instances``).
    """
    candidates = []
    if scope.project:
        if scope.domain:
            candidates.append(f"{scope.project}/{scope.domain}")
        candidates.append(scope.project)
    candidates.append(DEFAULT)
    for key in candidates:
        entry = table.get(key)
        if entry is not None:
            return key, entry
    raise PreconditionError(
        f"{setting} has no entry for project/domain {scope} and no {DEFAULT!r} entry: "
        "this service is not configured to run such tasks for that team"
    )


def lookup(table: Mapping[str, T], key: str, setting: str) -> T:
    """The entry a running task was created with (its key from ``resource_meta``)."""
    entry = table.get(key)
    if entry is None:
        raise PreconditionError(f"{setting}.{clip(key)} is no longer configured; it was when the task was created")
    return entry


def execution_token(task_execution_metadata: Any, *, prefix: str = "flyte", length: int = 64) -> str | None:
    """A stable token for one attempt of one task execution, or None when the caller sent no id.

    It is a hash (the ids may be long and hold characters vendors refuse), prefixed for whoever
    reads the vendor's console, and at most ``length`` characters of ``[A-Za-z0-9_-]``.
    """
    if task_execution_metadata is None:
        return None
    tid = task_execution_metadata.task_execution_id
    node = tid.node_execution_id
    wf = node.execution_id
    if not wf.name and not node.node_id:
        return None
    ident = "\x1f".join(
        [wf.project, wf.domain, wf.name, node.node_id, tid.task_id.name, tid.task_id.version, str(tid.retry_attempt)]
    )
    digest = hashlib.sha256(ident.encode()).hexdigest()
    head = f"{prefix}-" if prefix else ""
    return (head + digest)[: max(length, len(head) + 16)]
