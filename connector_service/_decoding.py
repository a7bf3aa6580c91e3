"""Requests grpc cannot parse become INVALID_ARGUMENT, not grpc's bare UNKNOWN.

grpc answers a deserializer's exception itself with UNKNOWN ("Unexpected DecodeError"),
bypassing the handler, its metrics and its log line. The connector services' deserializers
are wrapped instead: an undecodable message becomes a stand-in whose first use raises
``InvalidRequestError``, so the handler answers it like any other malformed request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from connector_service._messages import clip
from connector_service.errors import InvalidRequestError

__all__ = ["UndecodableRequest", "tolerant"]


class UndecodableRequest:
    """Stands in for a request that did not parse; touching any field raises InvalidRequestError."""

    __slots__ = ("_why",)

    def __init__(self, why: str) -> None:
        object.__setattr__(self, "_why", why)

    def __getattr__(self, name: str) -> Any:
        self.raise_it()

    def raise_it(self) -> None:
        raise InvalidRequestError(object.__getattribute__(self, "_why"))


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, answering an undecodable message with an ``UndecodableRequest``."""
    if deserializer is None:
        return None
    message_type = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = message_type.full_name if message_type is not None else "message"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return UndecodableRequest(f"the request is not a valid {name}: {clip(exc)}")

    return deserialize
