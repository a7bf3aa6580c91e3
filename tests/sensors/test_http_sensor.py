"""HttpSensor over gRPC, with templates our flytekit-side HttpSensor serialized, against a real HTTP server."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service import ConnectorRegistry, RegistryError
from sensors.http_sensor import HttpSensor
from tests.http_server import Answer, HttpTestServer
from tests.utils import FIXTURES, Running, create_task, delete_task, free_port, get_task, run_service

Phase = execution_pb2.TaskExecution
FLYTEKIT = FIXTURES / "flytekit"
PLACEHOLDER = "http://placeholder.invalid"
SENSOR = "sensors.http_sensor:HttpSensor"
ALLOW_LOCAL = {"allowed_hosts": ["127.0.0.1"], "allowed_schemes": ["http"]}

get = functools.partial(get_task, name="sensor")


def sensor_task(
    stem: str, base: str, input_url: str | None = None, **config: Any
) -> tuple[tasks_pb2.TaskTemplate, literals_pb2.LiteralMap]:
    """The flytekit-made template and inputs for ``stem``, aimed at ``base``; ``config`` overrides
    sensor_config keys (None deletes one), ``input_url`` replaces the input ``url``."""
    template = tasks_pb2.TaskTemplate.FromString((FLYTEKIT / f"{stem}_template.pb").read_bytes())
    sensor_config = template.custom["sensor_config"]
    if "url" in sensor_config:
        sensor_config["url"] = str(sensor_config["url"]).replace(PLACEHOLDER, base)
    for key, value in config.items():
        if value is None:
            del sensor_config[key]
        else:
            sensor_config[key] = value
    inputs = literals_pb2.LiteralMap.FromString((FLYTEKIT / f"{stem}_inputs.pb").read_bytes())
    union = inputs.literals["url"].scalar.union.value.scalar
    if union.HasField("primitive"):
        assert union.primitive.string_value.startswith(PLACEHOLDER)
        union.primitive.string_value = input_url or union.primitive.string_value.replace(PLACEHOLDER, base)
    return template, inputs


async def unavailable(svc: Running, meta: bytes) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get(svc, meta)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    return err.value.details() or ""


async def invalid(svc: Running, template: Any, inputs: Any) -> str:
    """A task that can never succeed is refused by CreateTask, not on every poll."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create_task(svc, template, inputs)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return err.value.details() or ""


def sensor_of(svc: Running) -> HttpSensor:
    sensor = svc.service.registry.sensors()["HttpSensor"]
    assert isinstance(sensor, HttpSensor)
    return sensor


@pytest.fixture
async def svc() -> AsyncIterator[Running]:
    async with run_service((SENSOR,), entry_points=False, plugins={"http_sensor": ALLOW_LOCAL}) as running:
        yield running


# -- done when the URL answers as expected -------------------------------------------------------


async def test_expected_status_after_a_few_polls(svc: Running, server: HttpTestServer) -> None:
    server.route(
        "/health", Answer(status=503, body="starting"), Answer(status=404), Answer(status=200, body="all ready")
    )
    meta = await create_task(svc, *sensor_task("http_sensor", server.base))
    assert server.requests == []  # CreateTask does not poke
    assert (await get(svc, meta)).phase == Phase.RUNNING
    assert (await get(svc, meta)).phase == Phase.RUNNING
    done = await get(svc, meta)
    assert done.phase == Phase.SUCCEEDED
    assert "HttpSensor" in done.message
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/health")] * 3
    await delete_task(svc, meta, "sensor")


async def test_any_expected_status_and_the_body_must_contain(svc: Running, server: HttpTestServer) -> None:
    # flytekit's template says expected_status [200, 204], body_contains "ready".
    server.route("/health", Answer(status=200, body="starting up"), Answer(status=200, body="ready now"))
    meta = await create_task(svc, *sensor_task("http_sensor", server.base))
    assert (await get(svc, meta)).phase == Phase.RUNNING  # 200, but not "ready" yet
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED

    template, inputs = sensor_task("http_sensor", server.base, body_contains=None)
    server.route("/health", Answer(status=204))
    assert (await get(svc, await create_task(svc, template, inputs))).phase == Phase.SUCCEEDED


async def test_url_headers_and_regex_from_sensor_config(
    svc: Running, server: HttpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.route("/jobs/7", Answer(json={"state": "running"}), Answer(json={"state": "done", "id": 7}))
    meta = await create_task(svc, *sensor_task("http_sensor_config", server.base))  # input url is None
    assert (await get(svc, meta)).phase == Phase.RUNNING
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED
    assert [r.headers["x-api-key"] for r in server.of("/jobs/7")] == ["fixture-key-456"] * 2
    assert "fixture-key-456" not in caplog.text  # a header value is never logged


async def test_the_input_url_wins_over_the_config(svc: Running, server: HttpTestServer) -> None:
    server.route("/other", Answer(json={"state": "succeeded"}))
    template, inputs = sensor_task("http_sensor_config", server.base)
    inputs = sensor_task("http_sensor", server.base, input_url=server.url("/other"))[1]
    assert (await get(svc, await create_task(svc, template, inputs))).phase == Phase.SUCCEEDED
    assert [r.path for r in server.requests] == ["/other"]


async def test_head_and_a_redirect_status(svc: Running, server: HttpTestServer) -> None:
    template, inputs = sensor_task(
        "http_sensor", server.base, input_url=server.url("/redirect?to=/json"), method="HEAD", body_contains=None
    )
    meta = await create_task(svc, template, inputs)
    assert (await get(svc, meta)).phase == Phase.RUNNING  # 302 is not followed, and not expected
    template.custom["sensor_config"]["expected_status"] = [302]
    meta = await create_task(svc, template, inputs)
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED
    assert [(r.method, r.path) for r in server.requests] == [("HEAD", "/redirect")] * 2


async def test_a_slow_server_is_not_yet(svc: Running, server: HttpTestServer) -> None:
    server.route("/health", Answer(body="ready", delay=3))
    template, inputs = sensor_task("http_sensor", server.base, request_timeout=0.3)
    resource = await get(svc, await create_task(svc, template, inputs))
    assert resource.phase == Phase.RUNNING


async def test_only_the_first_max_response_bytes_are_matched(server: HttpTestServer) -> None:
    plugins = {"http_sensor": {**ALLOW_LOCAL, "max_response_bytes": 1000}}
    async with run_service((SENSOR,), entry_points=False, plugins=plugins) as svc:
        server.route("/health", Answer(body="x" * 2000 + "ready"), Answer(body="ready" + "x" * 2000))
        meta = await create_task(svc, *sensor_task("http_sensor", server.base))
        assert (await get(svc, meta)).phase == Phase.RUNNING
        assert (await get(svc, meta)).phase == Phase.SUCCEEDED


# -- the server is down --------------------------------------------------------------------------


async def test_server_down_then_up(svc: Running, server: HttpTestServer) -> None:
    server.route("/health", Answer(body="ready"))
    meta = await create_task(svc, *sensor_task("http_sensor", server.base))
    server.stop()
    details = await unavailable(svc, meta)
    assert "HttpSensor: cannot reach GET" in details and f":{server.port}/health" in details
    assert "Connection refused" in details
    server.start()  # the same port
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED


async def test_a_connection_reset_is_unavailable(svc: Running, server: HttpTestServer) -> None:
    server.route("/health", Answer(hang_up=True), Answer(body="ready"))
    meta = await create_task(svc, *sensor_task("http_sensor", server.base))
    assert "closed the connection" in await unavailable(svc, meta)
    assert (await get(svc, meta)).phase == Phase.SUCCEEDED


async def test_unknown_host_is_unavailable(server: HttpTestServer) -> None:
    plugins = {"http_sensor": {"allowed_hosts": ["nonexistent.invalid"], "allowed_schemes": ["http"]}}
    async with run_service((SENSOR,), entry_points=False, plugins=plugins) as svc:
        template, inputs = sensor_task("http_sensor", server.base, input_url="http://nonexistent.invalid/health")
        details = await unavailable(svc, await create_task(svc, template, inputs))
        assert "cannot reach GET http://nonexistent.invalid/health" in details


async def test_port_closed_from_the_start(svc: Running) -> None:
    template, inputs = sensor_task("http_sensor", "", input_url=f"http://127.0.0.1:{free_port()}/health")
    assert "Connection refused" in await unavailable(svc, await create_task(svc, template, inputs))


# -- what may be polled --------------------------------------------------------------------------


async def test_a_host_not_allowed_is_refused_without_a_request(server: HttpTestServer) -> None:
    async with run_service((SENSOR,), entry_points=False, plugins={"http_sensor": ALLOW_LOCAL}) as svc:
        template, inputs = sensor_task("http_sensor", server.base, input_url=f"http://localhost:{server.port}/health")
        details = await invalid(svc, template, inputs)
        assert "plugins.http_sensor.allowed_hosts" in details
        assert sensor_of(svc).clients.made == 0
    async with run_service((SENSOR,), entry_points=False) as svc:  # defaults: nothing at all
        details = await invalid(svc, *sensor_task("http_sensor", server.base))
        assert "plugins.http_sensor.allowed_schemes" in details
    assert server.requests == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"method": "POST"}, "sensor_config.method must be GET or HEAD"),
        ({"body_matches": "(unclosed"}, "sensor_config.body_matches is not a valid regular expression"),
        ({"expected_status": [200, 42]}, "sensor_config.expected_status 42 is not an HTTP status"),
        ({"expected_status": "ok"}, "sensor_config.expected_status must be"),
        ({"expected_statuses": [200]}, "sensor_config.expected_statuses is not a setting"),
        ({"headers": {"X-A": "a\nb"}}, "sensor_config.headers.X-A contains a line break"),
        ({"request_timeout": 0}, "sensor_config.request_timeout"),
        ({"url": None}, "no URL"),
    ],
)
async def test_bad_config_names_the_field(
    svc: Running, server: HttpTestServer, config: dict[str, Any], message: str
) -> None:
    assert message in await invalid(svc, *sensor_task("http_sensor_config", server.base, **config))
    assert server.requests == []


async def test_a_url_input_that_is_not_http_is_refused(svc: Running, server: HttpTestServer) -> None:
    template, inputs = sensor_task("http_sensor", server.base, input_url="file:///etc/passwd")
    assert "plugins.http_sensor.allowed_schemes" in await invalid(svc, template, inputs)


async def test_operator_secret_headers(
    server: HttpTestServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("_FSEC_HTTP_SENSOR_TEST_TOKEN", "Bearer operator-secret-321")
    plugins = {
        "http_sensor": {
            **ALLOW_LOCAL,
            "secret_headers": {"127.0.0.1": {"Authorization": "http_sensor_test_token"}},
        }
    }
    server.route("/health", Answer(status=401), Answer(body="ready"))
    async with run_service((SENSOR,), entry_points=False, plugins=plugins) as svc:
        template, inputs = sensor_task("http_sensor", server.base, headers={"authorization": "from the task"})
        meta = await create_task(svc, template, inputs)
        assert (await get(svc, meta)).phase == Phase.RUNNING
        assert (await get(svc, meta)).phase == Phase.SUCCEEDED
    assert [r.header_values("authorization") for r in server.requests] == [["Bearer operator-secret-321"]] * 2
    assert "operator-secret-321" not in caplog.text


def test_bad_settings_stop_start_up_naming_the_field() -> None:
    with pytest.raises(RegistryError, match=r"plugins\.http_sensor\.allowed_hosts: .*not a host name"):
        ConnectorRegistry.build(
            [SENSOR], use_entry_points=False, plugin_settings={"http_sensor": {"allowed_hosts": "http://a.com"}}
        )


# -- the shared client ---------------------------------------------------------------------------


async def test_one_client_for_every_poke_closed_at_stop(server: HttpTestServer) -> None:
    server.route("/health", Answer(status=503), Answer(status=503), Answer(body="ready"))
    async with run_service((SENSOR,), entry_points=False, plugins={"http_sensor": ALLOW_LOCAL}) as svc:
        first = await create_task(svc, *sensor_task("http_sensor", server.base))
        second = await create_task(svc, *sensor_task("http_sensor", server.base))
        phases = [(await get(svc, meta)).phase for meta in (first, second, first)]
        assert phases == [Phase.RUNNING, Phase.RUNNING, Phase.SUCCEEDED]
        sensor = sensor_of(svc)
        assert sensor.clients.made == 1
        client = await sensor.clients.get()
    assert client.is_closed
    assert len({r.client_port for r in server.requests}) == 1  # one kept-alive connection
