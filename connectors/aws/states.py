"""SageMaker endpoint statuses and EMR Serverless job run states as Flyte task phases.

Every status either API documents has a decision here (flytekit's SageMaker connector knows
three and raises ``KeyError`` on the others, which propeller counts as failed polls until it
gives up on a healthy endpoint). A word neither knows (one AWS adds later) is RUNNING with a
message naming it, logged once per word by ``StateMapper``, never a failure.

SageMaker (``DescribeEndpoint.EndpointStatus``): Creating, Updating, SystemUpdating,
RollingBack and Deleting are RUNNING; InService SUCCEEDED; Failed, UpdateRollbackFailed and
OutOfService FAILED with ``FailureReason``.

EMR Serverless (``GetJobRun.jobRun.state``): SUBMITTED, PENDING, SCHEDULED and QUEUED are
QUEUED/INITIALIZING; RUNNING and CANCELLING RUNNING; SUCCESS SUCCEEDED; FAILED and CANCELLED
FAILED with ``stateDetails``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connector_service import Phase, clip

__all__ = ["EMR_STATES", "SAGEMAKER_STATUSES", "StateMapper"]

_log = logging.getLogger(__name__)

SAGEMAKER_STATUSES: dict[str, tuple[int, str]] = {
    "Creating": (Phase.RUNNING, "is being created"),
    "Updating": (Phase.RUNNING, "is being updated"),
    "SystemUpdating": (Phase.RUNNING, "is being updated by SageMaker"),
    "RollingBack": (Phase.RUNNING, "is rolling back an update"),
    "Deleting": (Phase.RUNNING, "is being deleted"),
    "InService": (Phase.SUCCEEDED, "is in service"),
    "Failed": (Phase.FAILED, "failed"),
    "UpdateRollbackFailed": (Phase.FAILED, "failed to roll back an update"),
    "OutOfService": (Phase.FAILED, "is out of service"),
}

EMR_STATES: dict[str, tuple[int, str]] = {
    "SUBMITTED": (Phase.QUEUED, "was submitted"),
    "PENDING": (Phase.QUEUED, "is pending"),
    "QUEUED": (Phase.QUEUED, "is queued (the application is at its capacity)"),
    "SCHEDULED": (Phase.INITIALIZING, "is scheduled (its workers are starting)"),
    "RUNNING": (Phase.RUNNING, "is running"),
    "CANCELLING": (Phase.RUNNING, "is being cancelled"),
    "SUCCESS": (Phase.SUCCEEDED, "succeeded"),
    "FAILED": (Phase.FAILED, "failed"),
    "CANCELLED": (Phase.FAILED, "was cancelled"),
}


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


class StateMapper:
    """Maps answers to phases and logs each unknown word once (one per connector)."""

    def __init__(self) -> None:
        self._unknown_seen: set[str] = set()

    def _unknown(self, word: str, name: str) -> tuple[int, str]:
        if word not in self._unknown_seen:
            self._unknown_seen.add(word)
            _log.warning("%s is in state %s, which this connector does not know; treating it as running", name, word)
        return Phase.RUNNING, f"{name} is in state {clip(word, 80)}, which this connector does not know; still polling"

    def endpoint(self, answer: Mapping[str, Any], name: str) -> tuple[int, str]:
        """The phase of a ``DescribeEndpoint`` answer."""
        status = _text(answer.get("EndpointStatus"))
        label = f"SageMaker endpoint {clip(name, 80)}"
        if status not in SAGEMAKER_STATUSES:
            return self._unknown(status or "none", label)
        phase, text = SAGEMAKER_STATUSES[status]
        reason = _text(answer.get("FailureReason"))
        message = f"{label} {text}"
        if reason and phase != Phase.SUCCEEDED:
            message += f": {clip(reason, 600)}"
        return phase, message

    def job_run(self, job: Mapping[str, Any], name: str) -> tuple[int, str]:
        """The phase of a ``GetJobRun`` answer's ``jobRun``."""
        state = _text(job.get("state"))
        label = f"EMR Serverless job run {clip(name, 120)}"
        if state not in EMR_STATES:
            return self._unknown(state or "none", label)
        phase, text = EMR_STATES[state]
        details = _text(job.get("stateDetails"))
        message = f"{label} {text}"
        if details:
            message += f": {clip(details, 600)}"
        return phase, message
