"""A bare grpc.aio server with the same three flyteidl services and constant answers: the floor.

It does what any Python gRPC server must do per call (receive, parse, dispatch, serialize,
send) and nothing else, so the daemon's cost above it is the cost of its own request path.
CreateTask returns a fixed resource_meta, GetTask a fixed SUCCEEDED Resource, DeleteTask an
empty answer, ExecuteTaskSync reads header and inputs and answers one header (the inputs as
outputs, like the echo connectors), ListAgents a fixed list. It also serves grpc.health.v1.

    python benchmarks/bare_server.py --port 8001 [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from flyteidl.service import agent_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

_META = b'{"job_id": "bench-job"}'
_AGENTS = (  # name, task type, sync: what the daemon lists for the benchmark and bundled connectors
    ("Bench Noop", "bench_noop", False),
    ("Bench Sleep", "bench_sleep", False),
    ("Bench Slow", "bench_slow", False),
    ("Bench Block", "bench_block", False),
    ("Bench Echo", "bench_echo", True),
    ("Echo Connector", "echo", True),
    ("Sensor", "sensor", False),
)


def _agents() -> list[agent_pb2.Agent]:
    return [
        agent_pb2.Agent(
            name=name,
            supported_task_types=[task_type],
            supported_task_categories=[agent_pb2.TaskCategory(name=task_type)],
            is_sync=sync,
        )
        for name, task_type, sync in _AGENTS
    ]


class AsyncService(agent_pb2_grpc.AsyncAgentServiceServicer):  # type: ignore[misc]
    _create = agent_pb2.CreateTaskResponse(resource_meta=_META)
    _get = agent_pb2.GetTaskResponse(resource=agent_pb2.Resource(phase=execution_pb2.TaskExecution.SUCCEEDED))
    _delete = agent_pb2.DeleteTaskResponse()

    async def CreateTask(self, request: Any, context: Any) -> agent_pb2.CreateTaskResponse:
        return self._create

    async def GetTask(self, request: Any, context: Any) -> agent_pb2.GetTaskResponse:
        return self._get

    async def DeleteTask(self, request: Any, context: Any) -> agent_pb2.DeleteTaskResponse:
        return self._delete


class SyncService(agent_pb2_grpc.SyncAgentServiceServicer):  # type: ignore[misc]
    async def ExecuteTaskSync(
        self, request_iterator: AsyncIterator[agent_pb2.ExecuteTaskSyncRequest], context: Any
    ) -> AsyncIterator[agent_pb2.ExecuteTaskSyncResponse]:
        inputs = None
        async for message in request_iterator:
            if message.WhichOneof("part") == "inputs":
                inputs = message.inputs
        resource = agent_pb2.Resource(phase=execution_pb2.TaskExecution.SUCCEEDED, outputs=inputs)
        yield agent_pb2.ExecuteTaskSyncResponse(header=agent_pb2.ExecuteTaskSyncResponseHeader(resource=resource))


class MetadataService(agent_pb2_grpc.AgentMetadataServiceServicer):  # type: ignore[misc]
    _list = agent_pb2.ListAgentsResponse(agents=_agents())

    async def ListAgents(self, request: Any, context: Any) -> agent_pb2.ListAgentsResponse:
        return self._list


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    agent_pb2_grpc.add_AsyncAgentServiceServicer_to_server(AsyncService(), server)
    agent_pb2_grpc.add_SyncAgentServiceServicer_to_server(SyncService(), server)
    agent_pb2_grpc.add_AgentMetadataServiceServicer_to_server(MetadataService(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    loop = asyncio.get_running_loop()
    print(f"bare server on {host}:{port}, loop {type(loop).__module__.split('.')[0]}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    _run(serve(args.host, args.port), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
