"""The access log: one line per call, written without the logging machinery on the hot path.

Through ``logging``, each call's line cost a ``LogRecord``, a handler lock, a formatter pass
and a write plus flush: measured, 40-50 % of a whole GetTask's server CPU. Here a call's line
is formatted straight into a buffer on the event loop's thread, and the buffer is written
every ``interval`` (20 ms) or as soon as it holds ``max_lines`` lines, whichever comes
first: one write for every call that finished in that time. Writing once per loop iteration
still cost a write per call or two at 3,000 calls/s (measured: 5 % of a GetTask's server CPU).
The lines are the same bytes the service's text and JSON formatters produce for the same
record, in the same order, and nothing is dropped: the write blocks as ``logging`` did if the
log pipe is full, and the buffer is written at shutdown. A process killed outright loses at
most the last ``interval`` of lines.

Other log records (a connector's own, a failure's traceback) go through ``logging``; the
handler that ``_logging.configure`` installs flushes this buffer first, so the log stays in
the order things happened.

Embedded services (tests, a program that builds ``ConnectorService`` itself) have no such
handler; they get ``LoggingAccessLog``, which records through the ``connector_service.rpc``
logger as before, so their own logging configuration sees every line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["ACCESS_LOGGER", "AccessLog", "IsoTime", "LoggingAccessLog", "StreamAccessLog"]

ACCESS_LOGGER = "connector_service.rpc"

_log = logging.getLogger(ACCESS_LOGGER)


class AccessLog:
    """Where the servicers send one line per call."""

    def line(self, level: int, message: str, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Write what is buffered (at shutdown, and before any other record of the loop's thread)."""

    def ok(self, operation: str, label: str, task_type: str, elapsed: float, execution_id: str) -> None:
        """The line of a call that succeeded: the same as ``line`` with ``ok_record``'s arguments.

        Most calls succeed, so this line has a fast path of its own in ``StreamAccessLog``.
        """
        self.line(logging.INFO, *ok_record(operation, label, task_type, elapsed, execution_id))


def ok_record(
    operation: str, label: str, task_type: str, elapsed: float, execution_id: str
) -> tuple[str, dict[str, Any]]:
    """The message and fields of a successful call's line."""
    fields: dict[str, Any] = {
        "operation": operation,
        "task_type": task_type,
        "grpc_code": "OK",
        "duration_ms": round(elapsed * 1000, 3),
    }
    if execution_id:
        fields["task_execution_id"] = execution_id
    return f"{operation} {label} OK {elapsed * 1000:.1f}ms", fields


class LoggingAccessLog(AccessLog):
    """Each line a ``logging`` record of ``connector_service.rpc``: for embedded services."""

    def line(self, level: int, message: str, fields: dict[str, Any]) -> None:
        if _log.isEnabledFor(level):
            _log.log(level, message, extra=fields)


class StreamAccessLog(AccessLog):
    """Lines formatted as the service's own formatter would, batched per loop iteration."""

    def __init__(self, stream: TextIO, fmt: str, *, interval: float = 0.02, max_lines: int = 512) -> None:
        self._stream = stream
        self._buffer: list[str] = []
        self._interval = interval
        self._max_lines = max_lines
        self._scheduled = False
        self._owner: int | None = None
        """The event loop's thread: the only one that touches the buffer."""
        self._level = _log.getEffectiveLevel()
        formatter = _JsonLine() if fmt == "json" else _TextLine()
        self._format: Callable[[str, str, dict[str, Any]], str] = formatter.format
        self._format_ok: Callable[[str, str, str, float, str], str] = formatter.format_ok

    def line(self, level: int, message: str, fields: dict[str, Any]) -> None:
        if level >= self._level:
            self._add(self._format(logging.getLevelName(level), message, fields))

    def ok(self, operation: str, label: str, task_type: str, elapsed: float, execution_id: str) -> None:
        if logging.INFO >= self._level:
            self._add(self._format_ok(operation, label, task_type, elapsed, execution_id))

    def _add(self, text: str) -> None:
        """Buffer a line; the first of a batch sets the timer, a full batch is written at once."""
        buffer = self._buffer
        buffer.append(text)
        if not self._scheduled:
            asyncio.get_running_loop().call_later(self._interval, self._timed_flush)
            self._scheduled = True
            self._owner = threading.get_ident()
        elif len(buffer) >= self._max_lines:
            self.flush()

    def _timed_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def flush_before_record(self) -> None:
        """Called by the log handler: other threads' records do not wait for the loop's lines."""
        if self._buffer and threading.get_ident() == self._owner:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        text = "".join(self._buffer)
        self._buffer.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # the log stream is gone (closed pipe): as logging, carry on
            pass


_OK_CACHE = 4096
"""Entries of a formatter's per-(operation, task type) pieces; far more than a registry holds."""

_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""A JSON string literal, as ``json.dumps`` (``ensure_ascii``) writes it."""


class IsoTime:
    """UTC ISO 8601 to the millisecond, as ``datetime.isoformat(timespec="milliseconds")``.

    The date and time of day are formatted once per second, not once per line.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        fraction, whole = math.modf(created)  # split and rounded as datetime.fromtimestamp does
        second, micro = int(whole), round(fraction * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{micro // 1000:03d}+00:00"


class _JsonLine:
    """``_logging.JsonFormatter``'s line for an access record, built without a LogRecord."""

    def __init__(self) -> None:
        self._time = IsoTime()
        self._encode = json.JSONEncoder(default=str).encode
        self._ok_parts: dict[tuple[str, str, str], tuple[str, str]] = {}

    def format(self, level: str, message: str, fields: dict[str, Any]) -> str:
        payload: dict[str, Any] = {
            "time": self._time(time.time()),
            "level": level.lower(),
            "logger": ACCESS_LOGGER,
            "message": message,
        }
        payload.update(fields)
        return self._encode(payload) + "\n"

    def format_ok(self, operation: str, label: str, task_type: str, elapsed: float, execution_id: str) -> str:
        """``format`` of ``ok_record``'s line, from pieces encoded once per operation and task type."""
        key = (operation, label, task_type)
        parts = self._ok_parts.get(key)
        if parts is None:
            parts = self._ok_parts_for(operation, label, task_type)
        head, middle = parts
        ms = elapsed * 1000
        tail = f', "task_execution_id": {_json_str(execution_id)}}}\n' if execution_id else "}\n"
        return f'{{"time": "{self._time(time.time())}"{head}{ms:.1f}ms"{middle}{round(ms, 3)!r}{tail}'

    def _ok_parts_for(self, operation: str, label: str, task_type: str) -> tuple[str, str]:
        message = _json_str(f"{operation} {label} OK ")[:-1]  # the number and "ms" need no escaping
        head = f', "level": "info", "logger": "{ACCESS_LOGGER}", "message": {message}'
        middle = f', "operation": {_json_str(operation)}, "task_type": {_json_str(task_type)}, '
        middle += '"grpc_code": "OK", "duration_ms": '
        if len(self._ok_parts) >= _OK_CACHE:  # bounded: labels come from registered task types
            self._ok_parts.clear()
        self._ok_parts[operation, label, task_type] = (head, middle)
        return head, middle


class _TextLine:
    """``_logging.TextFormatter``'s line (``asctime level logger: message k=v ...``)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._ok_parts: dict[tuple[str, str, str], tuple[str, str]] = {}

    def format_ok(self, operation: str, label: str, task_type: str, elapsed: float, execution_id: str) -> str:
        """``format`` of ``ok_record``'s line, from pieces built once per operation and task type."""
        parts = self._ok_parts.get((operation, label, task_type))
        if parts is None:
            if len(self._ok_parts) >= _OK_CACHE:
                self._ok_parts.clear()
            parts = self._ok_parts[operation, label, task_type] = (
                f" {'INFO':<7} {ACCESS_LOGGER}: {operation} {label} OK ",
                f"ms operation={operation} task_type={task_type} grpc_code=OK duration_ms=",
            )
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = second
        ms = elapsed * 1000
        tail = f" task_execution_id={execution_id}\n" if execution_id else "\n"
        return f"{self._prefix},{int((now - second) * 1000):03d}{parts[0]}{ms:.1f}{parts[1]}{round(ms, 3)}{tail}"

    def format(self, level: str, message: str, fields: dict[str, Any]) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = second
        msecs = int((now - second) * 1000)
        line = f"{self._prefix},{msecs:03d} {level:<7} {ACCESS_LOGGER}: {message}"
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line + "\n"
