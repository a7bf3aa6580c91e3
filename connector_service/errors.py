"""One place that decides which gRPC status an exception becomes.

Every RPC goes through ``status_for``, so a connector exception is contained to its request,
the caller gets a short message (the traceback goes to the log), and metrics label failures
the same way for every operation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from connector_service._bulkhead import SaturatedError
from connector_service._envelope import ResourceMetaError
from connector_service._literals import LiteralConversionError
from connector_service._messages import bound_status_message
from connector_service.registry import ConnectorNotFoundError, ConnectorUnavailableError
from connector_service.secrets import SecretNotFoundError

__all__ = ["InvalidRequestError", "NotFoundError", "PreconditionError", "UnavailableError", "Failure", "status_for"]


class InvalidRequestError(ValueError):
    """The request (or the task it describes) is malformed: INVALID_ARGUMENT."""


class NotFoundError(LookupError):
    """Something the request names is not registered here: NOT_FOUND."""


class PreconditionError(RuntimeError):
    """The service is not set up for this (a login refused, a setting missing): FAILED_PRECONDITION.

    The operator has to act; retrying the same call will not help until they do.
    """


class UnavailableError(ConnectionError):
    """The external system cannot be reached right now: UNAVAILABLE.

    Raise it from ``get`` when the job may well be fine but its system is down: propeller
    counts a failed GetTask and polls again (it gives up after a handful), whereas a FAILED
    phase would end a job that may still be running.
    """


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    message: str
    error_code: str
    """flytekit's HTTP-style metric label ("404", "500"), so existing dashboards keep working."""
    expected: bool
    """False for connector bugs and crashes: those are logged with their traceback."""


_HTTP_LABEL = {
    grpc.StatusCode.NOT_FOUND: "404",
    grpc.StatusCode.INVALID_ARGUMENT: "400",
    grpc.StatusCode.FAILED_PRECONDITION: "412",
    grpc.StatusCode.UNIMPLEMENTED: "501",
    grpc.StatusCode.DEADLINE_EXCEEDED: "504",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "429",
    grpc.StatusCode.UNAVAILABLE: "503",
    grpc.StatusCode.INTERNAL: "500",
}


def http_label(code: grpc.StatusCode) -> str:
    return _HTTP_LABEL.get(code, "500")


def status_for(exc: BaseException, operation: str, task: str) -> Failure:
    """Map ``exc`` raised while serving ``operation`` for ``task`` ("name (version N)")."""
    code: grpc.StatusCode
    expected = True
    if isinstance(exc, ConnectorNotFoundError | NotFoundError):
        code, message = grpc.StatusCode.NOT_FOUND, str(exc)
    elif isinstance(exc, InvalidRequestError | ResourceMetaError | LiteralConversionError):
        code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    elif isinstance(exc, SaturatedError):
        code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    elif isinstance(exc, ConnectorUnavailableError | UnavailableError):
        code, message = grpc.StatusCode.UNAVAILABLE, str(exc)
    elif isinstance(exc, NotImplementedError):
        code, message = (
            grpc.StatusCode.UNIMPLEMENTED,
            str(exc) or f"{operation} is not implemented for {task}",
        )
    elif isinstance(exc, TimeoutError | asyncio.TimeoutError):
        code = grpc.StatusCode.DEADLINE_EXCEEDED
        message = f"{operation} for {task} did not finish within the call's deadline"
    elif isinstance(exc, SecretNotFoundError | PreconditionError):
        code, message = grpc.StatusCode.FAILED_PRECONDITION, f"{operation} for {task}: {exc}"
    else:
        code, expected = grpc.StatusCode.INTERNAL, False
        detail = str(exc)
        message = f"failed to {operation} {task}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    # grpc-message rides in a trailer: flytekit's full tracebacks there broke clients (flyte#5224).
    return Failure(code=code, message=bound_status_message(message), error_code=http_label(code), expected=expected)
