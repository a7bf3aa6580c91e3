"""The ``webhook`` connector over gRPC, with flytekit's own WebhookTask templates, against a real HTTP server.

The ``webhook_*_flytekit.json`` fixtures record what flytekit's WebhookConnector sent and
answered for the same templates and inputs (tests/fixtures/make_http_fixtures.py); the
service must send the same request and answer the same ``info`` output.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service import ConnectorRegistry, RegistryError
from connector_service._literals import literal_map_to_python
from connectors._http import parse_host_rule
from connectors.webhook import WebhookConnector, render
from tests.http_server import Answer, HttpTestServer
from tests.utils import ENV, FIXTURES, Running, free_port, run_cli, run_service, sync_requests

Phase = execution_pb2.TaskExecution
FLYTEKIT = FIXTURES / "flytekit"
PLACEHOLDER = "http://placeholder.invalid"
WEBHOOK = "connectors.webhook:WebhookConnector"
ALLOW_LOCAL = {"allowed_hosts": ["127.0.0.1"], "allowed_schemes": ["http"]}


# -- helpers -------------------------------------------------------------------------------------


def flytekit_record(stem: str) -> dict[str, Any]:
    return dict(json.loads((FLYTEKIT / f"webhook_{stem}_flytekit.json").read_text()))


def webhook_task(stem: str, base: str, **custom: Any) -> tuple[tasks_pb2.TaskTemplate, literals_pb2.LiteralMap]:
    """flytekit's template for ``webhook_<stem>`` aimed at ``base``, with ``custom`` fields overridden."""
    template = tasks_pb2.TaskTemplate.FromString((FLYTEKIT / f"webhook_{stem}_template.pb").read_bytes())
    url = template.custom["url"]
    assert isinstance(url, str) and url.startswith(PLACEHOLDER)
    template.custom["url"] = url.replace(PLACEHOLDER, base)
    for key, value in custom.items():
        if value is None:
            del template.custom[key]
        else:
            template.custom[key] = value
    inputs = literals_pb2.LiteralMap.FromString((FLYTEKIT / f"webhook_{stem}_inputs.pb").read_bytes())
    return template, inputs


async def execute(
    svc: Running, template: tasks_pb2.TaskTemplate, inputs: literals_pb2.LiteralMap, timeout: float = 10
) -> agent_pb2.Resource:
    """ExecuteTaskSync as propeller sends it: header, inputs, half-close; one answer."""
    responses = [r async for r in svc.sync_stub.ExecuteTaskSync(iter(sync_requests(template, inputs)), timeout=timeout)]
    assert len(responses) == 1
    return responses[0].header.resource


async def refused(svc: Running, template: tasks_pb2.TaskTemplate, inputs: literals_pb2.LiteralMap) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await execute(svc, template, inputs)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return err.value.details() or ""


def info_of(resource: agent_pb2.Resource) -> dict[str, Any]:
    return dict(literal_map_to_python(resource.outputs)["info"])


def connector_of(svc: Running) -> WebhookConnector:
    (connector,) = [e.connector for e in svc.service.registry.connectors() if isinstance(e.connector, WebhookConnector)]
    return connector


@pytest.fixture
async def hook() -> AsyncIterator[Running]:
    async with run_service((WEBHOOK,), entry_points=False, plugins={"webhook": ALLOW_LOCAL}) as running:
        yield running


# -- what flytekit's WebhookConnector does, the service does ---------------------------------------


async def test_get_sends_and_answers_what_flytekit_does(hook: Running, server: HttpTestServer) -> None:
    record = flytekit_record("get")
    server.route(record["request"]["path"], Answer(json=json.loads(record["answer"]["body"])))
    resource = await execute(hook, *webhook_task("get", server.base))

    assert resource.phase == Phase.SUCCEEDED, resource.message
    assert resource.message == record["resource"]["message"]
    (request,) = server.requests
    expected = record["request"]
    assert (request.method, request.path) == (expected["method"], expected["path"])  # URL templated: /items/42
    assert {k: request.headers.get(k) for k in expected["headers"]} == expected["headers"]  # header templated
    # Query from data, templated. flytekit sends the template's 5 as "5.0" (Struct numbers are
    # doubles); the service sends the integer the author wrote.
    assert expected["params"]["limit"] == ["5.0"]
    assert request.params == {**expected["params"], "limit": ["5"]}
    assert request.body == b""

    info = info_of(resource)
    flytekit_info = record["resource"]["info"]
    assert info["url"] == flytekit_info["url"].replace(PLACEHOLDER, server.base)
    assert {k: v for k, v in info.items() if k not in ("url", "response_json")} == {
        k: v for k, v in flytekit_info.items() if k != "url"
    }
    assert type(info["status_code"]) is int
    assert info["response_json"] == {"id": 42, "name": "widget", "price": 9.5, "tags": ["a", "b"]}  # parsed body


async def test_post_body_is_templated_value_by_value(hook: Running, server: HttpTestServer) -> None:
    record = flytekit_record("post")
    server.route(record["request"]["path"], Answer(body=record["answer"]["body"]))
    resource = await execute(hook, *webhook_task("post", server.base))

    assert resource.phase == Phase.SUCCEEDED, resource.message
    (request,) = server.requests
    expected = record["request"]
    assert (request.method, request.path) == ("POST", "/hooks/alerts")
    assert {k: request.headers.get(k) for k in expected["headers"]} == expected["headers"]
    assert request.headers["authorization"] == "Bearer fixture-token-123"  # "Bearer {inputs.token}"
    body = request.json()
    assert body == expected["json"]
    # A value that is exactly one placeholder keeps the input's type; others become text.
    assert type(body["count"]) is int and body["count"] == 3
    assert body["meta"] == {"flag": True, "note": "run 3: deploy done"}
    assert body["tags"] == ["a", "b"]
    assert body["static"] == [1, "two", None] and type(body["static"][0]) is int

    # The output, decoded, equals flytekit's, and is written the way flytekit writes a dict.
    assert info_of(resource) == record["resource"]["info"]
    ours = resource.outputs.literals["info"].scalar.binary
    theirs = literals_pb2.Literal.FromString(base64.b64decode(record["resource"]["info_literal_b64"])).scalar.binary
    assert (ours.tag, theirs.tag) == ("msgpack", "msgpack")


async def test_task_without_inputs_posts_an_empty_object(hook: Running, server: HttpTestServer) -> None:
    record = flytekit_record("plain")
    resource = await execute(hook, *webhook_task("plain", server.base))
    assert resource.phase == Phase.SUCCEEDED, resource.message
    (request,) = server.requests
    assert (request.method, request.path, request.json()) == ("POST", "/plain", record["request"]["json"])
    assert request.headers["content-type"] == "application/json"
    assert info_of(resource) == record["resource"]["info"]  # text body: no response_json


async def test_other_methods_and_a_task_without_outputs(hook: Running, server: HttpTestServer) -> None:
    template, inputs = webhook_task("plain", server.base + "/echo?x=1", method="PUT", data={"a": [1, 2]})
    resource = await execute(hook, template, inputs)
    assert info_of(resource)["response_json"]["method"] == "PUT"
    assert server.requests[-1].json() == {"a": [1, 2]}

    server.route("/items/42", Answer())
    template, inputs = webhook_task("get", server.base, method="DELETE")
    del template.interface.outputs.variables["info"]
    resource = await execute(hook, template, inputs)
    assert resource.phase == Phase.SUCCEEDED
    assert len(resource.outputs.literals) == 0
    assert server.requests[-1].method == "DELETE"
    assert server.requests[-1].params["q"] == ["hello world & more"]


# -- failures --------------------------------------------------------------------------------------


async def test_non_2xx_fails_with_the_status_not_the_body(hook: Running, server: HttpTestServer) -> None:
    server.route("/plain", Answer(status=503, body="detail that may hold a token"))
    resource = await execute(hook, *webhook_task("plain", server.base))
    assert resource.phase == Phase.FAILED
    assert "503" in resource.message and "Service Unavailable" in resource.message
    assert "token" not in resource.message
    assert len(resource.outputs.literals) == 0

    server.route("/plain", Answer(status=201, json={"created": 1}))
    resource = await execute(hook, *webhook_task("plain", server.base))
    assert resource.phase == Phase.SUCCEEDED  # any 2xx
    assert info_of(resource)["status_code"] == 201


async def test_a_host_not_allowed_is_refused_before_anything_is_sent(server: HttpTestServer) -> None:
    # "localhost" reaches the same server, but only 127.0.0.1 is allowed.
    async with run_service((WEBHOOK,), entry_points=False, plugins={"webhook": ALLOW_LOCAL}) as svc:
        details = await refused(svc, *webhook_task("plain", f"http://localhost:{server.port}"))
        assert "plugins.webhook.allowed_hosts" in details
        assert f"localhost:{server.port}" in details
        assert connector_of(svc).clients.made == 0  # not even a client was made
    async with run_service((WEBHOOK,), entry_points=False) as svc:  # the default allows nothing
        details = await refused(svc, *webhook_task("plain", server.base))
        assert "allowed_schemes" in details  # https only by default
        plugins = {"webhook": {"allowed_schemes": "http"}}
    async with run_service((WEBHOOK,), entry_points=False, plugins=plugins) as svc:
        assert "plugins.webhook.allowed_hosts" in await refused(svc, *webhook_task("plain", server.base))
    assert server.requests == []


@pytest.mark.parametrize(
    ("rule", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:{port}", True),
        ("127.0.0.1:1", False),
        ("*.0.0.1", False),  # wildcards match names, not addresses
        ("localhost", False),
    ],
)
async def test_allow_list_rules_over_the_wire(server: HttpTestServer, rule: str, allowed: bool) -> None:
    plugins = {"webhook": {"allowed_hosts": [rule.format(port=server.port)], "allowed_schemes": ["http"]}}
    async with run_service((WEBHOOK,), entry_points=False, plugins=plugins) as svc:
        template, inputs = webhook_task("plain", server.base)
        if allowed:
            assert (await execute(svc, template, inputs)).phase == Phase.SUCCEEDED
        else:
            await refused(svc, template, inputs)
    assert len(server.requests) == (1 if allowed else 0)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1@localhost:{port}/plain",  # user info, then the real host
        "http://localhost:{port}#@127.0.0.1/plain",
        "http://2130706433:{port}/plain",  # 127.0.0.1 as a number
        "http://[::ffff:127.0.0.1]:{port}/plain",
        "http://127.1:{port}/plain",
    ],
)
async def test_url_tricks_do_not_get_past_the_allow_list(hook: Running, server: HttpTestServer, url: str) -> None:
    details = await refused(hook, *webhook_task("plain", server.base, url=url.format(port=server.port)))
    assert "plugins.webhook.allowed_hosts" in details or "not a valid URL" in details
    assert server.requests == []


def test_host_rules() -> None:
    rule = parse_host_rule("*.Example.COM")
    assert rule.matches("api.example.com", 443) and rule.matches("a.b.example.com", 80)
    assert not rule.matches("example.com", 443) and not rule.matches("evilexample.com", 443)
    port_rule = parse_host_rule("api.example.com:8443")
    assert port_rule.matches("api.example.com", 8443) and not port_rule.matches("api.example.com", 443)
    assert parse_host_rule("[::1]:8080").matches("::1", 8080)
    for bad in ("*", "https://a.com", "a.com/x", "a.com:0", "a.com:x", "*.com", "a.*.com", "user@a.com", "::1"):
        with pytest.raises(ValueError):
            parse_host_rule(bad)


async def test_redirects_are_not_followed_by_default(hook: Running, server: HttpTestServer) -> None:
    target = f"http://localhost:{server.port}/echo"
    template, inputs = webhook_task("plain", server.url(f"/redirect?to={target}"))
    resource = await execute(hook, template, inputs)
    assert resource.phase == Phase.FAILED
    assert "302" in resource.message and "plugins.webhook.follow_redirects is off" in resource.message
    assert [r.path for r in server.requests] == ["/redirect"]


async def test_followed_redirects_are_checked_at_every_hop(server: HttpTestServer) -> None:
    plugins = {"webhook": {**ALLOW_LOCAL, "follow_redirects": True}}
    with HttpTestServer() as other:
        async with run_service((WEBHOOK,), entry_points=False, plugins=plugins) as svc:
            # To a host that is not allowed: refused, and the target never hears of it.
            evil = f"http://localhost:{other.port}/echo"
            details = await refused(svc, *webhook_task("plain", server.url(f"/redirect?to={evil}")))
            assert "plugins.webhook.allowed_hosts" in details and "Location" in details
            assert other.requests == []
            # To another allowed origin: followed, without the task's headers (they may hold a token).
            headers = {"Authorization": "Bearer {inputs.token}", "X-Api-Key": "{inputs.token}", "Accept": "text/plain"}
            template, inputs = webhook_task(
                "post", server.base, url=server.url(f"/redirect?to={other.url('/echo')}"), headers=headers
            )
            resource = await execute(svc, template, inputs)
            assert resource.phase == Phase.SUCCEEDED, resource.message
            assert info_of(resource)["response_json"]["method"] == "GET"  # 302: the body is not re-sent
            (hop,) = other.requests
            assert "authorization" not in hop.headers and "x-api-key" not in hop.headers
            assert hop.headers["accept"] == "text/plain"  # harmless headers are kept
            first = server.requests[-1]
            assert (first.headers["x-api-key"], first.headers["accept"]) == ("fixture-token-123", "text/plain")


async def test_server_gone_is_a_retryable_failure(hook: Running) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    resource = await execute(hook, *webhook_task("plain", closed))
    assert resource.phase == Phase.RETRYABLE_FAILED
    assert "could not connect" in resource.message and "refused" in resource.message.lower()
    assert "nothing was sent" in resource.message


async def test_a_connection_dropped_after_sending_is_a_final_failure(hook: Running, server: HttpTestServer) -> None:
    server.route("/plain", Answer(hang_up=True))
    resource = await execute(hook, *webhook_task("plain", server.base))
    assert resource.phase == Phase.FAILED  # the server may have acted on it: no automatic retry
    assert "failed after the request was sent" in resource.message
    assert len(server.requests) == 1


async def test_a_slow_server_fails_at_the_template_timeout(hook: Running, server: HttpTestServer) -> None:
    server.route("/plain", Answer(body="late", delay=5))
    resource = await execute(hook, *webhook_task("plain", server.base, timeout_sec=0.5))
    assert resource.phase == Phase.FAILED
    assert "did not answer within 0.5s (custom.timeout_sec)" in resource.message
    assert len(server.requests) == 1


async def test_the_callers_deadline_caps_the_timeout(hook: Running, server: HttpTestServer) -> None:
    server.route("/plain", Answer(body="late", delay=5))
    template, inputs = webhook_task("plain", server.base)  # flytekit's default: 10 s
    resource = await execute(hook, template, inputs, timeout=1.5)  # answered, not DEADLINE_EXCEEDED
    assert resource.phase == Phase.FAILED
    assert "(the caller's deadline)" in resource.message


@pytest.mark.parametrize("path", ["/big?bytes=5000", "/chunked?bytes=5000"])
async def test_a_response_over_max_response_bytes_fails(server: HttpTestServer, path: str) -> None:
    plugins = {"webhook": {**ALLOW_LOCAL, "max_response_bytes": 4096}}
    async with run_service((WEBHOOK,), entry_points=False, plugins=plugins) as svc:
        resource = await execute(svc, *webhook_task("get", server.base, url=server.url(path)))
        assert resource.phase == Phase.FAILED
        assert "larger than 4096 bytes (plugins.webhook.max_response_bytes)" in resource.message
        small = path.replace("5000", "4096")
        resource = await execute(svc, *webhook_task("get", server.base, url=server.url(small)))
        assert resource.phase == Phase.SUCCEEDED
        assert len(info_of(resource)["response_data"]) == 4096


@pytest.mark.parametrize(
    ("custom", "field"),
    [
        ({"url": None}, "custom.url is missing"),
        ({"method": "FETCH"}, "custom.method 'FETCH' is not supported"),
        ({"timeout_sec": -1}, "custom.timeout_sec"),
        ({"headers": {"X-A": "{inputs.nope}"}}, "custom.headers.X-A uses {inputs.nope}"),
        ({"data": {"q": "{inputs.q.__class__}"}}, "custom.data.q: only {inputs.NAME} placeholders"),
        ({"data": {"q": "{inputs.q[0]}"}}, "custom.data.q: only {inputs.NAME} placeholders"),
        ({"data": {"q": "{inputs.q!r:>10}"}}, "custom.data.q: only {inputs.NAME} placeholders"),
        ({"data": {"q": "{secrets.token}"}}, "secret_headers"),
        ({"headers": {"X-A": "a\r\nX-Injected: 1"}}, "custom.headers.X-A contains a line break"),
        ({"headers": {"X-A": "caf\u00e9\u0001"}}, "custom.headers.X-A must be printable ASCII"),
        ({"headers": {"X A": "1"}}, "custom.headers has an invalid header name 'X A'"),
        ({"url": "{inputs.q}"}, "custom.url must be an absolute http(s) URL"),
        ({"url": "http://[::1"}, "custom.url is not a valid URL"),
    ],
)
async def test_bad_config_is_refused_naming_the_field(
    hook: Running, server: HttpTestServer, custom: dict[str, Any], field: str
) -> None:
    details = await refused(hook, *webhook_task("get", server.base, **custom))
    assert field in details
    assert server.requests == []


async def test_an_output_the_connector_does_not_produce_is_refused_before_sending(
    hook: Running, server: HttpTestServer
) -> None:
    template, inputs = webhook_task("plain", server.base)
    template.interface.outputs.variables["result"].CopyFrom(template.interface.outputs.variables["info"])
    assert "result" in await refused(hook, template, inputs)
    assert server.requests == []


def test_render_leaves_other_braces_alone() -> None:
    inputs = {"n": 3, "s": "x"}
    assert render('{"a": {inputs.n}} {x} {inputs}', inputs, "f") == '{"a": 3} {x} {inputs}'
    assert render(["{inputs.n}", {"k": "{inputs.s}{inputs.s}"}], inputs, "f") == [3, {"k": "xx"}]


# -- the shared client -----------------------------------------------------------------------------


async def test_one_client_is_reused_and_closed_at_stop(server: HttpTestServer) -> None:
    async with run_service((WEBHOOK,), entry_points=False, plugins={"webhook": ALLOW_LOCAL}) as svc:
        for _ in range(3):
            assert (await execute(svc, *webhook_task("plain", server.base))).phase == Phase.SUCCEEDED
        connector = connector_of(svc)
        assert connector.clients.made == 1
        client = await connector.clients.get()
        assert not client.is_closed
    assert client.is_closed  # closed by the service's stop
    assert len({r.client_port for r in server.requests}) == 1  # one kept-alive connection for all three


async def test_cookies_do_not_leak_from_one_task_to_the_next(hook: Running, server: HttpTestServer) -> None:
    server.route("/plain", Answer(body="", headers={"Set-Cookie": "session=abc; Path=/"}))
    await execute(hook, *webhook_task("plain", server.base))
    await execute(hook, *webhook_task("plain", server.base))
    assert [r.headers.get("cookie") for r in server.requests] == [None, None]


# -- secrets ---------------------------------------------------------------------------------------


async def test_header_values_and_queries_never_reach_logs(
    hook: Running, server: HttpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await execute(hook, *webhook_task("post", server.base))
    server.route("/hooks/alerts", Answer(status=500, body="boom"))
    failed = await execute(hook, *webhook_task("post", server.base))
    template, inputs = webhook_task("get", server.base)
    await execute(hook, template, inputs)
    closed = await execute(hook, *webhook_task("post", f"http://127.0.0.1:{free_port()}"))
    assert server.requests[0].headers["authorization"] == "Bearer fixture-token-123"
    assert "/hooks/alerts" in caplog.text  # the URL's path is logged...
    for secret in ("fixture-token-123", "hello", "req-r-1"):  # ...never a header value or the query
        assert secret not in caplog.text
        assert secret not in failed.message and secret not in closed.message


async def test_operator_secret_headers_go_to_their_host_only(
    server: HttpTestServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("_FSEC_WEBHOOK_TEST_KEY", "operator-secret-789")
    plugins = {
        "webhook": {
            "allowed_hosts": ["127.0.0.1", "localhost"],
            "allowed_schemes": ["http"],
            "secret_headers": {"127.0.0.1": {"X-Api-Key": "webhook_test_key"}},
        }
    }
    async with run_service((WEBHOOK,), entry_points=False, plugins=plugins) as svc:
        # The task's own X-Api-Key cannot override the operator's.
        template, inputs = webhook_task("plain", server.base, headers={"x-api-key": "from-the-task"})
        assert (await execute(svc, template, inputs)).phase == Phase.SUCCEEDED
        assert (await execute(svc, *webhook_task("plain", f"http://localhost:{server.port}"))).phase == Phase.SUCCEEDED
    assert [r.header_values("x-api-key") for r in server.requests] == [["operator-secret-789"], []]
    assert "operator-secret-789" not in caplog.text


# -- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"allowed_hosts": "https://api.example.com/"}, r"plugins\.webhook\.allowed_hosts: .*not a host name"),
        ({"allowed_hosts": "*"}, r"plugins\.webhook\.allowed_hosts: .*'\*' is allowed only"),
        ({"allowed_hosts": "a.com:99999"}, r"plugins\.webhook\.allowed_hosts: .*port"),
        ({"allowed_schemes": "ftp"}, r"plugins\.webhook\.allowed_schemes: .*only 'http' and 'https'"),
        ({"max_response_bytes": 0}, r"plugins\.webhook\.max_response_bytes"),
        ({"secret_headers": {"a.com/x": {"X-K": "k"}}}, r"plugins\.webhook\.secret_headers"),
        ({"allowed_host": "a.com"}, r"plugins\.webhook\.allowed_host: not a setting"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_field(values: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        ConnectorRegistry.build([WEBHOOK], use_entry_points=False, plugin_settings={"webhook": values})


def test_settings_from_env_and_a_bad_env_value_stops_the_process() -> None:
    env = {**ENV, "CONNECTOR_PLUGINS__WEBHOOK__ALLOWED_HOSTS": "a.example.com, *.b.example.com:8443"}
    registry = ConnectorRegistry.build([WEBHOOK], use_entry_points=False, plugin_settings={"webhook": {}})
    assert registry  # defaults are valid
    good = run_cli("list", "--connector", WEBHOOK, "--no-entry-points", env=env)
    assert good.returncode == 0, good.stderr
    env["CONNECTOR_PLUGINS__WEBHOOK__ALLOWED_HOSTS"] = "https://a.example.com"
    bad = run_cli("serve", "--port", "0", "--metrics-port", "0", "--connector", WEBHOOK, "--no-entry-points", env=env)
    assert bad.returncode != 0
    assert "plugins.webhook.allowed_hosts" in bad.stderr
