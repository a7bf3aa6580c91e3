"""BigQuery job states as phases, and inputs as typed query parameters, without a server.

The state mapping is fed BigQuery REST answers: bqemulator's, recorded, for what it shows (DONE,
DONE with an error) and, for what it never shows (its jobs finish within ``jobs.insert``), its
answer with the ``status`` BigQuery documents for PENDING, RUNNING, a ``backendError`` and a
cancelled job (``tests/fixtures/bigquery/api/README.md``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flyteidl.core import interface_pb2, literals_pb2, types_pb2

from connector_service import InvalidRequestError, Phase
from connectors.bigquery._api import JobsClient, _error_of
from connectors.bigquery._job import build_job
from connectors.bigquery._params import query_parameters
from connectors.bigquery.states import StateMapper
from tests.utils import FIXTURES

API = FIXTURES / "bigquery" / "api"


def answer(name: str) -> dict[str, Any]:
    return json.loads((API / f"{name}.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("name", "phase", "words"),
    [
        ("bqemulator_jobs_insert_done", Phase.SUCCEEDED, "is done"),
        ("bqemulator_jobs_get_done", Phase.SUCCEEDED, "is done"),
        ("bqemulator_jobs_insert_bad_sql", Phase.FAILED, 'invalidQuery: Syntax error: Unexpected identifier "SELEC"'),
        ("bqemulator_jobs_insert_missing_table", Phase.FAILED, "notFound: Not found: Dataset flyte-fixtures:ds"),
        ("shaped_jobs_get_pending", Phase.QUEUED, "is pending"),
        ("shaped_jobs_get_running", Phase.RUNNING, "is running"),
        ("shaped_jobs_get_backend_error", Phase.RETRYABLE_FAILED, "backendError: Error encountered"),
        ("shaped_jobs_get_cancelled", Phase.ABORTED, "User requested cancellation"),
    ],
)
def test_each_answer_has_a_phase_and_bigquerys_words(name: str, phase: int, words: str) -> None:
    got, message = StateMapper().phase_of(answer(name), "j1")
    assert got == phase
    assert words in message and "BigQuery job j1" in message


def test_an_unknown_state_is_running_naming_it_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    mapper = StateMapper()
    job = answer("shaped_jobs_get_running")
    job["status"]["state"] = "PAUSED"
    with caplog.at_level(logging.WARNING, logger="connectors.bigquery.states"):
        results = [mapper.phase_of(job, "j1") for _ in range(3)]
    assert {phase for phase, _ in results} == {Phase.RUNNING}
    assert "PAUSED" in results[0][1] and "does not know" in results[0][1]
    assert len([r for r in caplog.records if "PAUSED" in r.getMessage()]) == 1


def test_no_status_at_all_is_running_not_an_error() -> None:
    phase, message = StateMapper().phase_of({"kind": "bigquery#job"}, "j1")
    assert phase == Phase.RUNNING and "none" in message


def test_error_bodies_give_the_reason_and_message() -> None:
    raw = (API / "bqemulator_jobs_get_not_found.json").read_bytes()
    assert _error_of(404, raw) == ("notFound", "Not found: job:flyte-fixtures.flyte-nope")
    assert _error_of(502, b"<html>bad gateway</html>") == ("", "<html>bad gateway</html>")
    assert JobsClient  # the client's mapping of statuses is tested over HTTP in test_bigquery.py


# --------------------------------------------------------------------------- parameters


def _interface(**types: types_pb2.LiteralType) -> interface_pb2.TypedInterface:
    iface = interface_pb2.TypedInterface()
    for name, literal_type in types.items():
        iface.inputs.variables[name].type.CopyFrom(literal_type)
    return iface


def _simple(kind: int) -> types_pb2.LiteralType:
    return types_pb2.LiteralType(simple=kind)  # type: ignore[arg-type]


def _list(inner: types_pb2.LiteralType) -> types_pb2.LiteralType:
    return types_pb2.LiteralType(collection_type=inner)


def _prim(**value: Any) -> literals_pb2.Literal:
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(**value)))


def _when(seconds: int) -> literals_pb2.Literal:
    literal = literals_pb2.Literal()
    literal.scalar.primitive.datetime.seconds = seconds
    return literal


def test_a_declared_type_wins_so_dates_timestamps_and_bytes_can_be_sent() -> None:
    on, since = 1709164800, 1704090600  # 2024-02-29 00:00, 2024-01-01 06:30 UTC
    dates = literals_pb2.Literal(collection=literals_pb2.LiteralCollection(literals=[_when(on), _when(since)]))
    inputs = literals_pb2.LiteralMap(
        literals={"on": _when(on), "at": _when(since), "blob": _prim(string_value="hi"), "days": dates}
    )
    iface = _interface(
        on=_simple(types_pb2.DATETIME),
        at=_simple(types_pb2.DATETIME),
        blob=_simple(types_pb2.STRING),
        days=_list(_simple(types_pb2.DATETIME)),
    )
    declared = {
        "queryParameters": [
            {"name": "on", "parameterType": {"type": "DATE"}, "parameterValue": {"value": None}},
            {"name": "at", "parameterType": {"type": "TIMESTAMP"}, "parameterValue": {}},
            {"name": "blob", "parameterType": {"type": "BYTES"}, "parameterValue": {}},
            {"name": "days", "parameterType": {"type": "ARRAY", "arrayType": {"type": "DATE"}}, "parameterValue": {}},
            {"name": "fixed", "parameterType": {"type": "INT64"}, "parameterValue": {"value": "5"}},
        ]
    }
    params = {p["name"]: p for p in query_parameters(inputs, iface, declared)}
    assert params["on"]["parameterType"] == {"type": "DATE"} and params["on"]["parameterValue"] == {
        "value": "2024-02-29"
    }
    assert params["at"]["parameterValue"] == {"value": "2024-01-01 06:30:00.000000+00:00"}
    assert params["blob"]["parameterType"] == {"type": "BYTES"} and params["blob"]["parameterValue"] == {
        "value": "aGk="
    }
    assert params["days"]["parameterValue"] == {"arrayValues": [{"value": "2024-02-29"}, {"value": "2024-01-01"}]}
    assert params["fixed"] == declared["queryParameters"][4]  # not an input: sent as the user declared it


def test_optional_inputs_are_typed_and_none_is_null() -> None:
    union = types_pb2.LiteralType(
        union_type=types_pb2.UnionType(
            variants=[_simple(types_pb2.INTEGER), types_pb2.LiteralType(simple=types_pb2.NONE)]
        )
    )
    none = literals_pb2.Literal(scalar=literals_pb2.Scalar(none_type=literals_pb2.Void()))
    [param] = query_parameters(literals_pb2.LiteralMap(literals={"n": none}), _interface(n=union), {})
    assert param == {"name": "n", "parameterType": {"type": "INT64"}, "parameterValue": {}}


def test_floats_are_exact_and_special_values_are_bigquerys() -> None:
    iface = _interface(a=_simple(types_pb2.FLOAT), b=_simple(types_pb2.FLOAT), c=_simple(types_pb2.FLOAT))
    inputs = literals_pb2.LiteralMap(
        literals={
            "a": _prim(float_value=0.1),
            "b": _prim(float_value=float("inf")),
            "c": _prim(float_value=float("nan")),
        }
    )
    values = {p["name"]: p["parameterValue"]["value"] for p in query_parameters(inputs, iface, {})}
    assert values == {"a": "0.1", "b": "Infinity", "c": "NaN"}


@pytest.mark.parametrize(
    ("literal_type", "literal", "words"),
    [
        (_list(_list(_simple(types_pb2.INTEGER))), literals_pb2.Literal(), "no arrays of arrays"),
        (_simple(types_pb2.DURATION), _prim(), "cannot take"),
        (types_pb2.LiteralType(map_value_type=_simple(types_pb2.STRING)), literals_pb2.Literal(), "cannot take"),
    ],
)
def test_inputs_bigquery_cannot_take_are_refused_naming_them(
    literal_type: types_pb2.LiteralType, literal: literals_pb2.Literal, words: str
) -> None:
    with pytest.raises(InvalidRequestError, match=words) as caught:
        query_parameters(literals_pb2.LiteralMap(literals={"x": literal}), _interface(x=literal_type), {})
    assert "input x" in str(caught.value)


def test_the_body_honours_the_config_and_refuses_what_cannot_work() -> None:
    custom = {
        "ProjectID": "p-123456",
        "Location": "EU",
        "Domain": "development",
        "priority": "BATCH",
        "maximumBytesBilled": "1000",
        "labels": {"team": "ml"},
        "jobTimeoutMs": 60000.0,
        "useLegacySql": True,
    }
    body = build_job("j1", "p-123456", "EU", "SELECT 1", [], custom)
    assert body["jobReference"] == {"projectId": "p-123456", "jobId": "j1", "location": "EU"}
    assert body["configuration"]["labels"] == {"team": "ml"} and body["configuration"]["jobTimeoutMs"] == 60000
    query = body["configuration"]["query"]
    assert query == {"priority": "BATCH", "maximumBytesBilled": "1000", "useLegacySql": True, "query": "SELECT 1"}
    with pytest.raises(InvalidRequestError, match="custom.dryRun"):
        build_job("j1", "p-123456", "EU", "SELECT 1", [], {"dryRun": True})
    with pytest.raises(InvalidRequestError, match="custom.labels"):
        build_job("j1", "p-123456", "EU", "SELECT 1", [], {"labels": {"n": 1}})
