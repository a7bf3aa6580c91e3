"""Slurm job states as Flyte task phases.

Every state ``scontrol`` can print has a decision here, because a state this connector does not
know must still give propeller a phase (never a gRPC error, which propeller would count as a
failed poll and eventually give up on a job that may be fine).

Rules, in order:
- Terminal states end the task: COMPLETED succeeds; FAILED, CANCELLED, TIMEOUT, DEADLINE and
  OUT_OF_MEMORY fail for good (running it again would end the same way); NODE_FAIL, BOOT_FAIL,
  PREEMPTED and RECONFIG_FAIL fail *retryably* (the node, not the task, was at fault).
- Waiting states (PENDING, REQUEUED, the holds) are QUEUED, or WAITING_FOR_RESOURCES when the
  Reason says the job waits for nodes, licences or a limit; a reason that can never clear
  (DependencyNeverSatisfied, BadConstraints, InvalidAccount, InvalidQOS, PartitionConfig)
  fails the task, after
  which propeller's DeleteTask cancels the job.
- A job that was requeued after it had started (``Restarts`` > 0) reports RUNNING while it
  waits again: propeller has already seen it run, and phases should not go backwards.
- CONFIGURING and POWER_UP_NODE (nodes booting) are INITIALIZING; RUNNING, COMPLETING,
  SUSPENDED, STOPPED, SIGNALING, RESIZING, STAGE_OUT are RUNNING.
- Anything else is RUNNING if the job has started, else QUEUED, with a message naming it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from connector_service import Phase

__all__ = ["JobStatus", "job_status", "phase_of", "KNOWN_STATES"]

_log = logging.getLogger(__name__)

_SHORT = {
    "PD": "PENDING",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "CD": "COMPLETED",
    "F": "FAILED",
    "CA": "CANCELLED",
    "TO": "TIMEOUT",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "PR": "PREEMPTED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "RQ": "REQUEUED",
    "RH": "REQUEUE_HOLD",
    "RF": "REQUEUE_FED",
    "RS": "RESIZING",
    "RV": "REVOKED",
    "SI": "SIGNALING",
    "SE": "SPECIAL_EXIT",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
    "S": "SUSPENDED",
    "CF": "CONFIGURING",
    "RD": "RESV_DEL_HOLD",
}

_SUCCEEDED = {"COMPLETED"}
_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "DEADLINE", "OUT_OF_MEMORY"}
_RETRYABLE = {"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "RECONFIG_FAIL", "LAUNCH_FAILED"}
_WAITING = {"PENDING", "REQUEUED", "REQUEUE_FED"}
_HELD = {
    "REQUEUE_HOLD": "it was requeued and is held (`scontrol release {job}` lets it run again)",
    "SPECIAL_EXIT": "it exited with a special exit code and is held (`scontrol release {job}` lets it run again)",
    "RESV_DEL_HOLD": "its reservation was deleted and it is held (`scontrol release {job}` lets it run)",
}
_STARTING = {"CONFIGURING", "POWER_UP_NODE"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING", "STAGE_OUT"}
# In progress, but not in a way the task's phase can express (federation bookkeeping).
_IN_PROGRESS = {"REVOKED", "UPDATE_DB"}

KNOWN_STATES = frozenset(
    _SUCCEEDED | _FAILED | _RETRYABLE | _WAITING | set(_HELD) | _STARTING | _RUNNING | _IN_PROGRESS
)

_RESOURCE_REASONS = {
    "Resources",
    "Licenses",
    "NodeDown",
    "PartitionDown",
    "PartitionInactive",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BurstBufferResources",
    "BurstBufferStageIn",
    "PowerUpNode",
    "Reservation",
}
# Reasons that no amount of waiting clears (PartitionConfig: the job asks for more than the partition has).
_NEVER_REASONS = {"DependencyNeverSatisfied", "BadConstraints", "InvalidAccount", "InvalidQOS", "PartitionConfig"}


@dataclass(frozen=True)
class JobStatus:
    """What the connector needs from one ``scontrol -o show job`` line."""

    job_id: str
    state: str
    """The base state word, upper case (``CANCELLED by 0`` and ``CA`` both become ``CANCELLED``)."""
    reason: str
    exit_code: int | None
    signal: int | None
    restarts: int
    started: bool

    def describe(self) -> str:
        """``Slurm job 12 FAILED (reason NonZeroExitCode), exit code 3``."""
        text = f"Slurm job {self.job_id} {self.state}"
        if self.reason and self.reason not in ("None", "(null)"):
            text += f" (reason {self.reason})"
        if self.exit_code is not None and (self.exit_code or self.state not in _SUCCEEDED):
            text += f", exit code {self.exit_code}"
        if self.signal:
            text += f", signal {self.signal}"
        return text


def normalize_state(text: str) -> str:
    """``CANCELLED by 0``, ``COMPLETED+``, ``cd`` -> the base state word."""
    words = text.strip().split()
    word = words[0].rstrip("+*").upper() if words else ""
    return _SHORT.get(word, word)


def job_status(fields: Mapping[str, str]) -> JobStatus:
    """The status of a job from its parsed ``scontrol`` fields."""
    exit_code: int | None = None
    signal: int | None = None
    match = re.fullmatch(r"(\d+):(\d+)", fields.get("ExitCode", ""))
    if match:
        exit_code, signal = int(match.group(1)), int(match.group(2))
    restarts = fields.get("Restarts", "0")
    start = fields.get("StartTime", "")
    return JobStatus(
        job_id=fields.get("JobId", "?"),
        state=normalize_state(fields.get("JobState", "")) or "UNKNOWN",
        reason=fields.get("Reason", ""),
        exit_code=exit_code,
        signal=signal,
        restarts=int(restarts) if restarts.isdigit() else 0,
        started=bool(start) and start not in ("Unknown", "None", "N/A"),
    )


def _waits_for_resources(reason: str) -> bool:
    return (
        reason in _RESOURCE_REASONS
        or reason.startswith(("ReqNodeNotAvail", "Nodes_required", "QOSGrp", "QOSMax", "AssocGrp", "AssocMax"))
        or reason.endswith("Limit")
    )


def phase_of(status: JobStatus) -> tuple[int, str]:
    """The task phase for a job status, and the message that goes with it."""
    state, job = status.state, status.job_id
    if state in _SUCCEEDED:
        return Phase.SUCCEEDED, status.describe()
    if state in _FAILED:
        return Phase.FAILED, status.describe()
    if state in _RETRYABLE:
        return Phase.RETRYABLE_FAILED, status.describe() + "; the node, not the task, failed: retrying"
    waiting = state in _WAITING or state in _HELD
    if waiting and status.restarts > 0:
        return Phase.RUNNING, f"Slurm job {job} was requeued (restart {status.restarts}) and is {state} again"
    if state in _HELD:
        return Phase.QUEUED, f"Slurm job {job} is {state}: " + _HELD[state].format(job=job)
    if state in _WAITING:
        if status.reason in _NEVER_REASONS:
            return Phase.FAILED, status.describe() + ": it can never start"
        reason = f" ({status.reason})" if status.reason and status.reason != "None" else ""
        if _waits_for_resources(status.reason):
            return Phase.WAITING_FOR_RESOURCES, f"Slurm job {job} is {state}{reason}"
        return Phase.QUEUED, f"Slurm job {job} is {state}{reason}"
    if state in _STARTING:
        return Phase.INITIALIZING, f"Slurm job {job} is {state}: its nodes are being prepared"
    if state in _RUNNING:
        return Phase.RUNNING, f"Slurm job {job} is {state}"
    if state in _IN_PROGRESS:
        phase = Phase.RUNNING if status.started else Phase.QUEUED
        return phase, f"Slurm job {job} is {state}"
    _log.warning("Slurm job %s is in state %r, which this connector does not know", job, state)
    phase = Phase.RUNNING if status.started else Phase.QUEUED
    return phase, f"Slurm job {job} is in state {state}, which this connector does not know; still polling"
