"""Snowflake query statuses as Flyte task phases.

The status comes from the same endpoint the Python connector's ``get_query_status`` reads
(``GET /monitoring/queries/<query id>``), parsed here from the raw answer, because the
connector's own ``QueryStatus[...]`` lookup raises on a status it does not know, and flytekit's
``convert_to_flyte_phase`` raises on QUEUED, RESUMING_WAREHOUSE, BLOCKED and NO_DATA: both
would turn a healthy query into a GetTask error. Every status has a phase here:

- SUCCESS succeeds; FAILED_WITH_ERROR fails with Snowflake's message; ABORTED and ABORTING are
  ABORTED (someone cancelled it; ABORTING ends there); FAILED_WITH_INCIDENT (Snowflake's own
  fault) and DISCONNECTED (the session that ran it went away and the query was killed) fail
  *retryably*: running the query again is the fix.
- QUEUED waits for a warehouse slot: QUEUED. RESUMING_WAREHOUSE and QUEUED_REPARING_WAREHOUSE
  (Snowflake's spelling) wait for the warehouse itself: WAITING_FOR_RESOURCES.
- RUNNING, RESTARTED (Snowflake retries it itself) and BLOCKED (waiting for another
  transaction's lock: it has started, so the phase must not go back) are RUNNING.
- NO_DATA (no record of the query yet, or any more) is QUEUED while the query is young, then
  RETRYABLE_FAILED: a query Snowflake never heard of is safe to run again.
- Anything else is RUNNING with a message naming it, logged once per status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connector_service import Phase, clip

__all__ = ["KNOWN_STATUSES", "QueryState", "UnknownStatuses", "phase_of", "query_state"]

_log = logging.getLogger(__name__)

_PHASES: dict[str, int] = {
    "SUCCESS": Phase.SUCCEEDED,
    "FAILED_WITH_ERROR": Phase.FAILED,
    "ABORTED": Phase.ABORTED,
    "ABORTING": Phase.ABORTED,
    "FAILED_WITH_INCIDENT": Phase.RETRYABLE_FAILED,
    "DISCONNECTED": Phase.RETRYABLE_FAILED,
    "QUEUED": Phase.QUEUED,
    "RESUMING_WAREHOUSE": Phase.WAITING_FOR_RESOURCES,
    "QUEUED_REPARING_WAREHOUSE": Phase.WAITING_FOR_RESOURCES,
    "RUNNING": Phase.RUNNING,
    "RESTARTED": Phase.RUNNING,
    "BLOCKED": Phase.RUNNING,
    "NO_DATA": Phase.QUEUED,
}
KNOWN_STATUSES = frozenset(_PHASES)

_WHY = {
    "ABORTING": "is being aborted",
    "ABORTED": "was aborted",
    "FAILED_WITH_INCIDENT": "failed with a Snowflake incident; running it again",
    "DISCONNECTED": "was killed when its session disconnected; running it again",
    "QUEUED": "is queued for its warehouse",
    "RESUMING_WAREHOUSE": "waits for its warehouse to resume",
    "QUEUED_REPARING_WAREHOUSE": "waits for its warehouse to be repaired",
    "RUNNING": "is running",
    "RESTARTED": "was restarted by Snowflake",
    "BLOCKED": "is blocked by another transaction's lock",
    "SUCCESS": "succeeded",
}


class QueryState:
    """What one status answer says about a query: its status word and, on failure, Snowflake's error."""

    __slots__ = ("error_code", "error_message", "status")

    def __init__(self, status: str, error_code: str = "", error_message: str = "") -> None:
        self.status = status
        self.error_code = error_code
        self.error_message = error_message


def query_state(response: Mapping[str, Any]) -> QueryState:
    """The state in a ``/monitoring/queries/<id>`` answer; no ``queries`` entry is NO_DATA (as the client reads it)."""
    data = response.get("data") or {}
    queries = data.get("queries") if isinstance(data, Mapping) else None
    if not isinstance(queries, list):
        message = str(response.get("message") or "no query status in Snowflake's answer")
        return QueryState("FAILED_WITH_ERROR", str(response.get("code") or ""), message)
    if not queries or not isinstance(queries[0], Mapping):
        return QueryState("NO_DATA")
    query = queries[0]
    code = query.get("errorCode")
    return QueryState(
        status=str(query.get("status") or "NO_DATA").upper(),
        error_code="" if code in (None, "", 0, "0") else str(code),
        error_message=str(query.get("errorMessage") or ""),
    )


class UnknownStatuses:
    """The statuses this service has already warned about (a warning per status, not per poll)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def first_time(self, status: str) -> bool:
        if status in self._seen:
            return False
        self._seen.add(status)
        return True


def phase_of(
    state: QueryState, query_id: str, *, age: float | None, no_data_grace: float, unknown: UnknownStatuses
) -> tuple[int, str]:
    """The phase of a query in ``state`` and its message; ``age`` is seconds since submission (None: unknown)."""
    status, what = state.status, f"Snowflake query {query_id}"
    phase = _PHASES.get(status)
    if phase is None:
        if unknown.first_time(status):
            _log.warning("Snowflake query %s has status %r, which this connector does not know", query_id, status)
        return Phase.RUNNING, f"{what} has status {clip(status)}, which this connector does not know; still polling"
    if status == "NO_DATA":
        if age is not None and age > no_data_grace:
            return Phase.RETRYABLE_FAILED, (
                f"{what}: Snowflake has no record of it {age:.0f} s after it was submitted "
                f"(plugins.snowflake.no_data_grace is {no_data_grace:g} s); running it again"
            )
        return Phase.QUEUED, f"{what}: Snowflake has no data about it yet (NO_DATA)"
    if status == "FAILED_WITH_ERROR":
        code = f" ({state.error_code})" if state.error_code else ""
        return phase, f"{what} failed{code}: {clip(state.error_message or 'no message from Snowflake', 2000)}"
    message = f"{what} {_WHY[status]} ({status})"
    if state.error_message and phase in (Phase.ABORTED, Phase.RETRYABLE_FAILED):
        message += f": {clip(state.error_message, 2000)}"
    return phase, message
