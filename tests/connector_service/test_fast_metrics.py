"""The lock-free families expose exactly what prometheus-client's own would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from connector_service._fast_metrics import counter, histogram
from connector_service.metrics import LATENCY_BUCKETS

_SIZES = (0, 256, 1024, 1048576, 4194304)


def _exposition(registry: CollectorRegistry) -> str:
    # _created holds the wall-clock time each child was made, which differs between the two.
    text = generate_latest(registry).decode()
    return re.sub(r"^\S+_created\{.*\n", "", text, flags=re.M)


def _drive(requests: object, latency: object, sizes: object) -> None:
    for task_type, operation, seconds in [
        ("a", "get", 0.0004),
        ("a", "get", 0.001),  # exactly on a bound: "le" includes it
        ("a", "get", 0.3),
        ("b", "create", 45.0),  # above every bound: +Inf only
        ("a", "get", 0.0),
    ]:
        requests.labels(task_type, operation).inc()  # type: ignore[attr-defined]
        latency.labels(task_type, operation).observe(seconds)  # type: ignore[attr-defined]
    requests.labels("b", "create").inc(2.5)  # type: ignore[attr-defined]
    for size in (0, 300, 1048576, 10_000_000):
        sizes.labels("c").observe(size)  # type: ignore[attr-defined]


def test_exposition_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    _drive(
        counter("x_requests", "Requests.", ["task_type", "operation"], ours),
        histogram("x_latency_seconds", "Latency.", ["task_type", "operation"], LATENCY_BUCKETS, ours),
        histogram("x_bytes", "Sizes.", ["task_type"], _SIZES, ours),
    )
    _drive(
        Counter("x_requests", "Requests.", ["task_type", "operation"], registry=theirs),
        Histogram(
            "x_latency_seconds", "Latency.", ["task_type", "operation"], buckets=LATENCY_BUCKETS, registry=theirs
        ),
        Histogram("x_bytes", "Sizes.", ["task_type"], buckets=_SIZES, registry=theirs),
    )
    assert _exposition(ours) == _exposition(theirs)
    assert ours.get_sample_value("x_requests_total", {"task_type": "b", "operation": "create"}) == 3.5
    labels = {"task_type": "a", "operation": "get", "le": "0.001"}
    assert ours.get_sample_value("x_latency_seconds_bucket", labels) == 3
    assert ours.get_sample_value("x_requests_created", {"task_type": "a", "operation": "get"}) is not None


def test_bad_use_is_refused() -> None:
    registry = CollectorRegistry()
    family = counter("y", "Y.", ["a"], registry)
    with pytest.raises(ValueError, match="expected labels"):
        family.labels("1", "2")
    with pytest.raises(ValueError, match="non-negative"):
        family.labels("1").inc(-1)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        counter("y", "Y again.", ["a"], registry)


def test_workers_mode_uses_prometheus_client(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    assert isinstance(counter("z", "Z.", ["a"], registry), Counter)
    assert isinstance(histogram("z_seconds", "Z.", ["a"], (1.0,), registry), Histogram)
