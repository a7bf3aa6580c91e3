"""Counters and histograms that the event loop updates without a lock.

prometheus-client guards every value with a mutex, because any thread may update it. The
per-call metrics here are only ever updated from the event loop's thread, so the lock buys
nothing, yet taking it (twice per histogram, five families per GetTask) was about a quarter
of the GetTask handler's CPU under load. These families keep plain numbers and are read by
the scrape thread as a collector; the GIL keeps each number whole (a scrape may see a
histogram's count one observation ahead of its sum, which Prometheus tolerates).

Under ``--workers`` (``PROMETHEUS_MULTIPROC_DIR`` set) values must live in the files the
supervisor aggregates, so ``counter()``/``histogram()`` return prometheus-client's own
classes there; both kinds answer ``labels(...).inc()`` / ``labels(...).observe(v)``.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["CounterChild", "HistogramChild", "counter", "histogram", "multiprocess_mode"]


class CounterChild(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class HistogramChild(Protocol):
    def observe(self, amount: float) -> None: ...


class _Family(Protocol):
    def labels(self, *values: str) -> Any: ...


def multiprocess_mode() -> bool:
    """Whether this process is a ``--workers`` worker whose metrics go to shared files."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def counter(name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> _Family:
    if multiprocess_mode():
        return Counter(name, documentation, labelnames, registry=registry)
    return _Counter(name, documentation, labelnames, registry)


def histogram(
    name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float], registry: CollectorRegistry
) -> _Family:
    if multiprocess_mode():
        return Histogram(name, documentation, labelnames, buckets=buckets, registry=registry)
    return _Histogram(name, documentation, labelnames, buckets, registry)


class _CounterValue:
    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class _HistogramValue:
    __slots__ = ("_bounds", "counts", "sum", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative; the last bound is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        # The first bound >= amount: Prometheus buckets are "less than or equal".
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1


class _Base(Collector):
    """A labelled family registered as a collector; children are made on first use."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def labels(self, *values: str) -> Any:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _new_child(self) -> Any:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        raise NotImplementedError

    def _metric(self) -> Metric:
        return Metric(self.name, self.documentation, self.kind)

    def describe(self) -> list[Metric]:
        return [self._metric()]

    def _items(self) -> list[tuple[tuple[str, ...], Any]]:
        # list() copies the dict in one C call, so a child added meanwhile cannot break the scrape.
        return list(self._children.items())


class _Counter(_Base):
    kind = "counter"

    def _new_child(self) -> _CounterValue:
        return _CounterValue()

    def collect(self) -> Iterator[Metric]:
        metric = self._metric()
        for key, child in self._items():
            labels = dict(zip(self.labelnames, key, strict=True))
            metric.add_sample(self.name + "_total", labels, child.value)
            metric.add_sample(self.name + "_created", labels, child.created)
        yield metric


class _Histogram(_Base):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in self._bounds)  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> _HistogramValue:
        return _HistogramValue(self._bounds)

    def collect(self) -> Iterator[Metric]:
        metric = self._metric()
        for key, child in self._items():
            labels = dict(zip(self.labelnames, key, strict=True))
            counts = list(child.counts)
            total_sum = child.sum
            cumulative = 0
            for le, count in zip(self._le, counts, strict=True):
                cumulative += count
                metric.add_sample(self.name + "_bucket", {**labels, "le": le}, float(cumulative))
            metric.add_sample(self.name + "_count", labels, float(cumulative))
            metric.add_sample(self.name + "_sum", labels, total_sum)
            metric.add_sample(self.name + "_created", labels, child.created)
        yield metric
