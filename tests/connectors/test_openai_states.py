"""OpenAI batch statuses as phases, fed with OpenAI's documented batch object.

``tests/fixtures/openai/batch_result_dict.json`` is the batch object of OpenAI's API reference;
each case swaps in a status (and the fields OpenAI sets with it), including the ones aimock
never shows (``finalizing``) and one OpenAI might add, which must never fail a batch.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from connector_service import Phase
from connectors.openai.states import KNOWN_STATUSES, batch_message, phase_of
from tests.utils import FIXTURES

DOCUMENTED = json.loads((FIXTURES / "openai" / "batch_result_dict.json").read_text())


def batch(status: str, **fields: Any) -> dict[str, Any]:
    return {**DOCUMENTED, "status": status, **fields}


# The error list OpenAI returns for a batch that failed validation (API reference, "errors").
INVALID = {
    "object": "list",
    "data": [
        {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "param": None, "line": 3},
        {"code": "invalid_request", "message": "The model gpt-x does not exist.", "param": "body.model", "line": 7},
    ],
}


@pytest.mark.parametrize(
    ("status", "fields", "phase", "message"),
    [
        ("validating", {"request_counts": {"total": 0, "completed": 0, "failed": 0}}, Phase.RUNNING, "is validating"),
        ("in_progress", {}, Phase.RUNNING, "is in progress (95 of 100 requests completed, 5 failed)"),
        ("finalizing", {}, Phase.RUNNING, "is finalizing"),
        ("completed", {}, Phase.SUCCEEDED, "batch_abc123 completed (95 of 100 requests completed, 5 failed)"),
        (
            "failed",
            {"errors": INVALID},
            Phase.FAILED,
            "batch_abc123 failed: This line is not parseable as valid JSON. (line 3) (and 1 more errors)",
        ),
        ("failed", {"errors": None}, Phase.FAILED, "batch_abc123 failed (95 of 100"),
        ("expired", {"expired_at": 1711557933}, Phase.FAILED, "expired: not finished within its completion window"),
        ("cancelling", {"cancelling_at": 1711471600}, Phase.FAILED, "was cancelled (cancelling)"),
        ("cancelled", {"cancelled_at": 1711471700}, Phase.FAILED, "was cancelled (cancelled)"),
    ],
)
def test_every_documented_status_maps(status: str, fields: dict[str, Any], phase: int, message: str) -> None:
    assert phase_of(status) == phase
    assert message in batch_message(batch(status, **fields), phase)


def test_the_documented_statuses_are_all_known() -> None:
    assert KNOWN_STATUSES == {
        "validating",
        "in_progress",
        "finalizing",
        "completed",
        "failed",
        "expired",
        "cancelling",
        "cancelled",
    }


def test_an_unknown_status_is_running_with_a_message_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    seen: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="connectors.openai.states"):
        phases = [phase_of("paused", seen) for _ in range(3)]
    assert phases == [Phase.RUNNING] * 3
    assert len([r for r in caplog.records if "paused" in r.getMessage()]) == 1
    assert "status 'paused', which this connector does not know" in batch_message(batch("paused"), Phase.RUNNING)


def test_a_failed_batch_message_is_bounded() -> None:
    huge = {"object": "list", "data": [{"code": "x", "message": "y" * 100_000, "line": None}]}
    assert len(batch_message(batch("failed", errors=huge), Phase.FAILED)) < 5_000
