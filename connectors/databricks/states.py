"""Databricks run states (a ``runs/get`` answer) as Flyte task phases.

A run reports its state twice: the legacy ``state`` (``life_cycle_state`` + ``result_state``)
and, since Jobs API 2.2, ``status`` (``state`` + ``termination_details`` with a ``code`` and a
``type``). ``status`` is read first when it is there and this module knows its words; else
``state``. Every word has a decision here, because a state nobody mapped must still give
propeller a phase (flytekit raises on QUEUED, BLOCKED, WAITING_FOR_RETRY and the newer result
states, which propeller counts as failed polls until it gives up on a healthy run):

- waiting (QUEUED, BLOCKED) is QUEUED; PENDING (the cluster starts) is INITIALIZING; RUNNING,
  TERMINATING and waiting for a retry (WAITING_FOR_RETRY, WAITING) are RUNNING;
- SUCCESS and SUCCESS_WITH_FAILURES succeed;
- Databricks' own faults (INTERNAL_ERROR, a CLOUD_FAILURE, a run or queue limit reached) fail
  *retryably*; the task's own (FAILED, TIMEDOUT, CANCELED, UPSTREAM_*, EXCLUDED, SKIPPED,
  a CLIENT_ERROR) fail for good, with Databricks' message;
- any other word is RUNNING with a message naming it (logged once per word by ``StateMapper``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connector_service import Phase, clip

__all__ = ["KNOWN_LIFE_CYCLE_STATES", "KNOWN_RESULT_STATES", "StateMapper", "describe_failure"]

_log = logging.getLogger(__name__)

_LIFE_CYCLE = {
    "QUEUED": (Phase.QUEUED, "is queued"),
    "BLOCKED": (Phase.QUEUED, "is blocked (waiting for an upstream run or a concurrency slot)"),
    "PENDING": (Phase.INITIALIZING, "is pending (its cluster is starting)"),
    "RUNNING": (Phase.RUNNING, "is running"),
    "TERMINATING": (Phase.RUNNING, "is terminating"),
    "WAITING_FOR_RETRY": (Phase.RUNNING, "is waiting for a retry"),
    "WAITING": (Phase.RUNNING, "is waiting for a retry"),
}
_SUCCEEDED = {"SUCCESS", "SUCCESS_WITH_FAILURES"}
_RETRYABLE = {
    "MAXIMUM_CONCURRENT_RUNS_REACHED",
    "MAX_CONCURRENT_RUNS_EXCEEDED",
    "WORKSPACE_RUN_LIMIT_EXCEEDED",
    "MAX_JOB_QUEUE_SIZE_EXCEEDED",
    "CLUSTER_REQUEST_LIMIT_EXCEEDED",
    "MAX_SPARK_CONTEXTS_EXCEEDED",
    "INTERNAL_ERROR",
    "CLOUD_FAILURE",
}
_FAILED = {
    "FAILED",
    "TIMEDOUT",
    "TIMEOUT",
    "CANCELED",
    "CANCELLED",
    "USER_CANCELED",
    "UPSTREAM_CANCELED",
    "UPSTREAM_FAILED",
    "EXCLUDED",
    "SKIPPED",
    "DISABLED",
    # status.termination_details.code values that are the task's (or its configuration's) doing
    "DRIVER_ERROR",
    "CLUSTER_ERROR",
    "REPOSITORY_CHECKOUT_FAILED",
    "INVALID_CLUSTER_REQUEST",
    "FEATURE_DISABLED",
    "STORAGE_ACCESS_ERROR",
    "RUN_EXECUTION_ERROR",
    "UNAUTHORIZED_ERROR",
    "LIBRARY_INSTALLATION_ERROR",
    "RESOURCE_NOT_FOUND",
    "INVALID_RUN_CONFIGURATION",
    "BUDGET_POLICY_LIMIT_EXCEEDED",
    "BREAKING_CHANGE",
    "CLIENT_ERROR",
}
_TERMINATION_TYPES = {"SUCCESS": Phase.SUCCEEDED, "INTERNAL_ERROR": Phase.RETRYABLE_FAILED}
_TERMINATION_TYPES.update({"CLOUD_FAILURE": Phase.RETRYABLE_FAILED, "CLIENT_ERROR": Phase.FAILED})

KNOWN_LIFE_CYCLE_STATES = frozenset({*_LIFE_CYCLE, "TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
KNOWN_RESULT_STATES = frozenset(_SUCCEEDED | _RETRYABLE | _FAILED)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def describe_failure(run: Mapping[str, Any]) -> str:
    """What Databricks says went wrong: the run's message, its termination details, each task's message."""
    parts: list[str] = []
    state, status = _map(run.get("state")), _map(run.get("status"))
    details = _map(status.get("termination_details"))
    for text in (_text(state.get("state_message")), _text(details.get("message"))):
        if text and text not in parts:
            parts.append(text)
    tasks = run.get("tasks")
    for task in tasks[:5] if isinstance(tasks, list) else []:
        if not isinstance(task, Mapping):
            continue
        task_state = _map(task.get("state"))
        text = _text(task_state.get("state_message"))
        if text and text not in parts:
            parts.append(f"task {clip(task.get('task_key', '?'), 60)}: {text}")
    return "; ".join(parts)


class StateMapper:
    """Maps ``runs/get`` answers to phases, and logs each unknown state word once (not once per poll).

    One per connector: the words seen are the only state it keeps.
    """

    def __init__(self) -> None:
        self._unknown_seen: set[str] = set()

    def phase_of(self, run: Mapping[str, Any], run_id: str) -> tuple[int, str]:
        """The phase of a run and the message that goes with it."""
        name = f"Databricks run {run_id}"
        decided = self._from_status(run, name)
        if decided is None:
            decided = self._from_state(run, name)
        if decided is not None:
            return decided
        status, state = _map(run.get("status")), _map(run.get("state"))
        words = [_text(status.get("state")), _text(state.get("life_cycle_state")), _text(state.get("result_state"))]
        shown = "/".join(w for w in words if w) or "none"
        return self._unknown(shown, name)

    def _unknown(self, word: str, name: str) -> tuple[int, str]:
        if word not in self._unknown_seen:
            self._unknown_seen.add(word)
            _log.warning("%s is in state %s, which this connector does not know; treating it as running", name, word)
        return Phase.RUNNING, f"{name} is in state {clip(word, 80)}, which this connector does not know; still polling"

    def _terminal(self, word: str, run: Mapping[str, Any], name: str) -> tuple[int, str] | None:
        if word in _SUCCEEDED:
            suffix = " (some of its tasks failed)" if word == "SUCCESS_WITH_FAILURES" else ""
            return Phase.SUCCEEDED, f"{name} succeeded{suffix}"
        if word in _RETRYABLE:
            why = describe_failure(run)
            return Phase.RETRYABLE_FAILED, f"{name} ended {word}" + (f": {why}" if why else "") + "; retrying"
        if word in _FAILED:
            why = describe_failure(run)
            return Phase.FAILED, f"{name} ended {word}" + (f": {why}" if why else "")
        return None

    def _from_status(self, run: Mapping[str, Any], name: str) -> tuple[int, str] | None:
        status = run.get("status")
        if not isinstance(status, Mapping):
            return None
        state = _text(status.get("state"))
        if state in _LIFE_CYCLE:
            phase, text = _LIFE_CYCLE[state]
            reason = _text(_map(status.get("queue_details")).get("message"))
            return phase, f"{name} {text}" + (f": {reason}" if reason else "")
        if state != "TERMINATED":
            return None  # an unknown word: let the legacy state decide, if it can
        details = _map(status.get("termination_details"))
        code, kind = _text(details.get("code")), _text(details.get("type"))
        decided = self._terminal(code, run, name)
        if decided is None and kind in _TERMINATION_TYPES:
            phase = _TERMINATION_TYPES[kind]
            if phase == Phase.SUCCEEDED:
                return phase, f"{name} succeeded"
            why = describe_failure(run)
            return phase, f"{name} ended {code or kind}" + (f": {why}" if why else "")
        return decided

    def _from_state(self, run: Mapping[str, Any], name: str) -> tuple[int, str] | None:
        state = run.get("state")
        if not isinstance(state, Mapping):
            return None
        life = _text(state.get("life_cycle_state"))
        if life in _LIFE_CYCLE:
            phase, text = _LIFE_CYCLE[life]
            message = _text(state.get("state_message"))
            return phase, f"{name} {text}" + (f": {message}" if message else "")
        if life in ("SKIPPED", "INTERNAL_ERROR"):
            return self._terminal(life, run, name)
        if life == "TERMINATED":
            return self._terminal(_text(state.get("result_state")), run, name)
        return None
