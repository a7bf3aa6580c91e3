"""Log set-up: text for a terminal, one JSON object per line for Kubernetes."""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

from connector_service._access_log import IsoTime, StreamAccessLog

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the access log writes one per call, so this is kept lean."""

    def __init__(self) -> None:
        super().__init__()
        self._time = IsoTime()

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for key in [k for k in fields if k not in _STANDARD and k[0] != "_"]:
            payload[key] = fields[key]
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


class _OrderedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes a record after the access lines buffered before it, so the log keeps its order."""

    def __init__(self, stream: TextIO, access_log: StreamAccessLog) -> None:
        super().__init__(stream)
        self._access_log = access_log

    def emit(self, record: logging.LogRecord) -> None:
        self._access_log.flush_before_record()
        super().emit(record)


def configure(level: str, fmt: str) -> StreamAccessLog:
    """Set up the process's logging; returns the access log that writes to the same stream."""
    stream = sys.stderr
    root = logging.getLogger()
    root.setLevel(level.upper())
    access_log = StreamAccessLog(stream, fmt)
    handler = _OrderedHandler(stream, access_log)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.handlers[:] = [handler]
    # No formatter here prints thread or process names; not collecting them saves a little on
    # every record, and the access log writes one per call.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # grpc's own logger is chatty at debug; keep it at warning unless asked.
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
    return access_log
