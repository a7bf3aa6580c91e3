"""Which status each kind of exception becomes (the wire behaviour is covered per connector)."""

from __future__ import annotations

import grpc
import pytest

from connector_service import InvalidRequestError, NotFoundError, UnavailableError
from connector_service.errors import status_for


@pytest.mark.parametrize(
    ("exc", "code", "expected"),
    [
        (UnavailableError("controller unreachable"), grpc.StatusCode.UNAVAILABLE, True),
        (InvalidRequestError("bad field"), grpc.StatusCode.INVALID_ARGUMENT, True),
        (NotFoundError("no such sensor"), grpc.StatusCode.NOT_FOUND, True),
        (ConnectionError("a plain one is a bug"), grpc.StatusCode.INTERNAL, False),
    ],
)
def test_status_for(exc: Exception, code: grpc.StatusCode, expected: bool) -> None:
    failure = status_for(exc, "get", "slurm (version 0)")
    assert failure.code == code and failure.expected is expected
    assert str(exc) in failure.message
