"""Unit tests of what the Snowflake emulator cannot show: every query status, log links, binding, errors.

Status answers are ``GET /monitoring/queries/<id>`` bodies: SUCCESS and NO_DATA exactly as
fakesnow 0.12.1's server sends them (captured), the others in the shape snowflake-connector-python
4.8 reads (``SnowflakeConnection._get_query_status`` takes ``data.queries[0].status``,
``_process_error_query_status`` its ``errorCode``/``errorMessage``), with the statuses of its
own ``QueryStatus`` enum, so a status the client library adds shows up here.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from flyteidl.core import execution_pb2
from google.protobuf import json_format

from connector_service import InvalidRequestError, PreconditionError, UnavailableError
from connectors.snowflake._bind import bind
from connectors.snowflake._client import QueryRefusedError, _SessionGoneError, _translate
from connectors.snowflake._links import query_url
from connectors.snowflake.connector import SnowflakeJobMeta, _results
from connectors.snowflake.states import KNOWN_STATUSES, UnknownStatuses, phase_of, query_state
from tests.utils import FIXTURES

Phase = execution_pb2.TaskExecution
QID = "01b2c3d4-0000-1111-0000-00000000abcd"

# Captured from fakesnow 0.12.1 (tests/connectors/snowflake_emulator.py) for a finished and an unknown query.
FAKESNOW_SUCCESS = {"data": {"queries": [{"status": "SUCCESS"}]}, "success": True}
FAKESNOW_UNKNOWN = {"data": {"queries": []}, "success": True}


def answer(status: str, code: Any = None, message: str = "") -> dict[str, Any]:
    query: dict[str, Any] = {"id": QID, "status": status}
    if code is not None:
        query.update(errorCode=code, errorMessage=message)
    return {"data": {"queries": [query]}, "success": True}


def phase(response: dict[str, Any], age: float | None = 1.0, grace: float = 600) -> tuple[int, str]:
    return phase_of(query_state(response), QID, age=age, no_data_grace=grace, unknown=UnknownStatuses())


def test_every_status_of_the_client_library_has_a_phase() -> None:
    from snowflake.connector.constants import QueryStatus

    assert {status.name for status in QueryStatus} <= KNOWN_STATUSES
    for status in QueryStatus:
        _, message = phase(answer(status.name))
        assert "does not know" not in message


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("RUNNING", Phase.RUNNING),
        ("QUEUED", Phase.QUEUED),
        ("RESUMING_WAREHOUSE", Phase.WAITING_FOR_RESOURCES),
        ("QUEUED_REPARING_WAREHOUSE", Phase.WAITING_FOR_RESOURCES),
        ("BLOCKED", Phase.RUNNING),
        ("RESTARTED", Phase.RUNNING),
        ("ABORTING", Phase.ABORTED),
        ("ABORTED", Phase.ABORTED),
        ("FAILED_WITH_INCIDENT", Phase.RETRYABLE_FAILED),
        ("DISCONNECTED", Phase.RETRYABLE_FAILED),
        ("SUCCESS", Phase.SUCCEEDED),
    ],
)
def test_status_phases(status: str, expected: int) -> None:
    got, message = phase(answer(status))
    assert got == expected
    assert QID in message and status in message


def test_fakesnow_answers() -> None:
    assert phase(FAKESNOW_SUCCESS)[0] == Phase.SUCCEEDED
    assert phase(FAKESNOW_UNKNOWN)[0] == Phase.QUEUED


def test_failed_with_error_carries_snowflakes_message() -> None:
    message = "SQL compilation error:\nObject 'NONEXISTENTTABLE' does not exist or not authorized."
    got, text = phase(answer("FAILED_WITH_ERROR", 2003, message))
    assert got == Phase.FAILED
    assert "(2003)" in text and "NONEXISTENTTABLE" in text
    huge = phase(answer("FAILED_WITH_ERROR", 100038, "x" * 100_000))[1]
    assert len(huge) < 2200


def test_aborted_carries_the_reason() -> None:
    got, text = phase(answer("ABORTED", 604, "SQL execution canceled"))
    assert got == Phase.ABORTED and "SQL execution canceled" in text


def test_no_data_waits_then_is_retried() -> None:
    assert phase(FAKESNOW_UNKNOWN, age=10, grace=600)[0] == Phase.QUEUED
    assert phase(FAKESNOW_UNKNOWN, age=None, grace=0)[0] == Phase.QUEUED  # a flytekit meta: age unknown
    got, text = phase(FAKESNOW_UNKNOWN, age=700, grace=600)
    assert got == Phase.RETRYABLE_FAILED and "no record" in text


def test_an_answer_without_queries_is_a_failure_with_its_message() -> None:
    got, text = phase(
        {"data": {}, "code": "000605", "message": "Identified SQL statement is not found.", "success": False}
    )
    assert got == Phase.FAILED and "not found" in text


def test_unknown_status_is_running_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    unknown = UnknownStatuses()
    results = [
        phase_of(query_state(answer("SUSPENDED_FOR_LUNCH")), QID, age=1, no_data_grace=1, unknown=unknown)
        for _ in range(3)
    ]
    assert {p for p, _ in results} == {Phase.RUNNING}
    assert "SUSPENDED_FOR_LUNCH" in results[0][1]
    assert len([r for r in caplog.records if "SUSPENDED_FOR_LUNCH" in r.getMessage()]) == 1


# --------------------------------------------------------------------------- log links


@pytest.mark.parametrize(
    ("account", "prefix"),
    [
        ("myorg-analytics", "https://app.snowflake.com/myorg/analytics/"),
        ("MYORG-DATA_TEAM", "https://app.snowflake.com/myorg/data_team/"),
        ("myorg-analytics.snowflakecomputing.com", "https://app.snowflake.com/myorg/analytics/"),
        ("xy12345", "https://app.snowflake.com/us-west-2/xy12345/"),
        ("xy12345.us-east-2.aws", "https://app.snowflake.com/us-east-2.aws/xy12345/"),
        ("XY12345.east-us-2.azure", "https://app.snowflake.com/east-us-2.azure/xy12345/"),
    ],
)
def test_query_history_links(account: str, prefix: str) -> None:
    assert query_url("https://app.snowflake.com", account, QID) == f"{prefix}#/compute/history/queries/{QID}/detail"


def test_no_console_no_link() -> None:
    assert query_url("", "myorg-analytics", QID) == ""


# --------------------------------------------------------------------------- binding


def test_bind_turns_placeholders_into_bound_parameters() -> None:
    at = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    sql, params = bind("SELECT %(a)s, %(b)s, %(a)s, '5%%' WHERE t > %(at)s", {"a": "x'; DROP", "b": 2, "at": at})
    assert sql == "SELECT ?, ?, ?, '5%' WHERE t > ?"
    assert params == ["x'; DROP", 2, "x'; DROP", ("TIMESTAMP_TZ", at)]


def test_bind_without_inputs_sends_the_statement_as_written() -> None:
    assert bind("SELECT '5%%'", {}) == ("SELECT '5%%'", [])
    with pytest.raises(InvalidRequestError, match="no such input"):
        bind("SELECT %(x)s", {})


def test_bind_refuses_what_it_cannot_bind() -> None:
    with pytest.raises(InvalidRequestError, match="input xs is a list"):
        bind("SELECT %(xs)s", {"xs": [1, 2]})
    with pytest.raises(InvalidRequestError, match="%\\(x\\)d"):
        bind("SELECT %(x)d", {"x": 1})


# --------------------------------------------------------------------------- errors and outputs


def test_client_errors_become_the_services() -> None:
    from snowflake.connector import errors

    jwt = errors.DatabaseError(msg="JWT token is invalid.", errno=390144, sqlstate="08001")
    refused = _translate(jwt, "log in", "account a", "team_key", refusals=False)
    assert isinstance(refused, PreconditionError) and "'team_key'" in str(refused)
    down = errors.OperationalError(msg="Could not connect to Snowflake backend after 3 attempt(s).", errno=250001)
    assert isinstance(_translate(down, "log in", "account a", "k", refusals=False), UnavailableError)
    assert isinstance(_translate(errors.ServiceUnavailableError(), "x", "a", "k", refusals=True), UnavailableError)
    expired = errors.ProgrammingError(msg="Session no longer exists.", errno=390112)
    assert isinstance(_translate(expired, "x", "a", "k", refusals=True), _SessionGoneError)
    bad = errors.ProgrammingError(msg="SQL compilation error", errno=2003, sfqid=QID)
    refusal = _translate(bad, "submit", "a", "k", refusals=True)
    assert isinstance(refusal, QueryRefusedError) and refusal.query_id == QID


def test_results_literal_is_flytekits() -> None:
    recorded = json.loads((FIXTURES / "snowflake" / "flytekit_results.json").read_text())
    meta = SnowflakeJobMeta(
        user="FLYTE_RUNNER", account="myorg-analytics", database="FLYTE_DB", schema="PUBLIC",
        warehouse="COMPUTE_WH", query_id=QID, has_output=True,
    )  # fmt: skip
    assert json_format.MessageToDict(_results(meta).literals["results"]) == recorded["literal"]


def test_flytekit_meta_decodes() -> None:
    meta = SnowflakeJobMeta.decode((FIXTURES / "snowflake" / "flytekit_meta.json").read_bytes())
    assert (meta.query_id, meta.account, meta.team, meta.generation) == (QID, "myorg-analytics", "", 1)
