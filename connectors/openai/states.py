"""OpenAI batch statuses as Flyte task phases.

validating, in_progress and finalizing are RUNNING; completed is SUCCEEDED; failed, expired,
cancelling and cancelled are FAILED with the batch's own error message (cancelling counts as
failed: the batch will not produce its output, and propeller need not wait for the cancel to
finish). A status this module does not know is RUNNING with a message naming it, so a new
OpenAI status never fails a batch that may be fine; it is logged once per status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connector_service import Phase, clip

__all__ = ["KNOWN_STATUSES", "batch_message", "phase_of"]

_log = logging.getLogger(__name__)

_PHASES: dict[str, int] = {
    "validating": Phase.RUNNING,
    "in_progress": Phase.RUNNING,
    "finalizing": Phase.RUNNING,
    "completed": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
    "expired": Phase.FAILED,
    "cancelling": Phase.FAILED,
    "cancelled": Phase.FAILED,
}
KNOWN_STATUSES = frozenset(_PHASES)


def phase_of(status: str, unknown_seen: set[str] | None = None) -> int:
    """The phase of a batch ``status``; an unknown one is RUNNING (logged once per ``unknown_seen``)."""
    phase = _PHASES.get(status)
    if phase is not None:
        return phase
    if unknown_seen is not None and status not in unknown_seen and len(unknown_seen) < 100:
        unknown_seen.add(status)
        _log.warning("OpenAI batch status %r is not known to this connector; reporting RUNNING", clip(status))
    return int(Phase.RUNNING)


def _counts(batch: Mapping[str, Any]) -> str:
    counts = batch.get("request_counts")
    if not isinstance(counts, Mapping):
        return ""
    done, total, failed = counts.get("completed", 0), counts.get("total", 0), counts.get("failed", 0)
    return f" ({done} of {total} requests completed, {failed} failed)"


def batch_message(batch: Mapping[str, Any], phase: int) -> str:
    """What the task's message says: OpenAI's error for a failed batch, else the status."""
    status = str(batch.get("status", ""))
    batch_id = clip(str(batch.get("id", "")))
    if phase == Phase.SUCCEEDED:
        return f"batch {batch_id} completed{_counts(batch)}"
    if phase != Phase.FAILED:
        if status not in _PHASES:
            return f"batch {batch_id} has status {clip(status)!r}, which this connector does not know; waiting"
        return f"batch {batch_id} is {status.replace('_', ' ')}{_counts(batch)}"
    errors = batch.get("errors")
    data = errors.get("data") if isinstance(errors, Mapping) else None
    messages = [
        str(e.get("message")) + (f" (line {e['line']})" if isinstance(e.get("line"), int) else "")
        for e in data or []
        if isinstance(e, Mapping) and e.get("message")
    ]
    if messages:
        more = f" (and {len(messages) - 1} more errors)" if len(messages) > 1 else ""
        return clip(f"batch {batch_id} {status}: {messages[0]}{more}")
    if status == "expired":
        return f"batch {batch_id} expired: not finished within its completion window{_counts(batch)}"
    if status in ("cancelling", "cancelled"):
        return f"batch {batch_id} was cancelled ({status}){_counts(batch)}"
    return f"batch {batch_id} {status}{_counts(batch)}"
