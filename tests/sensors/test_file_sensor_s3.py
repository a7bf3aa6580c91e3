"""FileSensor on S3 through fsspec/s3fs, against moto's S3 server on loopback, driven by the
template real flytekit serializes for its own ``FileSensor``."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from flyteidl.core import execution_pb2

from tests.sensors.test_file_sensor import file_sensor
from tests.utils import ENV, Running, create_task, delete_task, free_port, get_task, run_service

pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")

Phase = execution_pb2.TaskExecution
get = functools.partial(get_task, name="sensor")
delete = functools.partial(delete_task, name="sensor")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    """moto's S3 API server as a real subprocess, so a test can stop and start it."""

    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**ENV, **CREDENTIALS},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.client().list_buckets()
                return
            except Exception:
                time.sleep(0.1)
        raise AssertionError("moto server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **_keys())


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def plugin_settings(endpoint: str) -> dict[str, Any]:
    """What an operator sets to point FileSensor at an S3-compatible endpoint."""
    return {
        "file_sensor": {
            "storage_options": {
                "key": "testing",
                "secret": "testing",
                "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                # Fail fast when the store is down instead of retrying inside one poke.
                "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1, "read_timeout": 2},
            }
        }
    }


@pytest.fixture
async def svc(s3: S3Server) -> AsyncIterator[Running]:
    async with run_service((), plugins=plugin_settings(s3.endpoint)) as running:
        yield running


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


async def test_waits_until_the_object_is_written(svc: Running, s3: S3Server, bucket: str) -> None:
    meta = await create_task(svc, *file_sensor(f"s3://{bucket}/daily/2024-01-01/_SUCCESS"))
    assert (await get(svc, meta)).phase == Phase.RUNNING
    s3.client().put_object(Bucket=bucket, Key="daily/2024-01-01/part-0.csv", Body=b"a,b\n")
    # A sibling appearing (which fills s3fs's listing cache for the prefix) is not the marker.
    assert (await get(svc, meta)).phase == Phase.RUNNING
    s3.client().put_object(Bucket=bucket, Key="daily/2024-01-01/_SUCCESS", Body=b"")
    done = await get(svc, meta)
    assert done.phase == Phase.SUCCEEDED
    await delete(svc, meta)


async def test_a_prefix_with_objects_counts_as_existing(svc: Running, s3: S3Server, bucket: str) -> None:
    meta = await create_task(svc, *file_sensor(f"s3://{bucket}/partition=7"))
    assert (await get(svc, meta)).phase == Phase.RUNNING
    s3.client().put_object(Bucket=bucket, Key="partition=7/data.parquet", Body=b"x")
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED


async def test_store_going_away_is_unavailable_and_polling_recovers(s3: S3Server) -> None:
    # Its own server, so stopping it does not disturb the other tests.
    own = S3Server(port=free_port())
    own.start()
    try:
        own.client().create_bucket(Bucket="flaky")
        async with run_service((), plugins=plugin_settings(own.endpoint)) as svc:
            meta = await create_task(svc, *file_sensor("s3://flaky/out/_SUCCESS"))
            assert (await get(svc, meta)).phase == Phase.RUNNING
            own.stop()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await get(svc, meta, timeout=20)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "cannot reach the store" in (err.value.details() or "")
            # moto keeps state in memory: the restarted store is empty, as after a real outage
            # the object may or may not be there; the sensor just resumes.
            await asyncio.to_thread(own.start)
            own.client().create_bucket(Bucket="flaky")
            assert (await get(svc, meta)).phase == Phase.RUNNING
            own.client().put_object(Bucket="flaky", Key="out/_SUCCESS", Body=b"")
            assert (await get(svc, meta)).phase == Phase.SUCCEEDED
    finally:
        own.stop()


async def test_s3_refused_when_the_operator_allows_only_local_files(s3: S3Server, bucket: str) -> None:
    settings = plugin_settings(s3.endpoint)
    settings["file_sensor"]["protocols"] = "file"
    async with run_service((), plugins=settings) as svc:
        with pytest.raises(grpc.aio.AioRpcError) as err:  # at CreateTask: it could never succeed
            await create_task(svc, *file_sensor(f"s3://{bucket}/x"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "s3:// paths are not allowed here (allowed: file)" in (err.value.details() or "")


def test_bad_file_sensor_settings_stop_start_up() -> None:
    from connector_service import ConnectorRegistry, RegistryError

    with pytest.raises(RegistryError, match=r"plugins\.file_sensor\.storage_option: not a setting of FileSensor"):
        ConnectorRegistry.build(plugin_settings={"file_sensor": {"storage_option": {}}})
