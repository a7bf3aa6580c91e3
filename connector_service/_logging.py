"""Log set-up: text for a terminal, one JSON object per line for Kubernetes."""

from __future__ import annotations

import json
import logging
import math
import sys
import time

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the access log writes one per call, so this is kept lean."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def _time(self, created: float) -> str:
        # Same text as datetime.isoformat(timespec="milliseconds") in UTC; the date and time
        # of day are formatted once per second, not once per line.
        fraction, whole = math.modf(created)  # split and rounded as datetime.fromtimestamp does
        second, micro = int(whole), round(fraction * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{micro // 1000:03d}+00:00"

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


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # No formatter here prints thread or process names; not collecting them saves a little on
    # every record, and the access log writes one per call.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # grpc's own logger is chatty at debug; keep it at warning unless asked.
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
