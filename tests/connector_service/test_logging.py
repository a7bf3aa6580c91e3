"""The JSON log line: what Kubernetes log pipelines read."""

from __future__ import annotations

import datetime
import json
import logging
import random

from connector_service._logging import JsonFormatter


def test_time_is_isoformat_in_utc_to_the_millisecond() -> None:
    formatter = JsonFormatter()
    rng = random.Random(7)
    stamps = [0.0, 1.9999995, 1763734468.9999996, 1763734469.0005]
    stamps += [rng.uniform(1.6e9, 1.9e9) for _ in range(20000)]
    stamps += [1763734468 + i / 997 for i in range(3000)]  # many lines within one second, in order
    for stamp in stamps:
        expected = datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="milliseconds")
        assert formatter._time(stamp) == expected, stamp


def test_a_line_carries_the_message_and_the_extra_fields_but_not_the_standard_ones() -> None:
    record = logging.LogRecord("connector_service.rpc", logging.INFO, __file__, 1, "%s OK", ("get",), None)
    record.__dict__.update({"operation": "get", "duration_ms": 0.5, "_private": 1, "when": datetime.date(2026, 1, 2)})
    line = json.loads(JsonFormatter().format(record))
    assert line.pop("time")
    assert line == {
        "level": "info",
        "logger": "connector_service.rpc",
        "message": "get OK",
        "operation": "get",
        "duration_ms": 0.5,
        "when": "2026-01-02",
    }
