"""Prometheus metrics, on a registry the service owns (so tests and workers get their own).

The ``flyte_connector_*`` names and labels are flytekit's, so dashboards built for
``pyflyte serve connector`` keep working; latency is a Histogram here (flytekit's Summary
exposes no quantiles), so p99 can be computed. Updated from the event loop's thread only
(see ``_fast_metrics``).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, gc_collector, platform_collector, process_collector

from connector_service._fast_metrics import counter, histogram

__all__ = ["ConnectorMetrics", "LATENCY_BUCKETS", "new_registry"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (0, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


def new_registry() -> CollectorRegistry:
    """A registry with the process, platform and GC collectors the default one would have."""
    registry = CollectorRegistry()
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    return registry


class ConnectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.success = counter(
            "flyte_connector_requests_success",
            "Connector requests that succeeded",
            ["task_type", "operation"],
            registry,
        )
        self.failure = counter(
            "flyte_connector_requests_failure",
            "Connector requests that failed, by HTTP-style error code (as flytekit labels them)",
            ["task_type", "operation", "error_code"],
            registry,
        )
        self.latency = histogram(
            "flyte_connector_request_latency_seconds",
            "Time spent serving connector requests",
            ["task_type", "operation"],
            LATENCY_BUCKETS,
            registry,
        )
        self.input_bytes = histogram(
            "flyte_connector_input_literal_bytes",
            "Size of the input literals of CreateTask and ExecuteTaskSync requests",
            ["task_type"],
            _SIZE_BUCKETS,
            registry,
        )

        self.shed = counter(
            "flyte_connector_requests_shed",
            "Calls refused with RESOURCE_EXHAUSTED because their connector had no room (its bulkhead was full)",
            ["task_type", "operation"],
            registry,
        )

        self.up = Gauge(
            "flyte_connector_up",
            "1 for each connector (by task type) and sensor (task_type sensor) this process serves; "
            "0 for one whose set-up failed and is refused with UNAVAILABLE (--skip-broken-connectors)",
            ["task_type", "connector"],
            registry=registry,
            multiprocess_mode="livemin",
        )

        self._children: dict[tuple[str, str], tuple[Callable[[], None], Callable[[float], None]]] = {}
        self._input_children: dict[str, Callable[[float], None]] = {}

    def _child(self, task_type: str, operation: str) -> tuple[Callable[[], None], Callable[[float], None]]:
        # Resolved once per (task type, operation): labels() costs a lock and a dict build per call.
        found = self._children.get((task_type, operation))
        if found is None:
            found = (self.success.labels(task_type, operation).inc, self.latency.labels(task_type, operation).observe)
            self._children[(task_type, operation)] = found
        return found

    def observe_success(self, task_type: str, operation: str, seconds: float) -> None:
        inc, observe = self._child(task_type, operation)
        inc()
        observe(seconds)

    def observe_failure(self, task_type: str, operation: str, error_code: str, seconds: float) -> None:
        self.failure.labels(task_type, operation, error_code).inc()
        self._child(task_type, operation)[1](seconds)

    def observe_input_bytes(self, task_type: str, size: int) -> None:
        observe = self._input_children.get(task_type)
        if observe is None:
            observe = self._input_children[task_type] = self.input_bytes.labels(task_type).observe
        observe(size)

    def observe_shed(self, task_type: str, operation: str) -> None:
        self.shed.labels(task_type, operation).inc()
