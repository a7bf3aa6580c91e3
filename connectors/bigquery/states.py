"""BigQuery job states (a ``jobs.get`` / ``jobs.insert`` answer) as Flyte task phases.

A job is PENDING, RUNNING or DONE; DONE with ``status.errorResult`` is a failure, with
BigQuery's reason and message. flytekit's connector crashes on that branch (bad SQL becomes a
GetTask error that propeller retries until it gives up); here it is FAILED with the message.
A failure BigQuery itself says is worth retrying (``backendError``, ``internalError``,
``rateLimitExceeded``...) is RETRYABLE_FAILED; a cancelled job (reason ``stopped``) is ABORTED.
Any other state word is RUNNING with a message naming it, logged once per word (not once per poll).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connector_service import Phase, clip

__all__ = ["RETRYABLE_REASONS", "StateMapper", "error_text"]

_log = logging.getLogger(__name__)

RETRYABLE_REASONS = frozenset(
    {"backendError", "internalError", "rateLimitExceeded", "jobBackendError", "jobInternalError", "timeout"}
)
_STATES = {
    "PENDING": (Phase.QUEUED, "is pending"),
    "RUNNING": (Phase.RUNNING, "is running"),
}


def error_text(error: Mapping[str, Any]) -> str:
    """``reason: message`` of one BigQuery error object."""
    reason = error.get("reason") if isinstance(error.get("reason"), str) else ""
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    return clip(f"{reason}: {message}" if reason else message or "no message from BigQuery", 2000)


class StateMapper:
    """Maps job answers to phases; remembers the unknown state words it has warned about."""

    def __init__(self) -> None:
        self._unknown_seen: set[str] = set()

    def phase_of(self, job: Mapping[str, Any], job_id: str) -> tuple[int, str]:
        name = f"BigQuery job {job_id}"
        status = job.get("status")
        status = status if isinstance(status, Mapping) else {}
        state = status.get("state") if isinstance(status.get("state"), str) else ""
        error = status.get("errorResult")
        if state == "DONE":
            if isinstance(error, Mapping):
                text = error_text(error)
                others = [e for e in status.get("errors") or [] if isinstance(e, Mapping) and e != error]
                if others:
                    text += "; " + "; ".join(error_text(e) for e in others[:3])
                if error.get("reason") == "stopped":  # someone cancelled it (jobs.cancel, the console)
                    return Phase.ABORTED, f"{name} was cancelled: {text}"
                if error.get("reason") in RETRYABLE_REASONS:
                    return Phase.RETRYABLE_FAILED, f"{name} failed: {text}; retrying"
                return Phase.FAILED, f"{name} failed: {text}"
            return Phase.SUCCEEDED, f"{name} is done"
        if state in _STATES:
            phase, what = _STATES[state]
            return phase, f"{name} {what}"
        shown = clip(state or "none", 80)
        if shown not in self._unknown_seen:
            self._unknown_seen.add(shown)
            _log.warning("%s is in state %s, which this connector does not know; treating it as running", name, shown)
        return Phase.RUNNING, f"{name} is in state {shown}, which this connector does not know; still polling"
