"""Bounds on what a request can make the service say.

A status message rides in the ``grpc-message`` trailer: clients refuse trailers over 8 KiB
by default, so a message that echoes an 11 KB task type reaches the caller as "Stream
removed" instead of its status, and the same value would bloat every log line that names
it. Every request-controlled value echoed in a message or a log line goes through ``clip``;
every status message through ``bound_status_message``.
"""

from __future__ import annotations

__all__ = ["MAX_STATUS_BYTES", "MAX_VALUE_CHARS", "bound_status_message", "clip"]

MAX_VALUE_CHARS = 200
"""Longest request-controlled value shown in a message or log line, ellipsis included."""

MAX_STATUS_BYTES = 1000
"""Longest status message as it travels: grpc percent-encodes bytes outside printable ASCII."""

_ELLIPSIS = "..."


def clip(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``str(value)`` cut to ``limit`` characters, ending in ``...`` when it was cut.

    For names, keys, paths and URLs a request supplies: enough to recognise the value,
    never enough to let a caller grow a message or a log line without bound.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return text[: max(limit - len(_ELLIPSIS), 0)] + _ELLIPSIS


def _wire_size(text: str) -> int:
    """Bytes ``text`` takes in ``grpc-message`` (printable ASCII but ``%`` as is, the rest ``%XX``)."""
    size = 0
    for byte in text.encode("utf-8", "replace"):
        size += 1 if 0x20 <= byte <= 0x7E and byte != 0x25 else 3
    return size


def bound_status_message(message: str, limit: int = MAX_STATUS_BYTES) -> str:
    """``message`` cut so that its percent-encoded form fits in ``limit`` bytes."""
    if len(message) <= limit // 12 or _wire_size(message) <= limit:  # a character is at most 4 bytes, 12 encoded
        return message
    budget = limit - len(_ELLIPSIS)
    size = 0
    for i, char in enumerate(message):
        size += _wire_size(char)
        if size > budget:
            return message[:i] + _ELLIPSIS
    return message
