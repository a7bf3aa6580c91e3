"""Every Databricks run state as a phase, fed with real ``runs/get`` answers.

minilake only ever shows PENDING, RUNNING and TERMINATED with SUCCESS/FAILED/CANCELED/TIMEDOUT,
and no ``status`` object; the other states (QUEUED, BLOCKED, WAITING_FOR_RETRY, SKIPPED,
INTERNAL_ERROR, the newer result states, the 2.2 ``status`` with its termination details) are
checked here on answers captured from minilake and the Jobs API 2.2 reference's example
(``tests/fixtures/databricks/runs_get_samples.json``), with the state words swapped.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest

from connector_service import Phase
from connectors.databricks.states import KNOWN_LIFE_CYCLE_STATES, KNOWN_RESULT_STATES, StateMapper
from tests.utils import FIXTURES

SAMPLES: dict[str, dict[str, Any]] = json.loads((FIXTURES / "databricks" / "runs_get_samples.json").read_text())[
    "samples"
]


def legacy(life: str, result: str | None = None, message: str = "") -> dict[str, Any]:
    """A captured minilake answer with its legacy state swapped."""
    run = copy.deepcopy(SAMPLES["minilake_failed"] if result else SAMPLES["minilake_running"])
    run["state"] = {"life_cycle_state": life, "result_state": result, "state_message": message}
    return run


def v22(state: str, code: str = "", kind: str = "", message: str = "") -> dict[str, Any]:
    """The reference answer with its ``status`` swapped (its legacy ``state`` says SUCCESS: ``status`` wins)."""
    run = copy.deepcopy(SAMPLES["api_2_2_reference_terminated"])
    run["status"] = {"state": state}
    if state == "TERMINATED":
        run["status"]["termination_details"] = {"code": code, "type": kind, "message": message}
    return run


@pytest.mark.parametrize(
    ("name", "phase"),
    [
        ("minilake_running", Phase.RUNNING),
        ("minilake_success", Phase.SUCCEEDED),
        ("minilake_failed", Phase.FAILED),
        ("minilake_canceled", Phase.FAILED),
        ("api_2_2_reference_terminated", Phase.SUCCEEDED),
    ],
)
def test_captured_answers(name: str, phase: int) -> None:
    assert StateMapper().phase_of(SAMPLES[name], "1")[0] == phase


def test_a_failure_carries_databricks_messages() -> None:
    phase, message = StateMapper().phase_of(SAMPLES["minilake_failed"], "3")
    assert phase == Phase.FAILED
    assert message == (
        "Databricks run 3 ended FAILED: One or more tasks failed; task flyte_task: Task exited with code 3"
    )


@pytest.mark.parametrize(
    ("life", "phase"),
    [
        ("QUEUED", Phase.QUEUED),
        ("BLOCKED", Phase.QUEUED),
        ("PENDING", Phase.INITIALIZING),
        ("RUNNING", Phase.RUNNING),
        ("TERMINATING", Phase.RUNNING),
        ("WAITING_FOR_RETRY", Phase.RUNNING),
        ("SKIPPED", Phase.FAILED),
        ("INTERNAL_ERROR", Phase.RETRYABLE_FAILED),
    ],
)
def test_life_cycle_states(life: str, phase: int) -> None:
    got, message = StateMapper().phase_of(legacy(life, message="Waiting for cluster"), "7")
    assert got == phase
    assert message.startswith("Databricks run 7")


@pytest.mark.parametrize(
    ("result", "phase"),
    [
        ("SUCCESS", Phase.SUCCEEDED),
        ("SUCCESS_WITH_FAILURES", Phase.SUCCEEDED),
        ("FAILED", Phase.FAILED),
        ("TIMEDOUT", Phase.FAILED),
        ("CANCELED", Phase.FAILED),
        ("UPSTREAM_CANCELED", Phase.FAILED),
        ("UPSTREAM_FAILED", Phase.FAILED),
        ("EXCLUDED", Phase.FAILED),
        ("DISABLED", Phase.FAILED),
        ("MAXIMUM_CONCURRENT_RUNS_REACHED", Phase.RETRYABLE_FAILED),
    ],
)
def test_result_states(result: str, phase: int) -> None:
    got, message = StateMapper().phase_of(legacy("TERMINATED", result, "the run's own words"), "8")
    assert got == phase
    if phase != Phase.SUCCEEDED:
        assert result in message and "the run's own words" in message


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        (v22("QUEUED"), Phase.QUEUED),
        (v22("BLOCKED"), Phase.QUEUED),
        (v22("PENDING"), Phase.INITIALIZING),
        (v22("RUNNING"), Phase.RUNNING),
        (v22("TERMINATING"), Phase.RUNNING),
        (v22("WAITING"), Phase.RUNNING),
        (v22("TERMINATED", "SUCCESS", "SUCCESS"), Phase.SUCCEEDED),
        (v22("TERMINATED", "RUN_EXECUTION_ERROR", "CLIENT_ERROR", "Task failed with error"), Phase.FAILED),
        (v22("TERMINATED", "USER_CANCELED", "SUCCESS"), Phase.FAILED),
        (v22("TERMINATED", "CLOUD_FAILURE", "CLOUD_FAILURE"), Phase.RETRYABLE_FAILED),
        (v22("TERMINATED", "MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR"), Phase.RETRYABLE_FAILED),
        (v22("TERMINATED", "A_CODE_FROM_THE_FUTURE", "CLIENT_ERROR", "new words"), Phase.FAILED),
        (v22("TERMINATED", "A_CODE_FROM_THE_FUTURE", "INTERNAL_ERROR"), Phase.RETRYABLE_FAILED),
    ],
)
def test_the_2_2_status_object_wins_over_the_legacy_state(status: dict[str, Any], phase: int) -> None:
    assert StateMapper().phase_of(status, "9")[0] == phase


def test_a_failed_status_names_its_termination_message() -> None:
    run = v22("TERMINATED", "RUN_EXECUTION_ERROR", "CLIENT_ERROR", "Workload failed, see run output for details")
    phase, message = StateMapper().phase_of(run, "9")
    assert phase == Phase.FAILED
    assert "RUN_EXECUTION_ERROR" in message and "Workload failed" in message


def test_an_unknown_status_falls_back_to_the_legacy_state() -> None:
    run = v22("SOMETHING_NEW")  # the reference's legacy state says TERMINATED/SUCCESS
    assert StateMapper().phase_of(run, "9")[0] == Phase.SUCCEEDED


def test_an_unknown_state_is_running_naming_it_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    mapper = StateMapper()
    caplog.set_level(logging.WARNING, logger="connectors.databricks.states")
    for _ in range(3):
        phase, message = mapper.phase_of(legacy("HIBERNATING"), "10")
        assert phase == Phase.RUNNING and "HIBERNATING" in message
    unknown_result = mapper.phase_of(legacy("TERMINATED", "PARTIALLY_DONE"), "10")
    assert unknown_result[0] == Phase.RUNNING and "PARTIALLY_DONE" in unknown_result[1]
    assert mapper.phase_of({}, "10")[0] == Phase.RUNNING  # no state at all
    warnings = [r.getMessage() for r in caplog.records]
    assert len([w for w in warnings if "HIBERNATING" in w]) == 1
    assert len(warnings) == 3


def test_every_documented_word_is_known() -> None:
    documented_life = {"QUEUED", "PENDING", "RUNNING", "TERMINATING", "TERMINATED", "SKIPPED", "INTERNAL_ERROR"}
    documented_life |= {"BLOCKED", "WAITING_FOR_RETRY"}
    documented_result = {"SUCCESS", "FAILED", "TIMEDOUT", "CANCELED", "SUCCESS_WITH_FAILURES"}
    documented_result |= {"MAXIMUM_CONCURRENT_RUNS_REACHED", "UPSTREAM_CANCELED", "UPSTREAM_FAILED", "EXCLUDED"}
    documented_result |= {"DISABLED"}
    assert documented_life <= KNOWN_LIFE_CYCLE_STATES
    assert documented_result <= KNOWN_RESULT_STATES
