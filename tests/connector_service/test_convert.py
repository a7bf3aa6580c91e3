"""GetTask's answer for what a connector returned."""

from __future__ import annotations

import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2

from connector_service import Phase, Resource
from connector_service._convert import ConnectorContractError, get_task_response


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.SUCCEEDED, Phase.QUEUED, Phase.RETRYABLE_FAILED])
def test_a_bare_phase_is_answered_with_just_that_phase(phase: int) -> None:
    first = get_task_response(Resource(phase=phase), None, connector="c")
    assert first == agent_pb2.GetTaskResponse(resource=agent_pb2.Resource(phase=phase))
    # A second poll, after an unrelated answer, gets the same untouched answer.
    get_task_response(Resource(phase=Phase.FAILED, message="no"), None, connector="c")
    assert get_task_response(Resource(phase=phase), None, connector="c") == first


def test_anything_beyond_the_phase_is_converted() -> None:
    link = execution_pb2.TaskLog(uri="http://log", name="log")
    response = get_task_response(
        Resource(phase=Phase.RUNNING, message="step 2", log_links=[link], custom_info={"n": 1}), None, connector="c"
    )
    assert response.resource.message == "step 2"
    assert list(response.resource.log_links) == [link]
    assert response.resource.custom_info["n"] == 1
    assert get_task_response(Resource(phase=Phase.RUNNING), None, connector="c").resource.message == ""


@pytest.mark.parametrize("phase", [0, 99, "RUNNING", None])
def test_a_phase_propeller_cannot_read_is_refused(phase: object) -> None:
    with pytest.raises(ConnectorContractError, match="phase"):
        get_task_response(Resource(phase=phase), None, connector="c")  # type: ignore[arg-type]
