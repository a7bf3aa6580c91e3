"""``openai-batch`` and ``chatgpt`` over gRPC, against aimock (an OpenAI emulator) on loopback.

Templates and inputs are what flytekitplugins-openai 1.16.31 serializes
(``tests/fixtures/make_openai_fixtures.py``). aimock (``@copilotkit/aimock``, npm) runs as a real
process, installed by the tests (``tests/npm_tool.py``) and started from
``tests/fixtures/openai/aimock.json`` (its chat answers). Its batches move ``validating`` ->
``in_progress`` (first retrieve) -> the outcome that the ``X-AIMock-Batch-Outcome`` header
picked at create (second retrieve); the connector sends it through ``plugins.openai.default_headers``.
aimock keeps batches in memory, so "the API is gone, then back" goes through a relay the test
closes and reopens (``Outage``) rather than through a restart that would forget the batch.
Statuses the emulator cannot show (finalizing, a status OpenAI may add) are unit-tested in
``test_openai_states.py`` with OpenAI's documented batch object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import msgpack
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service import ConnectorRegistry, RegistryError, TaskCategory
from connector_service._envelope import open_meta
from connector_service._literals import python_to_literal_map, variable_types
from connectors.openai._api import redact
from connectors.openai._task import dict_literal
from tests import npm_tool
from tests.emulator import Emulator, Outage, free_port, http_ready
from tests.utils import (
    FIXTURES,
    Remote,
    Running,
    Stubs,
    create_task,
    delete_task,
    get_task,
    run_service,
    serve_process,
    sync_requests,
    task_execution_metadata,
)

Phase = execution_pb2.TaskExecution
OPENAI = FIXTURES / "openai"
PINS = ("@copilotkit/aimock@1.43.0",)
CONNECTORS = ("connectors.openai:OpenAIBatchConnector", "connectors.openai:ChatGPTConnector")
KEY = "sk-test-fixture-key-0123456789"
TERMINAL = {Phase.SUCCEEDED, Phase.FAILED, Phase.RETRYABLE_FAILED, Phase.ABORTED}


# --------------------------------------------------------------------------- emulator and service


AIMOCK = npm_tool.NpmTool("aimock", PINS, "llmock")
TOOLS = (AIMOCK,)
"""Installed before the tests run (``tests/conftest.py``)."""


@pytest.fixture(scope="session")
def llmock() -> Path:
    return AIMOCK.require()


def aimock_process(llmock: Path, log_dir: Path, env: dict[str, str] | None = None) -> Emulator:
    command = [str(llmock), "-p", "{port}", "-h", "127.0.0.1", "-f", str(OPENAI / "aimock.json"), "--log-level", "warn"]
    return Emulator("aimock", command, log_dir=log_dir, env=env, ready=http_ready("/health"))


@pytest.fixture(scope="session")
def aimock(llmock: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with aimock_process(llmock, tmp_path_factory.mktemp("aimock")) as emulator:
        yield emulator


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("_FSEC_OPENAI_API_KEY", KEY)
    monkeypatch.delenv("_FSEC_FLYTE_OPENAI_API_KEY", raising=False)
    return KEY


@contextlib.asynccontextmanager
async def openai_service(url: str, **settings: Any) -> AsyncIterator[Running]:
    plugins = {"base_url": f"{url}/v1", "teams": {"default": {}}, **settings}
    async with run_service(CONNECTORS, entry_points=False, plugins={"openai": plugins}) as svc:
        yield svc


def template(name: str) -> tasks_pb2.TaskTemplate:
    return tasks_pb2.TaskTemplate.FromString((OPENAI / f"{name}_template.pb").read_bytes())


async def upload(url: str, lines: int = 2) -> str:
    """A batch input file in the emulator (as the plugin's upload task makes it)."""
    content = "".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]},
            }
        )
        + "\n"
        for i in range(lines)
    )
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{url}/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", content.encode())}
        )
    response.raise_for_status()
    return str(response.json()["id"])


async def journal(url: str, **query: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/__aimock/journal", params={"limit": "1000", **query})
    response.raise_for_status()
    return list(response.json())


async def chaos(url: str, test_id: str, **rates: float) -> None:
    """Set (or with no rates, clear) aimock's fault rates for requests carrying ``X-Test-Id: test_id``."""
    async with httpx.AsyncClient(headers={"X-Test-Id": test_id}) as client:
        if rates:
            response = await client.post(f"{url}/__aimock/chaos", json=rates)
        else:
            response = await client.delete(f"{url}/__aimock/chaos")
    response.raise_for_status()


async def poll(
    svc: Stubs, meta: bytes, until: Callable[[agent_pb2.Resource], bool] = lambda r: r.phase in TERMINAL
) -> agent_pb2.Resource:
    deadline = time.monotonic() + 20
    while True:
        resource = await get_task(svc, meta, "openai-batch")
        if until(resource):
            return resource
        assert time.monotonic() < deadline, f"still {Phase.Phase.Name(resource.phase)}: {resource.message}"
        await asyncio.sleep(0.02)


def result_of(resource: agent_pb2.Resource) -> dict[str, Any]:
    literal = resource.outputs.literals["result"]
    assert literal.scalar.binary.tag == "msgpack"
    return dict(msgpack.unpackb(literal.scalar.binary.value))


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def chat(svc: Stubs, message: str, timeout: float = 10, tmpl: str = "chatgpt") -> agent_pb2.Resource:
    task = template(tmpl)
    inputs = python_to_literal_map({"message": message}, variable_types(task.interface.inputs))
    responses = [r async for r in svc.sync_stub.ExecuteTaskSync(iter(sync_requests(task, inputs)), timeout=timeout)]
    assert len(responses) == 1
    return responses[0].header.resource


# --------------------------------------------------------------------------- openai-batch


async def test_a_batch_completes_with_the_batch_as_its_result(
    aimock: Emulator, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    file_id = await upload(aimock.url, lines=3)
    async with openai_service(aimock.url) as svc:
        meta = await create_task(
            svc, template("batch"), {"input_file_id": file_id}, task_execution_metadata=task_execution_metadata()
        )
        fields = json.loads(open_meta(meta).meta)
        assert set(fields) == {"batch_id", "team", "organization"}  # no inputs, no key, no pickle
        assert (fields["team"], fields["organization"]) == ("default", "org-fixtures")
        assert file_id not in meta.decode() and KEY not in meta.decode()

        running = await get_task(svc, meta, "openai-batch")
        assert running.phase == Phase.RUNNING
        assert not running.HasField("outputs")  # the result is sent once, at the end
        assert [link.uri for link in running.log_links] == [f"https://platform.openai.com/batches/{fields['batch_id']}"]
        assert running.custom_info["status"] == "in_progress"

        done = await poll(svc, meta)
        assert done.phase == Phase.SUCCEEDED, done.message
        result = result_of(done)
        assert result["id"] == fields["batch_id"] and result["status"] == "completed"
        assert result["request_counts"] == {"total": 3, "completed": 3, "failed": 0}  # ints stay ints
        assert result["output_file_id"].startswith("file-")
        assert result["metadata"]["purpose"] == "fixtures"  # the task's config.metadata, sent as is
        assert result["input_file_id"] == file_id
        assert "3 of 3 requests completed" in done.message

    assert fields["batch_id"] in caplog.text and KEY not in caplog.text  # logged, but never the key
    calls = [c for c in await journal(aimock.url, service="batches") if fields["batch_id"] in c["path"]]
    assert calls and all(c["headers"].get("openai-organization") == "org-fixtures" for c in calls)


async def test_a_batch_without_config_gets_flytekits_defaults(aimock: Emulator, key: str) -> None:
    file_id = await upload(aimock.url)
    async with openai_service(aimock.url) as svc:
        meta = await create_task(svc, template("batch_default"), {"input_file_id": file_id})
        assert json.loads(open_meta(meta).meta)["organization"] == ""
        result = result_of(await poll(svc, meta))
    assert (result["endpoint"], result["completion_window"]) == ("/v1/chat/completions", "24h")
    assert "flyte_execution" not in (result.get("metadata") or {})  # no execution id: nothing to dedupe on


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ("failed", "Mock batch failure (X-AIMock-Batch-Outcome: failed): see error_file_id"),
        ("expired", "expired: not finished within its completion window"),
        ("cancelled", "was cancelled (cancelled)"),
    ],
)
async def test_a_batch_that_does_not_complete_fails_with_openais_message(
    aimock: Emulator, key: str, outcome: str, message: str
) -> None:
    file_id = await upload(aimock.url)
    async with openai_service(aimock.url, default_headers={"X-AIMock-Batch-Outcome": outcome}) as svc:
        meta = await create_task(svc, template("batch"), {"input_file_id": file_id})
        done = await poll(svc, meta)
    assert done.phase == Phase.FAILED
    assert message in done.message
    assert result_of(done)["status"] == outcome


async def test_delete_cancels_the_batch_and_is_idempotent(aimock: Emulator, key: str) -> None:
    file_id = await upload(aimock.url)
    async with openai_service(aimock.url) as svc:
        meta = await create_task(svc, template("batch"), {"input_file_id": file_id})
        assert (await get_task(svc, meta, "openai-batch")).phase == Phase.RUNNING
        await delete_task(svc, meta, "openai-batch")
        await delete_task(svc, meta, "openai-batch")  # still cancelling: asked again, fine
        cancelled = await get_task(svc, meta, "openai-batch")  # the emulator's next step: cancelled
        assert cancelled.phase == Phase.FAILED and "was cancelled (cancelled)" in cancelled.message
        assert result_of(cancelled)["status"] == "cancelled"
        await delete_task(svc, meta, "openai-batch")  # finished: nothing to cancel, still OK
        unknown = json.dumps({"batch_id": "batch_gone", "team": "default", "organization": ""}).encode()
        await delete_task(svc, unknown, "openai-batch")  # unknown: OK
        gone = await get_task(svc, unknown, "openai-batch")
        assert gone.phase == Phase.FAILED and "No such batch: batch_gone" in gone.message
    cancels = [c for c in await journal(aimock.url, service="batches") if c["path"].endswith("/cancel")]
    assert len([c for c in cancels if json.loads(open_meta(meta).meta)["batch_id"] in c["path"]]) == 3


async def test_a_retried_create_finds_the_batch_the_first_call_made(aimock: Emulator, key: str) -> None:
    file_id = await upload(aimock.url)
    attempt0 = task_execution_metadata(name="dedupe-run", retry=0)
    async with openai_service(aimock.url) as svc:
        first = await create_task(svc, template("batch"), {"input_file_id": file_id}, task_execution_metadata=attempt0)
        again = await create_task(svc, template("batch"), {"input_file_id": file_id}, task_execution_metadata=attempt0)
        retry = await create_task(
            svc,
            template("batch"),
            {"input_file_id": file_id},
            task_execution_metadata=task_execution_metadata(name="dedupe-run", retry=1),
        )
        async with openai_service(aimock.url, dedupe_recent_batches=0) as no_dedupe:
            other = await create_task(
                no_dedupe, template("batch"), {"input_file_id": file_id}, task_execution_metadata=attempt0
            )
    ids = [json.loads(open_meta(m).meta)["batch_id"] for m in (first, again, retry, other)]
    assert ids[0] == ids[1]  # propeller's retried CreateTask: the same batch, not a second one
    assert len({ids[0], ids[2], ids[3]}) == 3  # a new attempt is a new batch; the look-up can be turned off


async def test_the_api_gone_mid_task_is_unavailable_then_the_task_resumes(aimock: Emulator, key: str) -> None:
    file_id = await upload(aimock.url)
    outage = Outage(aimock.port)
    await outage.up()
    try:
        async with openai_service(outage.url) as svc:
            meta = await create_task(svc, template("batch"), {"input_file_id": file_id})
            assert (await get_task(svc, meta, "openai-batch")).phase == Phase.RUNNING
            await outage.down()
            for _ in range(2):
                error = await rpc_error(get_task(svc, meta, "openai-batch"))
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert "cannot reach OpenAI" in str(error.details())
            error = await rpc_error(delete_task(svc, meta, "openai-batch"))
            assert error.code() == grpc.StatusCode.UNAVAILABLE  # propeller retries the abort later
            error = await rpc_error(create_task(svc, template("batch"), {"input_file_id": file_id}))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            await outage.up()
            done = await poll(svc, meta)
            assert done.phase == Phase.SUCCEEDED, done.message
    finally:
        await outage.down()


async def test_throttling_and_server_errors_are_unavailable_then_the_task_resumes(aimock: Emulator, key: str) -> None:
    file_id = await upload(aimock.url)
    test_id = "openai-faults"
    async with openai_service(aimock.url, default_headers={"X-Test-Id": test_id}) as svc:
        meta = await create_task(svc, template("batch"), {"input_file_id": file_id})
        try:
            for rates, text in (
                ({"rateLimitRate": 1}, "answered 429: Chaos: rate limit exceeded"),
                ({"dropRate": 1}, "answered 500"),
                ({"disconnectRate": 1}, "dropped the connection"),
            ):
                await chaos(aimock.url, test_id, **rates)
                error = await rpc_error(get_task(svc, meta, "openai-batch"))
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                assert text in str(error.details())
        finally:
            await chaos(aimock.url, test_id)
        done = await poll(svc, meta)
        assert done.phase == Phase.SUCCEEDED, done.message


async def test_a_refused_key_is_failed_precondition_naming_the_secret(
    llmock: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_FSEC_OPENAI_API_KEY", "sk-wrong-key-000000000000")
    monkeypatch.setenv("_FSEC_OPENAI_KEY_ML", KEY)
    with aimock_process(llmock, tmp_path, env={"AIMOCK_API_KEYS": KEY}) as guarded:
        teams = {"default": {}, "ml": {"api_key_secret": "openai_key_ml"}}
        async with openai_service(guarded.url, teams=teams) as svc:
            request = (template("batch"), {"input_file_id": "file-x"})
            error = await rpc_error(create_task(svc, *request))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "refused the key (401) from secret 'openai_api_key'" in str(error.details())
            assert "sk-wrong" not in str(error.details())
            # Project "ml" has its own secret, which the emulator accepts.
            meta = await create_task(svc, *request, task_execution_metadata=task_execution_metadata(project="ml"))
            assert json.loads(open_meta(meta).meta)["team"] == "ml"


async def test_chat_with_a_refused_key_is_failed_precondition(
    llmock: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_FSEC_OPENAI_API_KEY", "sk-wrong-key-000000000000")
    with aimock_process(llmock, tmp_path, env={"AIMOCK_API_KEYS": KEY}) as guarded:
        async with openai_service(guarded.url) as svc:
            error = await rpc_error(chat(svc, "hello"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "secret 'openai_api_key'" in str(error.details())


async def test_flytekits_secret_name_is_accepted_and_a_missing_key_is_named(
    aimock: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("_FSEC_OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("CONNECTOR_SECRETS_DIR", "/nonexistent")
    monkeypatch.setenv("FLYTE_SECRETS_DEFAULT_DIR", "/nonexistent")
    async with openai_service(aimock.url) as svc:
        error = await rpc_error(create_task(svc, template("batch"), {"input_file_id": "file-x"}))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "openai_api_key" in str(error.details()) and "FLYTE_OPENAI_API_KEY" in str(error.details())
        monkeypatch.setenv("_FSEC_FLYTE_OPENAI_API_KEY", KEY)  # what flytekit's deployments have
        assert (await chat(svc, "hello")).phase == Phase.SUCCEEDED


async def test_a_team_without_an_entry_cannot_spend_a_key(aimock: Emulator, key: str) -> None:
    async with openai_service(aimock.url, teams={"ml/prod": {}}) as svc:
        error = await rpc_error(
            create_task(
                svc,
                template("batch"),
                {"input_file_id": "file-x"},
                task_execution_metadata=task_execution_metadata(project="web", domain="prod"),
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "plugins.openai.teams has no entry for project/domain web/prod" in str(error.details())
        error = await rpc_error(chat(svc, "hello"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda t: t.custom.update({"config": "24h"}), "custom.config must be an object"),
        (lambda t: t.custom["config"].update({"input_file_id": "x"}), "custom.config.input_file_id"),
        (lambda t: t.custom.update({"openai_organization": "org/../x"}), "custom.openai_organization"),
        (lambda t: t.custom["config"].update({"completion_window": "48h"}), "'completion_window' must be '24h'"),
    ],
)
async def test_a_bad_batch_template_is_invalid_argument_naming_the_field(
    aimock: Emulator, key: str, change: Callable[[tasks_pb2.TaskTemplate], None], field: str
) -> None:
    task = template("batch")
    change(task)
    async with openai_service(aimock.url) as svc:
        error = await rpc_error(create_task(svc, task, {"input_file_id": "file-x"}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(error.details())


async def test_a_pickled_flytekit_meta_or_a_forged_batch_id_is_refused(aimock: Emulator, key: str) -> None:
    async with openai_service(aimock.url) as svc:
        pickled = b"\x80\x05\x95\x00\x00\x00"
        error = await rpc_error(get_task(svc, pickled, "openai-batch"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        forged = json.dumps({"batch_id": "../files", "team": "default"}).encode()
        error = await rpc_error(get_task(svc, forged, "openai-batch"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no valid batch id" in str(error.details())


async def test_many_batches_at_once(aimock: Emulator, key: str) -> None:
    file_id = await upload(aimock.url)

    async def one(i: int) -> dict[str, Any]:
        meta = await create_task(
            svc,
            template("batch"),
            {"input_file_id": file_id},
            task_execution_metadata=task_execution_metadata(name=f"many-{i}"),
        )
        done = await poll(svc, meta)
        assert done.phase == Phase.SUCCEEDED, done.message
        return result_of(done)

    async with openai_service(aimock.url) as svc:
        results = await asyncio.gather(*(one(i) for i in range(30)))
        made = [e.connector.api.clients.made for e in svc.service.registry.connectors() if hasattr(e.connector, "api")]
    assert len({r["id"] for r in results}) == 30
    assert max(made) == 1  # one pooled client for every call


# --------------------------------------------------------------------------- chatgpt


async def test_chat_answers_o0_with_integer_parameters_sent_as_integers(aimock: Emulator, key: str) -> None:
    async with openai_service(aimock.url, default_headers={"X-Test-Id": "chat-ok"}) as svc:
        resource = await chat(svc, "hello")
    assert resource.phase == Phase.SUCCEEDED, resource.message
    assert resource.outputs.literals["o0"].scalar.primitive.string_value == "Hello from aimock"
    (sent,) = [
        c for c in await journal(aimock.url, path="/v1/chat/completions") if c["headers"].get("x-test-id") == "chat-ok"
    ]
    assert sent["body"]["max_tokens"] == 64 and isinstance(sent["body"]["max_tokens"], int)  # flytekit sends 64.0
    assert sent["body"]["messages"] == [{"role": "user", "content": "hello"}]
    assert sent["headers"]["openai-organization"] == "org-fixtures"


async def test_chat_keeps_a_system_prompt_from_the_config(aimock: Emulator, key: str) -> None:
    task = template("chatgpt")
    task.custom["chatgpt_config"].update({"messages": [{"role": "system", "content": "be brief"}]})
    inputs = python_to_literal_map({"message": "hello"}, variable_types(task.interface.inputs))
    async with openai_service(aimock.url, default_headers={"X-Test-Id": "chat-system"}) as svc:
        (response,) = [r async for r in svc.sync_stub.ExecuteTaskSync(iter(sync_requests(task, inputs)), timeout=10)]
    assert response.header.resource.phase == Phase.SUCCEEDED
    (sent,) = [
        c
        for c in await journal(aimock.url, path="/v1/chat/completions")
        if c["headers"].get("x-test-id") == "chat-system"
    ]
    assert [m["role"] for m in sent["body"]["messages"]] == ["system", "user"]


async def test_chat_is_bounded_by_the_callers_deadline(aimock: Emulator, key: str) -> None:
    async with openai_service(aimock.url) as svc:
        resource = await chat(svc, "slow", timeout=2)  # the emulator answers "slow" after 20 s
    assert resource.phase == Phase.RETRYABLE_FAILED
    assert "the caller's deadline" in resource.message


async def test_chat_is_bounded_by_chat_timeout(aimock: Emulator, key: str) -> None:
    async with openai_service(aimock.url, chat_timeout=0.5) as svc:
        resource = await chat(svc, "slow", timeout=10)
    assert resource.phase == Phase.RETRYABLE_FAILED
    assert "plugins.openai.chat_timeout" in resource.message


async def test_chat_throttled_is_unavailable_and_refused_is_failed(aimock: Emulator, key: str) -> None:
    async with openai_service(aimock.url) as svc:
        error = await rpc_error(chat(svc, "busy"))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "429: Rate limit reached for gpt-4o-mini" in str(error.details())
        refused = await chat(svc, "bad")
        assert refused.phase == Phase.FAILED
        assert "Invalid value for 'temperature'" in refused.message


async def test_chat_with_the_api_gone_is_unavailable(aimock: Emulator, key: str) -> None:
    async with openai_service(f"http://127.0.0.1:{free_port()}") as svc:
        error = await rpc_error(chat(svc, "hello"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach OpenAI" in str(error.details())


async def test_a_chat_template_without_a_model_is_invalid_argument(aimock: Emulator, key: str) -> None:
    task = template("chatgpt")
    del task.custom["chatgpt_config"]["model"]
    inputs = python_to_literal_map({"message": "hello"}, variable_types(task.interface.inputs))
    async with openai_service(aimock.url) as svc:
        error = await rpc_error(_drain(svc.sync_stub.ExecuteTaskSync(iter(sync_requests(task, inputs)), timeout=10)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "custom.chatgpt_config.model" in str(error.details())


async def _drain(stream: Any) -> list[Any]:
    return [r async for r in stream]


async def test_batches_and_chats_at_once_on_the_daemons_own_loop(aimock: Emulator, tmp_path: Path) -> None:
    """The daemon as operators run it (its own process, uvloop): 30 batches to completion and 30 chats at once."""
    file_id = await upload(aimock.url)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"plugins": {"openai": {"base_url": f"{aimock.url}/v1", "teams": {"default": {}}}}}))
    args = [arg for name in CONNECTORS for arg in ("--connector", name)]
    args += ["--no-entry-points", "--log-level", "error", "--no-access-log", "--config-file", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "_FSEC_OPENAI_API_KEY": KEY}

    async def batch(svc: Stubs, i: int) -> str:
        meta = await create_task(
            svc,
            template("batch"),
            {"input_file_id": file_id},
            task_execution_metadata=task_execution_metadata(name=f"load-{i}"),
        )
        done = await poll(svc, meta)
        assert done.phase == Phase.SUCCEEDED, done.message
        return str(result_of(done)["id"])

    async with serve_process(*args, env=env) as served:
        async with grpc.aio.insecure_channel(served.address) as channel:
            svc = Remote(channel)
            results = await asyncio.gather(
                *(batch(svc, i) for i in range(30)), *(chat(svc, "hello") for _ in range(30))
            )
    ids, answers = results[:30], results[30:]
    assert len(set(ids)) == 30
    assert {a.outputs.literals["o0"].scalar.primitive.string_value for a in answers} == {"Hello from aimock"}


# --------------------------------------------------------------------------- settings and outputs


def test_the_result_literal_is_the_one_flytekit_writes() -> None:
    batch = json.loads((OPENAI / "batch_result_dict.json").read_text())
    flytekit = literals_pb2.Literal.FromString((OPENAI / "batch_result_literal.pb").read_bytes())
    assert dict_literal(batch) == flytekit


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"base_url": "api.openai.com"}, "absolute http(s) URL"),
        ({"default_headers": {"Authorization": "Bearer x"}}, "set by the connector"),
        ({"teams": {"a/b/c": {}}}, "not 'default', 'project' or 'project/domain'"),
        ({"teams": {"default": {"organizations": {"org-a": "bad secret"}}}}, "is not a secret name"),
        ({"console_url": "https://example.com/"}, "{batch_id}"),
        ({"api_key": "sk-x"}, "not a setting"),
    ],
)
async def test_bad_settings_stop_start_up_naming_the_field(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError) as info:
        async with run_service(CONNECTORS, entry_points=False, plugins={"openai": settings}):
            pass
    assert message in str(info.value)


def test_the_entry_points_register_both_connectors() -> None:
    registry = ConnectorRegistry.build()
    assert not registry.lookup(TaskCategory("openai-batch", 0)).is_sync
    assert registry.lookup(TaskCategory("chatgpt", 0)).is_sync


def test_key_shaped_text_from_openai_never_reaches_a_message() -> None:
    # OpenAI's 401 text quotes part of the key; any message passed on is scrubbed as well.
    text = redact("Incorrect API key provided: sk-proj-abcd****************wxyz. You can find your API key at ...")
    assert "abcd" not in text and "wxyz" not in text and "sk-***" in text
