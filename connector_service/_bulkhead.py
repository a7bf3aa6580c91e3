"""Per-connector bulkheads: admission that refuses fast instead of queueing without bound.

Each registered connector (task type and version) gets one ``Bulkhead``: a limit on its
calls in flight and, for its plain-def (blocking) methods, its own bounded pool of threads.
A call that finds no room may wait briefly (``max_wait``, and never past the point where its
deadline leaves time to be served); otherwise it is refused at once with ``SaturatedError``
(RESOURCE_EXHAUSTED). So one saturated connector cannot take another's threads or the whole
server, and no call sits in a queue until its deadline passes: propeller gets an answer it
can act on (retry later) instead of burning its retries on timeouts.

Everything here runs on the event loop's thread except ``_work`` (a pool thread), which hands
its result back with ``call_soon_threadsafe``; no locks. The uncontended path is two integer
compares and an increment, done inline by ``servicer._Call.run``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["Bulkhead", "SaturatedError"]

_log = logging.getLogger("connector_service.overload")

_LOG_EVERY = 1.0
"""Seconds between two log lines about shed calls of one connector (the rest are counted)."""
_ESTIMATE_WEIGHT = 0.2
"""Weight of the newest call in the running estimate of an operation's service time."""
_MAX_LABEL = 120


class SaturatedError(RuntimeError):
    """The connector has no room for the call now: RESOURCE_EXHAUSTED, retry later."""


class Bulkhead:
    """One connector's limits and counters. Owned by the service; touched on the loop thread only.

    ``inflight`` counts admitted calls until they end; ``threads_busy`` counts pool threads
    running its plain-def methods until the thread returns (a call whose caller went away
    still holds its thread until the blocking function comes back: the thread is not free).
    """

    __slots__ = (
        "label",
        "max_concurrency",
        "max_threads",
        "max_wait",
        "inflight",
        "threads_busy",
        "waiters",
        "estimates",
        "_executor",
        "_make_executor",
        "_shed",
        "_last_log",
    )

    def __init__(
        self,
        label: str,
        *,
        max_concurrency: int,
        max_threads: int,
        max_wait: float,
        make_executor: Callable[[int], ThreadPoolExecutor] | None = None,
    ) -> None:
        self.label = label[:_MAX_LABEL]
        """How messages name it: ``connector 'Name' for type (version N)``."""
        self.max_concurrency = max_concurrency
        self.max_threads = max_threads
        self.max_wait = max_wait
        self.inflight = 0
        self.threads_busy = 0
        self.waiters: deque[tuple[asyncio.Future[bool], bool]] = deque()
        """Calls waiting for room, first come first served: (future, needs a thread)."""
        self.estimates: dict[str, float] = {}
        """Operation -> running estimate of its service time in seconds (successful calls)."""
        self._executor: ThreadPoolExecutor | None = None
        self._make_executor = make_executor or ThreadPoolExecutor
        """Builds its thread pool (``max_threads`` workers) on the first plain-def call, not before."""
        self._shed = 0
        self._last_log = 0.0

    # -- admission ---------------------------------------------------------------------------

    def has_room(self, needs_thread: bool) -> bool:
        return self.inflight < self.max_concurrency and (not needs_thread or self.threads_busy < self.max_threads)

    def wait_budget(self, operation: str, remaining: float | None, needs_thread: bool = False) -> float:
        """How long a call may wait for room: ``max_wait``, less whatever its deadline cannot spare.

        Zero when waiting is futile: the queue already holds as many calls as the connector can
        be expected to start within ``max_wait`` (Little's law: slots x wait / service time; a
        connector busy for 2 s per call on 64 threads starts about 3 calls per 0.1 s).
        """
        estimate = self.estimates.get(operation, 0.0)
        if estimate > 0:
            slots = self.max_threads if needs_thread and self.threads_busy >= self.max_threads else self.max_concurrency
            if len(self.waiters) >= slots * self.max_wait / estimate:
                return 0.0
        if remaining is None:
            return self.max_wait
        return min(self.max_wait, remaining - estimate)

    async def wait(self, needs_thread: bool, budget: float) -> None:
        """Wait up to ``budget`` seconds for room; on return the call holds its slot (and thread).

        Raises ``SaturatedError`` when the wait queue is full, the budget is spent, or no room
        came in time. Room is handed over by ``_grant`` (counts already taken for the waiter),
        so a released slot never goes to a newcomer ahead of a waiting call.
        """
        if budget <= 0 or len(self.waiters) >= self.max_concurrency:
            raise self.saturated(needs_thread)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entry = (fut, needs_thread)
        self.waiters.append(entry)
        timer = loop.call_later(budget, _expire, fut)
        try:
            granted = await fut
        except BaseException:
            # The caller went away while waiting. If room was handed over meanwhile, pass it on.
            if fut.done() and not fut.cancelled() and fut.result():
                self.release(needs_thread)
            else:
                self._forget(entry)
            raise
        finally:
            timer.cancel()
        if not granted:
            self._forget(entry)
            raise self.saturated(needs_thread)

    def _forget(self, entry: tuple[asyncio.Future[bool], bool]) -> None:
        try:
            self.waiters.remove(entry)
        except ValueError:
            pass

    def release(self, with_thread: bool = False) -> None:
        """A call ended (and, ``with_thread``, its thread came back): hand the room on."""
        self.inflight -= 1
        if with_thread:
            self.threads_busy -= 1
        if self.waiters:
            self._grant()

    def _grant(self) -> None:
        waiters = self.waiters
        while waiters:
            fut, needs_thread = waiters[0]
            if fut.done():  # expired or cancelled; its owner removes it too, harmlessly
                waiters.popleft()
                continue
            if not self.has_room(needs_thread):
                return
            waiters.popleft()
            self.inflight += 1
            if needs_thread:
                self.threads_busy += 1
            fut.set_result(True)

    def observe(self, operation: str, seconds: float) -> None:
        """Fold a successful call's duration into the operation's service-time estimate."""
        estimates = self.estimates
        old = estimates.get(operation)
        estimates[operation] = seconds if old is None else old + (seconds - old) * _ESTIMATE_WEIGHT

    # -- refusing ----------------------------------------------------------------------------

    def saturated(self, needs_thread: bool) -> SaturatedError:
        """The error for a refused call, counted for the throttled log line."""
        if needs_thread and self.threads_busy >= self.max_threads:
            what = f"all {self.max_threads} of its threads busy"
        else:
            what = f"{self.inflight} calls in flight (limit {self.max_concurrency})"
        message = f"service saturated: {self.label} has {what}; retry later"
        self._shed += 1
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY:
            since = f" in the last {now - self._last_log:.1f}s" if self._last_log else ""
            _log.warning("shed %d call(s)%s: %s", self._shed, since, message)
            self._shed = 0
            self._last_log = now
        return SaturatedError(message)

    # -- threads -----------------------------------------------------------------------------

    def run_in_thread(self, fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> asyncio.Future[Any]:
        """Run ``fn(**kwargs)`` on this connector's own threads; the caller holds a thread slot.

        The slot is given back when the function returns, not when the awaiting call ends: a
        call cancelled by its deadline still occupies its thread until the blocking code is done.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        executor = self._executor
        if executor is None:
            executor = self._executor = self._make_executor(self.max_threads)
        # copy_context keeps contextvars (log fields) visible inside the thread.
        executor.submit(self._work, loop, fut, contextvars.copy_context(), fn, kwargs)
        return fut

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[Any],
        ctx: contextvars.Context,
        fn: Callable[..., Any],
        kwargs: Mapping[str, Any],
    ) -> None:
        try:
            result, error = ctx.run(fn, **kwargs), None
        except BaseException as exc:
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(self._thread_done, fut, result, error)
        except RuntimeError:  # the loop is closed: the service is gone, nobody is waiting
            pass

    def _thread_done(self, fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self.threads_busy -= 1
        if not fut.done():
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)
        if self.waiters:
            self._grant()

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)
