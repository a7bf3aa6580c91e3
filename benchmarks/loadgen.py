"""Load generator: one grpc.aio channel per process (or K), N concurrent coroutines, flyteidl stubs.

It runs as a worker process driven by ``run.py`` over stdin/stdout, one JSON object per line,
so it can stay connected while the orchestrator measures the server between two instants
of the system-wide monotonic clock:

    python benchmarks/loadgen.py --target 127.0.0.1:8000 [--sensor-module M] [--loop uvloop] [--channels K]
    -> {"event": "ready", "pid": ..., "loop": "uvloop"}
    <- {"cmd": "run", "op": "get_noop", "concurrency": 16, "t0": T0, "t1": T1, "timeout": 10}
       calls from receipt until T0 are warm-up; calls completing in [T0, T1] are measured
    <- {"cmd": "rate", "op": "get_noop", "rate": 1500, "t0": T0, "t1": T1, "timeout": 10}
       open loop: 1500 calls/s whatever the answers (at most 512 in flight)
    <- {"cmd": "count", "op": "get_noop", "concurrency": 128, "calls": 20000, "timeout": 10}
       exactly that many calls
    <- {"cmd": "once", "op": "get_slow", "concurrency": 128, "timeout": 30}
       one call per coroutine; prints {"event": "started"} once they are all in flight
    <- {"cmd": "burst", "op": "get_block2s", "calls": 2000, "t0": T0, "timeout": 10, "fast": 0.1}
       that many calls at once at T0; each call's status and latency, refusals split fast/slow
    <- {"cmd": "quit"}

With ``--channels K`` the process opens K channels, each with its own TCP connection (a local
subchannel pool: grpc otherwise shares one connection between a process's channels to the same
target), and every call goes to the next channel in turn.

Latencies are kept in a log histogram (1 % buckets) so that several workers' results merge.
Operations: see ``OPS``. A Create->Get->Delete cycle counts as one call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from flyteidl.admin import agent_pb2
from flyteidl.core import identifier_pb2, interface_pb2, literals_pb2, tasks_pb2, types_pb2
from flyteidl.service import agent_pb2_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

OPS = (
    "create_noop",
    "get_noop",
    "cycle_noop",
    "get_block",
    "get_sleep",
    "sync_echo",
    "list_agents",
    "get_sensor",
    "get_slow",
    "get_block2s",
    "health",
)
"""What each worker can drive; ``get_X`` polls a meta made by one CreateTask of task type ``bench_X``."""

BUCKET_RATIO = 1.01
_LOG_RATIO = math.log(BUCKET_RATIO)

Call = Callable[[], Awaitable[str | None]]
"""One RPC (or cycle): None when it returned OK, else the status code's name."""


def bucket(seconds: float) -> int:
    """Histogram bucket of a latency: 1 % wide, from 1 µs."""
    return int(math.log(max(seconds, 1e-6) * 1e6) / _LOG_RATIO)


def bucket_value(index: int) -> float:
    """Seconds at the middle of a bucket."""
    return float(BUCKET_RATIO ** (index + 0.5)) / 1e6


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram of bucket -> count, in seconds."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bucket_value(index)
    return bucket_value(max(hist))


def _int_type() -> types_pb2.LiteralType:
    return types_pb2.LiteralType(simple=types_pb2.INTEGER)


def _template(task_type: str, custom: dict[str, Any] | None = None, echo: bool = False) -> tasks_pb2.TaskTemplate:
    template = tasks_pb2.TaskTemplate(
        id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.TASK, project="flytesnacks", domain="development", name=task_type, version="v1"
        ),
        type=task_type,
        task_type_version=0,
        metadata=tasks_pb2.TaskMetadata(runtime=tasks_pb2.RuntimeMetadata(type=tasks_pb2.RuntimeMetadata.FLYTE_SDK)),
    )
    if task_type != "sensor":
        template.interface.inputs.variables["x"].CopyFrom(interface_pb2.Variable(type=_int_type()))
    if echo:
        template.interface.outputs.variables["x"].CopyFrom(interface_pb2.Variable(type=_int_type()))
    if custom is not None:
        template.custom.CopyFrom(_struct(custom))
    return template


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _inputs(with_x: bool = True) -> literals_pb2.LiteralMap:
    inputs = literals_pb2.LiteralMap()
    if with_x:
        inputs.literals["x"].scalar.primitive.integer = 3
    return inputs


def _execution_metadata(name: str) -> agent_pb2.TaskExecutionMetadata:
    tid = identifier_pb2.TaskExecutionIdentifier(
        task_id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.TASK, project="flytesnacks", domain="development", name=name, version="v1"
        ),
        node_execution_id=identifier_pb2.NodeExecutionIdentifier(
            node_id="n0",
            execution_id=identifier_pb2.WorkflowExecutionIdentifier(
                project="flytesnacks", domain="development", name="abc123"
            ),
        ),
        retry_attempt=0,
    )
    return agent_pb2.TaskExecutionMetadata(task_execution_id=tid, namespace="flytesnacks-development")


def create_request(task_type: str, sensor_module: str) -> agent_pb2.CreateTaskRequest:
    if task_type == "sensor":
        custom = {"sensor_module": sensor_module, "sensor_name": "BenchSensor", "sensor_config": None, "inputs": None}
        template, inputs = _template("sensor", custom), _inputs(with_x=False)
    else:
        template, inputs = _template(task_type), _inputs()
    return agent_pb2.CreateTaskRequest(
        template=template,
        inputs=inputs,
        output_prefix="s3://my-bucket/metadata/abc123/n0/0",
        task_execution_metadata=_execution_metadata(task_type),
    )


def _category(task_type: str) -> agent_pb2.TaskCategory:
    return agent_pb2.TaskCategory(name=task_type, version=0)


class Worker:
    def __init__(self, channel: grpc.aio.Channel, sensor_module: str) -> None:
        self.async_stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        self.sync_stub = agent_pb2_grpc.SyncAgentServiceStub(channel)
        self.meta_stub = agent_pb2_grpc.AgentMetadataServiceStub(channel)
        self.health_stub = health_pb2_grpc.HealthStub(channel)
        self.sensor_module = sensor_module
        self._calls: dict[tuple[str, float], Call] = {}

    async def prepare(self, op: str, timeout: float) -> Call:
        """The call for ``op``; GetTask ops first get their resource_meta from one CreateTask."""
        key = (op, timeout)
        if key not in self._calls:
            self._calls[key] = await self._make(op, timeout)
        return self._calls[key]

    async def _make(self, op: str, timeout: float) -> Call:
        stub = self.async_stub
        if op == "health":
            check = health_pb2.HealthCheckRequest(service="")
            return _guard(lambda: stub_call(self.health_stub.Check, check, timeout))
        if op == "list_agents":
            list_request = agent_pb2.ListAgentsRequest()
            return _guard(lambda: stub_call(self.meta_stub.ListAgents, list_request, timeout))
        if op == "sync_echo":
            template = _template("bench_echo", echo=True)
            header = agent_pb2.ExecuteTaskSyncRequest(
                header=agent_pb2.CreateRequestHeader(
                    template=template,
                    output_prefix="s3://my-bucket/metadata/abc123/n0/0",
                    task_execution_metadata=_execution_metadata("bench_echo"),
                )
            )
            body = agent_pb2.ExecuteTaskSyncRequest(inputs=_inputs())
            return _guard(lambda: self._execute_sync(header, body, timeout))
        kind, _, name = op.partition("_")
        task_type = "sensor" if name == "sensor" else f"bench_{name}"
        create = create_request(task_type, self.sensor_module)
        if kind == "create":
            return _guard(lambda: stub_call(stub.CreateTask, create, timeout))
        if kind == "cycle":
            return _guard(lambda: self._cycle(create, timeout))
        if kind != "get":
            raise ValueError(f"unknown op {op!r}")
        response = await stub.CreateTask(create, timeout=timeout)
        get = agent_pb2.GetTaskRequest(
            task_type=task_type,
            task_category=_category(task_type),
            resource_meta=response.resource_meta,
            output_prefix=create.output_prefix,
        )
        return _guard(lambda: stub_call(stub.GetTask, get, timeout))

    async def _cycle(self, create: agent_pb2.CreateTaskRequest, timeout: float) -> None:
        task_type = create.template.type
        response = await self.async_stub.CreateTask(create, timeout=timeout)
        meta = response.resource_meta
        await self.async_stub.GetTask(
            agent_pb2.GetTaskRequest(
                task_type=task_type, task_category=_category(task_type), resource_meta=meta, output_prefix="s3://x/y"
            ),
            timeout=timeout,
        )
        await self.async_stub.DeleteTask(
            agent_pb2.DeleteTaskRequest(task_type=task_type, task_category=_category(task_type), resource_meta=meta),
            timeout=timeout,
        )

    async def _execute_sync(
        self, header: agent_pb2.ExecuteTaskSyncRequest, body: agent_pb2.ExecuteTaskSyncRequest, timeout: float
    ) -> None:
        responses = [r async for r in self.sync_stub.ExecuteTaskSync(iter((header, body)), timeout=timeout)]
        if len(responses) != 1 or responses[0].WhichOneof("res") != "header":
            raise RuntimeError(f"ExecuteTaskSync: expected one header response, got {len(responses)} message(s)")

    # -- commands ----------------------------------------------------------------------------

    async def run(self, op: str, concurrency: int, t0: float, t1: float, timeout: float) -> dict[str, Any]:
        call = await self.prepare(op, timeout)
        hist: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        errors_total: Counter[str] = Counter()
        issued = 0

        async def loop() -> None:
            nonlocal issued
            monotonic = time.monotonic
            while (start := monotonic()) < t1:
                issued += 1
                code = await call()
                end = monotonic()
                if code is not None:
                    errors_total[code] += 1
                if t0 <= end <= t1:
                    if code is None:
                        hist[bucket(end - start)] += 1
                    else:
                        errors[code] += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return {
            "hist": sorted(hist.items()),
            "errors": dict(errors),
            "errors_total": dict(errors_total),
            "issued": issued,
        }

    async def rate(
        self,
        op: str,
        rate: float,
        t0: float,
        t1: float,
        timeout: float,
        max_inflight: int = 512,
        by_start: bool = False,
    ) -> dict[str, Any]:
        """Open loop: start ``rate`` calls per second whatever the answers, at most ``max_inflight`` at once.

        A call counts if it ended within [t0, t1] or, ``by_start``, if it started within it
        (then failed calls' latencies are kept too, by status).
        """
        call = await self.prepare(op, timeout)
        hist: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        error_hists: dict[str, Counter[int]] = {}
        monotonic = time.monotonic
        inflight = 0
        skipped = 0
        issued = 0
        tasks: set[asyncio.Task[None]] = set()

        async def one(start: float) -> None:
            nonlocal inflight
            code = await call()
            end = monotonic()
            inflight -= 1
            if t0 <= (start if by_start else end) <= t1:
                if code is None:
                    hist[bucket(end - start)] += 1
                else:
                    errors[code] += 1
                    if by_start:
                        error_hists.setdefault(code, Counter())[bucket(end - start)] += 1

        interval = 1.0 / rate
        due = monotonic()
        while (now := monotonic()) < t1:
            if now < due:
                await asyncio.sleep(due - now)
                continue
            due += interval
            if inflight >= max_inflight:
                skipped += t0 <= now
                continue
            inflight += 1
            issued += 1
            task = asyncio.ensure_future(one(now))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
        return {
            "hist": sorted(hist.items()),
            "errors": dict(errors),
            "error_hists": {code: sorted(h.items()) for code, h in error_hists.items()},
            "issued": issued,
            "skipped": skipped,
        }

    async def count(self, op: str, concurrency: int, calls: int, timeout: float) -> dict[str, Any]:
        call = await self.prepare(op, timeout)
        hist: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        tickets = iter(range(calls))

        async def loop() -> None:
            perf = time.perf_counter
            for _ in tickets:
                start = perf()
                code = await call()
                if code is None:
                    hist[bucket(perf() - start)] += 1
                else:
                    errors[code] += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        return {"hist": sorted(hist.items()), "errors": dict(errors), "elapsed": elapsed}

    async def once(self, op: str, concurrency: int, timeout: float) -> dict[str, Any]:
        call = await self.prepare(op, timeout)
        started = time.perf_counter()

        async def one() -> tuple[str | None, float]:
            code = await call()
            return code, time.perf_counter() - started

        tasks = [asyncio.ensure_future(one()) for _ in range(concurrency)]
        await asyncio.sleep(0.05)  # let every call go out before telling the orchestrator
        emit({"event": "started"})
        results = await asyncio.gather(*tasks)
        codes = Counter(code or "OK" for code, _ in results)
        return {
            "codes": dict(codes),
            "ok": codes.get("OK", 0),
            "failed": concurrency - codes.get("OK", 0),
            "last_return_s": max(t for _, t in results),
        }

    async def burst(self, op: str, calls: int, t0: float, timeout: float, fast: float = 0.1) -> dict[str, Any]:
        """``calls`` calls started together at ``t0`` (monotonic): how each ended, and how fast.

        A refusal (RESOURCE_EXHAUSTED) within ``fast`` seconds counts as shed fast, a later one
        as shed slow; latency is each call's own, from the moment its coroutine sent it.
        """
        call = await self.prepare(op, timeout)
        monotonic = time.monotonic

        async def one() -> tuple[str, float]:
            start = monotonic()
            code = await call()
            return code or "OK", monotonic() - start

        await asyncio.sleep(max(0.0, t0 - monotonic()))
        started = monotonic()
        results = await asyncio.gather(*(one() for _ in range(calls)))
        outcomes: Counter[str] = Counter()
        hists: dict[str, Counter[int]] = {}
        for code, seconds in results:
            if code == "RESOURCE_EXHAUSTED":
                code = "SHED_FAST" if seconds <= fast else "SHED_SLOW"
            outcomes[code] += 1
            hists.setdefault(code, Counter())[bucket(seconds)] += 1
        return {
            "outcomes": dict(outcomes),
            "hists": {code: sorted(h.items()) for code, h in hists.items()},
            "last_return_s": round(monotonic() - started, 3),
        }


class RoundRobin(Worker):
    """Several channels: ``prepare`` gives a call that uses the next channel each time."""

    def __init__(self, channels: list[grpc.aio.Channel], sensor_module: str) -> None:
        super().__init__(channels[0], sensor_module)
        self._workers = [Worker(c, sensor_module) for c in channels]

    async def prepare(self, op: str, timeout: float) -> Call:
        key = (op, timeout)
        if key not in self._calls:
            calls = [await w.prepare(op, timeout) for w in self._workers]
            turn = itertools.cycle(calls)
            self._calls[key] = lambda: next(turn)()
        return self._calls[key]


_ERROR_SAMPLES: dict[str, str] = {}
"""First message seen for each failing status code, to make failures explainable."""


async def stub_call(method: Any, request: Any, timeout: float) -> None:
    await method(request, timeout=timeout)


def _guard(make: Callable[[], Awaitable[None]]) -> Call:
    async def call() -> str | None:
        try:
            await make()
        except grpc.aio.AioRpcError as exc:
            code: str = exc.code().name
            _ERROR_SAMPLES.setdefault(code, (exc.details() or "")[:300])
            return code
        except Exception as exc:  # a malformed answer: count it, keep going
            name = f"EXC:{type(exc).__name__}"
            _ERROR_SAMPLES.setdefault(name, str(exc)[:300])
            return name
        return None

    return call


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(target: str, sensor_module: str, channels: int = 1) -> None:
    loop = asyncio.get_running_loop()
    # One connection per channel: without a local subchannel pool, channels share one.
    options = [("grpc.use_local_subchannel_pool", 1)] if channels > 1 else None
    async with contextlib.AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(grpc.aio.insecure_channel(target, options=options)) for _ in range(channels)
        ]
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in opened)), 15)
        worker = Worker(opened[0], sensor_module) if channels == 1 else RoundRobin(opened, sensor_module)
        emit({"event": "ready", "pid": os.getpid(), "loop": type(loop).__module__.split(".")[0]})
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            name = command.pop("cmd")
            if name == "quit":
                return
            try:
                if name == "run":
                    result = await worker.run(**command)
                elif name == "rate":
                    result = await worker.rate(**command)
                elif name == "count":
                    result = await worker.count(**command)
                elif name == "once":
                    result = await worker.once(**command)
                elif name == "burst":
                    result = await worker.burst(**command)
                else:
                    raise ValueError(f"unknown command {name!r}")
            except Exception as exc:  # report it; the orchestrator decides
                result = {"error": f"{type(exc).__name__}: {exc}"}
            emit({"event": "result", **result, "samples": dict(_ERROR_SAMPLES)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="flyteidl connector load generator (driven by run.py)")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--sensor-module", default="benchmarks.bench_connectors", help="sensor_module in templates")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--channels", type=int, default=1, help="channels (TCP connections) to open (default 1)")
    args = parser.parse_args(argv)
    coro = serve(args.target, args.sensor_module, max(1, args.channels))
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
