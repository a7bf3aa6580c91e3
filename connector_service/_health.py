"""grpc.health.v1 with ``List``, which grpcio-health-checking's servicer leaves unimplemented.

Without it, ``grpc_health_probe``-style tools and operators asking "what does this pod
serve?" get UNIMPLEMENTED and the server logs a traceback for every such call.
"""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health, health_pb2

__all__ = ["HealthServicer", "MAX_LISTED"]

MAX_LISTED = 100
"""The health protocol asks servers to answer RESOURCE_EXHAUSTED past a bound they choose."""


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> health_pb2.HealthListResponse:
        statuses = dict(self._server_status)  # a snapshot: set() may change it while we answer
        if len(statuses) > MAX_LISTED:
            import grpc

            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{len(statuses)} health entries, more than the {MAX_LISTED} List answers; use Check per service",
            )
        response = health_pb2.HealthListResponse()
        for name, status in statuses.items():
            response.statuses[name].status = status
        return response
