"""The ``slurm`` and ``slurm_fn`` connectors over gRPC, against a real Slurm cluster, locally and over SSH.

Templates are what flytekit + flytekitplugins-slurm 1.16.31 serialize (``tests/fixtures/
make_slurm_fixtures.py``); the cluster (munged, slurmctld, slurmd) and sshd are real processes
started once per session by ``slurm_cluster.py``. Job states that the cluster cannot produce on
demand (TIMEOUT needs minutes, NODE_FAIL a dying node...) are covered through real
``scontrol -o`` lines captured from it, with the state swapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service import RegistryError
from connector_service._literals import literal_map_to_python, variable_types
from connector_service.plugins import PluginSettingsError
from connector_service.testing import _variables
from connectors.slurm import _commands
from connectors.slurm.settings import parse_host_entry
from connectors.slurm.states import KNOWN_STATES, job_status, phase_of
from tests.connectors.flytekit_venv import BUILD_TIMEOUT as FLYTEKIT_BUILD_TIMEOUT
from tests.connectors.flytekit_venv import TOOL, flytekit_venv, require_venv  # noqa: F401
from tests.connectors.slurm_cluster import CAPTURED, SlurmCluster, SSHServer, slurm_cluster, sshd  # noqa: F401
from tests.utils import FIXTURES, Remote, Running, Stubs, create_task, delete_task, get_task, run_service, serve_process

TOOLS = (TOOL,)
"""Built before the tests run (``tests/conftest.py``)."""

Phase = execution_pb2.TaskExecution
FLYTEKIT = FIXTURES / "flytekit"
CONNECTORS = ("connectors.slurm:SlurmScriptConnector", "connectors.slurm:SlurmFunctionConnector")
TERMINAL = {Phase.SUCCEEDED, Phase.FAILED, Phase.RETRYABLE_FAILED, Phase.ABORTED}


# --------------------------------------------------------------------------- helpers


def flytekit_template(name: str) -> tasks_pb2.TaskTemplate:
    return tasks_pb2.TaskTemplate.FromString((FLYTEKIT / f"slurm_{name}_template.pb").read_bytes())


@dataclass
class Site:
    """Where the tests submit: this machine (``local``) or the loopback sshd (``ssh``)."""

    kind: str
    host: str
    plugins: dict[str, Any]
    cluster: SlurmCluster
    work: Path
    server: SSHServer | None = None

    def template(self, name: str, outputs: dict[str, Any] | None = None) -> tasks_pb2.TaskTemplate:
        """The flytekit fixture, naming this site's host, optionally declaring outputs."""
        template = flytekit_template(name)
        template.custom["ssh_config"]["host"] = self.host
        if outputs:
            template.interface.outputs.CopyFrom(_variables(outputs))
        return template

    @contextlib.asynccontextmanager
    async def service(self, **plugin_changes: Any) -> AsyncIterator[Running]:
        plugins = {**self.plugins, **plugin_changes}
        async with run_service(CONNECTORS, entry_points=False, plugins={"slurm": plugins}) as svc:
            yield svc

    def go(self, job_id: str) -> None:
        """Let a ``wait`` job finish."""
        (self.work / f"go-{job_id}").touch()


def local_site(cluster: SlurmCluster, work: Path) -> Site:
    plugins = {"local_hosts": ["localhost"], "env": cluster.env, "work_dir": str(work)}
    return Site("local", "localhost", plugins, cluster, work)


def ssh_site(cluster: SlurmCluster, server: SSHServer, work: Path) -> Site:
    plugins = {
        "allowed_hosts": [f"127.0.0.1:{server.port}"],
        "known_hosts": str(server.known_hosts),
        "username": server.user,
        "work_dir": str(work),
    }
    return Site("ssh", "127.0.0.1", plugins, cluster, work, server)


@pytest.fixture
def local(slurm_cluster: SlurmCluster, tmp_path: Path) -> Site:  # noqa: F811
    return local_site(slurm_cluster, tmp_path / "work")


@pytest.fixture
def ssh(
    slurm_cluster: SlurmCluster,  # noqa: F811
    sshd: SSHServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Site:
    monkeypatch.setenv("CONNECTOR_SECRETS_DIR", str(sshd.secrets))
    return ssh_site(slurm_cluster, sshd, tmp_path / "work")


@pytest.fixture(params=["local", "ssh"])
def site(request: pytest.FixtureRequest) -> Site:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


async def get(svc: Stubs, meta: bytes, task_type: str = "slurm") -> agent_pb2.Resource:
    return await get_task(svc, meta, task_type)


async def poll(
    svc: Stubs,
    meta: bytes,
    until: Callable[[agent_pb2.Resource], bool] = lambda r: r.phase in TERMINAL,
    task_type: str = "slurm",
    seconds: float = 20,
) -> agent_pb2.Resource:
    """GetTask every 0.1 s until ``until`` holds, as propeller would (only faster)."""
    deadline = time.monotonic() + seconds
    while True:
        resource = await get(svc, meta, task_type)
        if until(resource):
            return resource
        assert time.monotonic() < deadline, f"still {Phase.Phase.Name(resource.phase)}: {resource.message}"
        await asyncio.sleep(0.1)


def job_id_of(resource: agent_pb2.Resource) -> str:
    return str(resource.custom_info["job_id"])


def outputs_of(resource: agent_pb2.Resource, template: tasks_pb2.TaskTemplate) -> dict[str, Any]:
    return literal_map_to_python(resource.outputs, variable_types(template.interface.outputs))


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def running(resource: agent_pb2.Resource) -> bool:
    return resource.phase == Phase.RUNNING


# --------------------------------------------------------------------------- end to end, both sites


async def test_script_task_runs_and_returns_its_declared_outputs(site: Site) -> None:
    template = site.template("shell_wait", outputs={"count": int, "label": str, "ratio": float})
    async with site.service(log_link_template="https://hpc.example/jobs/{host}/{job_id}?out={stdout}") as svc:
        meta = await create_task(svc, template)
        first = await get(svc, meta)
        # The job waits for its go file, so this answer cannot be terminal; it carries the links.
        assert first.phase in (Phase.QUEUED, Phase.RUNNING), first.message
        job_id = job_id_of(first)
        assert first.custom_info["state"] in ("PENDING", "RUNNING")
        assert first.log_links[0].uri.startswith(f"https://hpc.example/jobs/{site.host}/{job_id}?out=/")
        assert (await poll(svc, meta, running)).custom_info["state"] == "RUNNING"
        site.go(job_id)
        done = await poll(svc, meta)
        assert done.phase == Phase.SUCCEEDED, done.message
        assert outputs_of(done, template) == {"count": 3, "label": f"job {job_id}", "ratio": 0.5}
        assert f"Slurm job {job_id} COMPLETED" in done.message
        assert site.cluster.job(job_id)["JobState"] == "COMPLETED"
        await delete_task(svc, meta, "slurm")  # propeller never deletes a success, but it must be fine


async def test_jobs_fail_cancel_and_get_their_text_verbatim(site: Site) -> None:
    """Five jobs at once (Slurm schedules once a second, so one at a time would be slow)."""
    async with site.service() as svc:
        await asyncio.gather(
            failing_script(site, svc),
            cancelled_job(site, svc),
            shell_metacharacters(site, svc),
            batch_script_arguments(site, svc),
            stdin_script_arguments(site, svc),
            function_task_arguments(site, svc),
        )


async def failing_script(site: Site, svc: Running) -> None:
    meta = await create_task(svc, site.template("shell_fail"))
    done = await poll(svc, meta)
    assert done.phase == Phase.FAILED
    assert "FAILED (reason NonZeroExitCode), exit code 3" in done.message
    assert done.custom_info["exit_code"] == 3


async def cancelled_job(site: Site, svc: Running) -> None:
    """DeleteTask cancels a running job for real, and is fine again afterwards."""
    meta = await create_task(svc, site.template("shell_wait"))
    job_id = job_id_of(await poll(svc, meta, running))
    await delete_task(svc, meta, "slurm")
    deadline = time.monotonic() + 10
    while site.cluster.job(job_id)["JobState"] != "CANCELLED":
        assert time.monotonic() < deadline, site.cluster.job(job_id)["JobState"]
        await asyncio.sleep(0.1)
    after = await poll(svc, meta)
    assert after.phase == Phase.FAILED and "CANCELLED" in after.message
    await delete_task(svc, meta, "slurm")  # again: already cancelled


async def shell_metacharacters(site: Site, svc: Running) -> None:
    """sbatch options with shell syntax reach Slurm as plain text (over SSH too)."""
    pwned = site.work.parent / "pwned"
    template = site.template("shell_ok")
    sbatch = template.custom["sbatch_config"]
    sbatch["job-name"] = f"x; touch {pwned}-name"
    sbatch["comment"] = f"$(touch {pwned}-comment) `touch {pwned}-tick` 'q\" a=b"
    done = await poll(svc, await create_task(svc, template))
    assert done.phase == Phase.SUCCEEDED, done.message
    fields = site.cluster.job(job_id_of(done))
    assert fields["JobName"] == f"x; touch {pwned}-name"
    assert fields["Comment"] == f"$(touch {pwned}-comment) `touch {pwned}-tick` 'q\" a=b"
    assert not list(site.work.parent.glob("pwned*"))


async def batch_script_arguments(site: Site, svc: Running) -> None:
    """A SlurmTask's script already on the cluster gets batch_script_args verbatim."""
    script = site.work.parent / "job with space.sh"
    script.write_text(
        "#!/bin/bash\n"
        "python3 -c 'import json, os, sys; "
        'json.dump({"args": json.dumps(sys.argv[1:])}, open(os.environ["FLYTE_SLURM_OUTPUTS"], "w"))\' "$@"\n'
    )
    template = site.template("batch", outputs={"args": str})
    template.custom["batch_script_path"] = str(script)
    existed = Path("/tmp/pwned").exists()
    done = await poll(svc, await create_task(svc, template))
    assert done.phase == Phase.SUCCEEDED, done.message
    assert json.loads(outputs_of(done, template)["args"]) == ["two words", "$HOME", "it's", "; touch /tmp/pwned"]
    assert Path("/tmp/pwned").exists() == existed


async def stdin_script_arguments(site: Site, svc: Running) -> None:
    """A SlurmShellTask's script (any interpreter) gets batch_script_args verbatim, never through /dev/stdin."""
    template = site.template("shell_ok", outputs={"args": str})
    template.custom["script"] = (
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        'json.dump({{"args": json.dumps(sys.argv[1:])}}, open(os.environ["FLYTE_SLURM_OUTPUTS"], "w"))\n'
    )
    args = ["two words", "$HOME", "it's", "; touch /tmp/pwned", "-x"]
    template.custom["batch_script_args"] = args
    done = await poll(svc, await create_task(svc, template))
    assert done.phase == Phase.SUCCEEDED, done.message
    assert json.loads(outputs_of(done, template)["args"]) == args
    script = site.cluster.job(job_id_of(done))["Command"]
    assert script != "/dev/stdin" and not Path(script).exists()  # the wrapper's temporary copy is gone


async def function_task_arguments(site: Site, svc: Running) -> None:
    """The slurm_fn template, with a recording command in place of pyflyte-execute."""
    template = site.template("fn")
    record = site.work.parent / "argv.json"
    args = ["python3", "-c", "import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], 'w'))"]
    args += [str(record), "a b", "$HOME", "it's", "`id`", "{{ not a placeholder"]
    del template.container.args[:]
    template.container.args.extend(args)
    done = await poll(svc, await create_task(svc, template), task_type="slurm_fn")
    assert done.phase == Phase.SUCCEEDED, done.message
    assert len(done.outputs.literals) == 0  # pyflyte-execute writes a slurm_fn's outputs itself
    assert json.loads(record.read_text()) == args[4:]


async def test_a_job_the_controller_does_not_know(site: Site) -> None:
    meta = {
        "job_id": "987654",
        "host": site.host,
        "local": site.kind == "local",
        "username": site.plugins.get("username", ""),
    }
    async with site.service() as svc:
        resource = await get(svc, json.dumps(meta).encode())
        assert resource.phase == Phase.FAILED
        assert "Slurm job 987654 is unknown to the controller" in resource.message
        await delete_task(svc, json.dumps(meta).encode(), "slurm")  # unknown: fine


async def test_a_command_that_gives_no_answer_is_unavailable_not_a_refusal(site: Site, tmp_path: Path) -> None:
    """sbatch/scontrol killed by a signal, missing, or hanging: UNAVAILABLE (retried), never INVALID_ARGUMENT.

    Real stand-in commands on the PATH the connector passes (``plugins.slurm.env``), with and
    without script arguments (directly, and through the stdin wrapper's shell).
    """
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("sbatch", "scontrol"):
        (fake / name).symlink_to(tmp_path / f"{name}.sh")
    for tool in ("sh", "mktemp", "cat", "rm", "sleep"):  # what the wrapper and the stand-ins use; no Slurm
        (fake / tool).symlink_to(str(shutil.which(tool)))
    env = {**site.cluster.env, "PATH": str(fake)}
    cases = [
        ("kill -SEGV $$", "SIGSEGV|status 139"),
        ("kill -ABRT $$", "SIGABRT|status 134"),
        ("exec sleep 30", "did not answer within"),
        (None, "not installed|exit 127"),
    ]
    async with site.service(env=env, command_timeout=2) as svc:
        for body, expected in cases:
            for name in ("sbatch", "scontrol"):
                script = tmp_path / f"{name}.sh"
                script.unlink(missing_ok=True)
                if body is not None:
                    script.write_text(f"#!/bin/sh\n{body}\n")
                    script.chmod(0o755)
            for template in ("shell_ok", "shell_wait"):  # the second has arguments: the wrapper runs sbatch
                error = await rpc_error(create_task(svc, site.template(template)))
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                assert re.search(expected, error.details()), error.details()
            meta = json.dumps({"job_id": "5", "host": site.host, "local": site.kind == "local"}).encode()
            error = await rpc_error(get(svc, meta))
            assert error.code() == grpc.StatusCode.UNAVAILABLE and re.search(expected, error.details())


# --------------------------------------------------------------------------- local only


async def test_logs_and_a_task_without_outputs(local: Site) -> None:
    async with local.service() as svc:
        meta = await create_task(svc, local.template("shell_ok"))
        done = await poll(svc, meta)
        assert done.phase == Phase.SUCCEEDED and len(done.outputs.literals) == 0
        request = agent_pb2.GetTaskLogsRequest(
            task_category=agent_pb2.TaskCategory(name="slurm"), resource_meta=meta, lines=5
        )
        lines = [line async for reply in svc.async_stub.GetTaskLogs(request, timeout=10) for line in reply.body.results]
    assert f"job {job_id_of(done)} mode ok" in lines
    # The connector chose the stdout file: in the work dir, named by job id.
    assert (local.work / f"slurm-{job_id_of(done)}.out").is_file()


async def test_outputs_file_missing_or_broken_fails_naming_the_file(local: Site) -> None:
    template = local.template("shell_ok", outputs={"count": int, "absent": str})
    script = local.work.parent / "bad.sh"
    script.write_text('#!/bin/bash\necho "{not json" > "$FLYTE_SLURM_OUTPUTS"\n')
    broken = local.template("batch", outputs={"x": int})
    broken.custom["batch_script_path"] = str(script)
    del broken.custom["batch_script_args"]
    async with local.service() as svc:
        metas = await asyncio.gather(create_task(svc, template), create_task(svc, broken))
        missing, invalid = await asyncio.gather(*(poll(svc, meta) for meta in metas))
    assert missing.phase == Phase.FAILED
    assert "has no value for absent" in missing.message and ".outputs.json" in missing.message
    assert invalid.phase == Phase.FAILED and "is not valid JSON" in invalid.message


async def test_states_of_real_jobs(local: Site) -> None:
    async with local.service() as svc:
        held = local.template("shell_ok")
        held.custom["sbatch_config"]["hold"] = True
        metas = await asyncio.gather(
            create_task(svc, held),
            create_task(svc, local.template("shell_fail")),
            create_task(svc, local.template("shell_wait")),
        )
        held_meta, failed_meta, wait_meta = metas
        pending = await get(svc, held_meta)
        assert pending.phase == Phase.QUEUED and "PENDING (JobHeldUser)" in pending.message
        await delete_task(svc, held_meta, "slurm")

        failed = job_id_of(await poll(svc, failed_meta))
        never = local.template("shell_ok")
        never.custom["sbatch_config"]["dependency"] = f"afterok:{failed}"
        meta = await create_task(svc, never)
        blocked = await poll(svc, meta, lambda r: r.custom_info["reason"] == "DependencyNeverSatisfied")
        assert blocked.phase == Phase.FAILED and "it can never start" in blocked.message
        await delete_task(svc, meta, "slurm")  # what propeller does after a failure

        job_id = job_id_of(await poll(svc, wait_meta, running))
        local.cluster.run("scontrol", "suspend", job_id)
        suspended = await poll(svc, wait_meta, lambda r: r.custom_info["state"] == "SUSPENDED")
        assert suspended.phase == Phase.RUNNING
        local.cluster.run("scontrol", "resume", job_id)
        local.go(job_id)
        assert (await poll(svc, wait_meta)).phase == Phase.SUCCEEDED


async def test_controller_down_is_unavailable_then_the_outcome_is_reported(local: Site) -> None:
    template = local.template("shell_wait", outputs={"count": int})
    async with local.service() as svc:
        meta = await create_task(svc, template)
        job_id = job_id_of(await poll(svc, meta, running))
        local.cluster.stop_controller()
        try:
            error = await rpc_error(get(svc, meta))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "Slurm controller cannot be reached" in error.details()
            assert (await rpc_error(delete_task(svc, meta, "slurm"))).code() == grpc.StatusCode.UNAVAILABLE
        finally:
            local.cluster.start_controller()
        assert (await get(svc, meta)).phase == Phase.RUNNING  # the controller recovered the job
        local.go(job_id)
        done = await poll(svc, meta)
        assert done.phase == Phase.SUCCEEDED and outputs_of(done, template) == {"count": 3}


@pytest.mark.timeout(FLYTEKIT_BUILD_TIMEOUT + 120)  # the first run on a machine builds the venv
async def test_function_task_runs_pyflyte_execute_for_real(
    local: Site,
    tmp_path: Path,
    flytekit_venv: Path,  # noqa: F811
) -> None:
    template = local.template("fn")
    inputs = tmp_path / "inputs.pb"
    shutil.copy(FLYTEKIT / "slurm_fn_inputs.pb", inputs)  # {"x": 41}
    rendered = {  # what propeller substitutes before CreateTask
        "{{.input}}": str(inputs),
        "{{.outputPrefix}}": str(tmp_path / "out"),
        "{{.rawOutputDataPrefix}}": str(tmp_path / "raw"),
        "{{.checkpointOutputPrefix}}": str(tmp_path / "checkpoint"),
        "{{.prevCheckpointPrefix}}": "",
    }
    args = [rendered.get(arg, arg) for arg in template.container.args]
    del template.container.args[:]
    template.container.args.extend(args)
    env = {**local.cluster.env, "PATH": f"{flytekit_venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(FIXTURES)}
    async with local.service(env=env) as svc:
        meta = await create_task(svc, template)
        done = await poll(svc, meta, task_type="slurm_fn", seconds=45)
    assert done.phase == Phase.SUCCEEDED, done.message
    outputs = literals_pb2.LiteralMap.FromString((tmp_path / "out" / "outputs.pb").read_bytes())
    assert outputs.literals["o0"].scalar.primitive.integer == 42


@pytest.mark.timeout(300)  # ~15 s on 2 idle cores; a loaded machine is slower, not wrong
async def test_concurrent_load_on_the_default_loop_loses_no_command(local: Site, tmp_path: Path) -> None:
    """The daemon as operators run it (its own process, uvloop) under mixed load: every Slurm call succeeds.

    4 clients poll a running job, 2 submit, poll and cancel held jobs, 2 call ListAgents: about
    3,000 calls, 2,000 of them running a Slurm command. A child process that crashed before its
    command ran (grpc's fork handlers in a forked child) used to fail a few percent of them.
    """
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"plugins": {"slurm": local.plugins}}))
    connectors = [arg for name in CONNECTORS for arg in ("--connector", name)]
    quiet = ("--log-level", "error", "--no-access-log", "--no-entry-points")
    failures: list[str] = []
    calls = {"create": 0, "get": 0, "delete": 0, "list": 0}

    async def call(kind: str, coro: Any) -> Any:
        calls[kind] += 1
        try:
            return await coro
        except grpc.aio.AioRpcError as exc:
            failures.append(f"{kind}: {exc.code().name}: {exc.details()}")
            return None

    async with serve_process(*connectors, *quiet, "--config-file", str(config)) as served:
        assert served.proc.stderr is not None
        log = asyncio.ensure_future(asyncio.to_thread(served.proc.stderr.read))  # a full pipe would stall it
        async with grpc.aio.insecure_channel(served.address) as channel:
            svc = Remote(channel)
            meta = await create_task(svc, local.template("shell_wait"))
            job_id = job_id_of(await poll(svc, meta, running))

            async def poller() -> None:
                for _ in range(400):
                    resource = await call("get", get_task(svc, meta, "slurm"))
                    if resource is not None and resource.phase != Phase.RUNNING:
                        failures.append(f"get: {Phase.Phase.Name(resource.phase)}: {resource.message}")

            async def submitter() -> None:
                held = local.template("shell_wait")
                held.custom["sbatch_config"]["hold"] = True
                for _ in range(100):
                    created = await call("create", create_task(svc, held))
                    if created is None:
                        continue
                    resource = await call("get", get_task(svc, created, "slurm"))
                    if resource is not None and resource.phase != Phase.QUEUED:
                        failures.append(f"get held: {Phase.Phase.Name(resource.phase)}: {resource.message}")
                    await call("delete", delete_task(svc, created, "slurm"))

            async def lister() -> None:
                for _ in range(500):
                    await call("list", svc.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=10))

            await asyncio.gather(*(poller() for _ in range(4)), *(submitter() for _ in range(2)), lister(), lister())
            local.go(job_id)
            assert (await poll(svc, meta)).phase == Phase.SUCCEEDED
    await log
    assert sum(calls.values()) >= 3000
    assert not failures, f"{len(failures)} of {sum(calls.values())} calls failed, e.g. {failures[:5]}"


# --------------------------------------------------------------------------- SSH only


async def test_one_ssh_connection_serves_every_call(ssh: Site) -> None:
    assert ssh.server is not None
    before = ssh.server.logins()
    async with ssh.service() as svc:
        meta = await create_task(svc, ssh.template("shell_wait"))
        for _ in range(10):
            resource = await get(svc, meta)
        ssh.go(job_id_of(resource))
        assert (await poll(svc, meta)).phase == Phase.SUCCEEDED
        await delete_task(svc, meta, "slurm")
    assert ssh.server.logins() == before + 1


async def test_sshd_down_is_unavailable_then_a_new_connection_reports_the_outcome(ssh: Site) -> None:
    assert ssh.server is not None
    async with ssh.service() as svc:
        meta = await create_task(svc, ssh.template("shell_wait"))
        job_id = job_id_of(await poll(svc, meta, running))
        before = ssh.server.logins()
        ssh.server.kill()
        try:
            error = await rpc_error(get(svc, meta))
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert f"127.0.0.1:{ssh.server.port}" in error.details()
        finally:
            ssh.server.start()
        assert (await get(svc, meta)).phase == Phase.RUNNING
        ssh.go(job_id)
        assert (await poll(svc, meta)).phase == Phase.SUCCEEDED
    assert ssh.server.logins() == before + 1


async def test_flytekit_issued_meta_is_polled(ssh: Site) -> None:
    # What flytekit's SlurmScriptConnector stored: job_id, ssh_config, outputs.
    async with ssh.service() as svc:
        meta = await create_task(svc, ssh.template("shell_ok"))
        job_id = job_id_of(await poll(svc, meta))
        theirs = {
            "job_id": job_id,
            "ssh_config": {"host": "127.0.0.1", "username": ssh.plugins["username"]},
            "outputs": {},
        }
        resource = await get(svc, json.dumps(theirs).encode())
    assert resource.phase == Phase.SUCCEEDED and job_id_of(resource) == job_id


async def test_a_host_key_that_does_not_match_is_refused(ssh: Site, tmp_path: Path) -> None:
    assert ssh.server is not None
    other = tmp_path / "other_key"
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)]
    await asyncio.to_thread(subprocess.run, keygen, check=True)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh.server.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]))
    async with ssh.service(known_hosts=str(wrong)) as svc:
        error = await rpc_error(create_task(svc, ssh.template("shell_ok")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "host key does not match plugins.slurm.known_hosts" in error.details()


async def test_private_key_secret_missing_or_unusable(
    ssh: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ssh.service(private_key_secret="no_such_key") as svc:
        error = await rpc_error(create_task(svc, ssh.template("shell_ok")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'no_such_key' not found" in error.details()
    monkeypatch.setenv("_FSEC_GARBLED_KEY", "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretstuff\n")
    async with ssh.service(private_key_secret="garbled_key") as svc:
        error = await rpc_error(create_task(svc, ssh.template("shell_ok")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "does not hold a usable SSH private key" in error.details() and "secretstuff" not in error.details()


# --------------------------------------------------------------------------- task and operator errors


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.custom["ssh_config"].update({"host": "login.example.org"}), "plugins.slurm.allowed_hosts"),
        (lambda t: t.custom["ssh_config"].update({"client_keys": ["/etc/secrets/key"]}), "client_keys"),
        (lambda t: t.custom.__delitem__("script"), "neither custom.script nor custom.batch_script_path"),
        (lambda t: t.custom.update({"script": "#!/bin/bash"}), "custom.script is empty"),
        (lambda t: t.custom.update({"script": "#!/bin/bash\necho {ctx.user}\n"}), "{ctx.user}"),
        (lambda t: t.custom.update({"script": "#!/bin/bash\necho ${HOME}\n"}), "{HOME}"),
        (lambda t: t.custom["sbatch_config"].update({"wait": True}), "sbatch_config.wait is not supported"),
        (lambda t: t.custom["sbatch_config"].update({"x y": "1"}), "not an sbatch option name"),
        (lambda t: t.custom["sbatch_config"].update({"time": "soon"}), "sbatch on this machine refused the job"),
    ],
)
async def test_bad_task_config_is_invalid_argument(local: Site, change: Callable[[Any], Any], expected: str) -> None:
    template = local.template("shell_ok")
    change(template)
    async with local.service() as svc:
        error = await rpc_error(create_task(svc, template))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.details()


async def test_function_task_with_unrendered_args_or_no_placeholder(local: Site) -> None:
    async with local.service() as svc:
        error = await rpc_error(create_task(svc, local.template("fn")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "{{.input}}" in error.details()
        template = local.template("fn")
        del template.container.args[:]
        template.container.args.append("true")
        template.custom["script"] = "#!/bin/bash\necho no placeholder\n"
        error = await rpc_error(create_task(svc, template))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "{task.fn}" in error.details()


async def test_without_settings_nothing_can_be_submitted(slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    template = flytekit_template("shell_ok")
    async with run_service(CONNECTORS, entry_points=False) as svc:
        error = await rpc_error(create_task(svc, template))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "plugins.slurm.allowed_hosts" in error.details()
        forged = json.dumps({"job_id": "1", "local": True}).encode()
        error = await rpc_error(get(svc, forged))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "plugins.slurm.local_hosts" in error.details()


@pytest.mark.parametrize(
    ("plugins", "expected"),
    [
        ({"allowed_hosts": ["login.example.org"]}, "plugins.slurm.known_hosts: Value error, required"),
        ({"allowed_hosts": ["bad host"], "known_hosts": "/dev/null"}, "plugins.slurm.allowed_hosts"),
        ({"known_hosts": "/no/such/file"}, "plugins.slurm.known_hosts"),
        ({"local_hosts": ["a"], "allowed_hosts": ["a"], "known_hosts": __file__}, "plugins.slurm.local_hosts"),
        ({"work_dir": "a,b"}, "plugins.slurm.work_dir"),
        ({"env": {"BAD NAME": "x"}}, "plugins.slurm.env"),
        ({"command_timeout": 0}, "plugins.slurm.command_timeout"),
        ({"allowed_host": []}, "plugins.slurm.allowed_host: not a setting"),
    ],
)
async def test_bad_settings_stop_start_up_naming_the_field(plugins: dict[str, Any], expected: str) -> None:
    with pytest.raises((PluginSettingsError, RegistryError)) as info:
        async with run_service(CONNECTORS, entry_points=False, plugins={"slurm": plugins}):
            pass
    assert expected in str(info.value)


# --------------------------------------------------------------------------- parsing and state mapping


def captured() -> dict[str, str]:
    return dict(json.loads(CAPTURED.read_text()))


@pytest.mark.parametrize(
    ("name", "phase", "text"),
    [
        ("pending_held", Phase.QUEUED, "PENDING (JobHeldUser)"),
        ("pending_dependency_never", Phase.FAILED, "it can never start"),
        ("pending_partition_config", Phase.FAILED, "PartitionConfig"),
        ("running", Phase.RUNNING, "RUNNING"),
        ("suspended", Phase.RUNNING, "SUSPENDED"),
        ("requeued_completing", Phase.RUNNING, "COMPLETING"),
        ("requeued_pending", Phase.RUNNING, "requeued (restart 1)"),
        ("special_exit", Phase.RUNNING, "requeued (restart 1) and is SPECIAL_EXIT"),
        ("completed", Phase.SUCCEEDED, "COMPLETED"),
        ("failed", Phase.FAILED, "FAILED (reason NonZeroExitCode), exit code 3"),
        ("failed_signal", Phase.FAILED, "exit code 0, signal 9"),
        ("cancelled", Phase.FAILED, "CANCELLED, exit code 0, signal 15"),
    ],
)
def test_captured_lines_map_to_phases(name: str, phase: int, text: str) -> None:
    fields = _commands.parse_show_job(captured()[name])
    got, message = phase_of(job_status(fields))
    assert (Phase.Phase.Name(got), text in message) == (Phase.Phase.Name(phase), True), message


def _with_state(state: str, reason: str = "None", restarts: int = 0, started: bool = True) -> str:
    line = captured()["running"]
    line = line.replace("JobState=RUNNING Reason=None", f"JobState={state} Reason={reason}")
    line = line.replace("Restarts=0", f"Restarts={restarts}")
    if not started:
        line = line.replace("StartTime=20", "StartTime=Unknown X=20")
    return line


EXPECTED = {
    "PENDING": Phase.QUEUED,
    "REQUEUED": Phase.QUEUED,
    "REQUEUE_FED": Phase.QUEUED,
    "REQUEUE_HOLD": Phase.QUEUED,
    "SPECIAL_EXIT": Phase.QUEUED,
    "RESV_DEL_HOLD": Phase.QUEUED,
    "CONFIGURING": Phase.INITIALIZING,
    "POWER_UP_NODE": Phase.INITIALIZING,
    "RUNNING": Phase.RUNNING,
    "COMPLETING": Phase.RUNNING,
    "SUSPENDED": Phase.RUNNING,
    "STOPPED": Phase.RUNNING,
    "SIGNALING": Phase.RUNNING,
    "RESIZING": Phase.RUNNING,
    "STAGE_OUT": Phase.RUNNING,
    "REVOKED": Phase.RUNNING,
    "UPDATE_DB": Phase.RUNNING,
    "COMPLETED": Phase.SUCCEEDED,
    "FAILED": Phase.FAILED,
    "CANCELLED": Phase.FAILED,
    "TIMEOUT": Phase.FAILED,
    "DEADLINE": Phase.FAILED,
    "OUT_OF_MEMORY": Phase.FAILED,
    "NODE_FAIL": Phase.RETRYABLE_FAILED,
    "BOOT_FAIL": Phase.RETRYABLE_FAILED,
    "PREEMPTED": Phase.RETRYABLE_FAILED,
    "RECONFIG_FAIL": Phase.RETRYABLE_FAILED,
    "LAUNCH_FAILED": Phase.RETRYABLE_FAILED,
}


def test_every_known_state_has_a_decision() -> None:
    assert set(EXPECTED) == set(KNOWN_STATES)


@pytest.mark.parametrize("state", sorted(EXPECTED))
def test_each_state_maps_to_its_phase(state: str) -> None:
    fields = _commands.parse_show_job(_with_state(state))
    phase, message = phase_of(job_status(fields))
    assert Phase.Phase.Name(phase) == Phase.Phase.Name(EXPECTED[state])
    assert state in message


@pytest.mark.parametrize(
    ("state", "reason", "restarts", "phase"),
    [
        ("PENDING", "Resources", 0, Phase.WAITING_FOR_RESOURCES),
        ("PENDING", "QOSMaxCpuPerUserLimit", 0, Phase.WAITING_FOR_RESOURCES),
        ("PENDING", "ReqNodeNotAvail,_UnavailableNodes:n1", 0, Phase.WAITING_FOR_RESOURCES),
        ("PENDING", "Priority", 0, Phase.QUEUED),
        ("PENDING", "BeginTime", 2, Phase.RUNNING),
        ("REQUEUE_HOLD", "job_requeued_in_held_state", 1, Phase.RUNNING),
        ("CANCELLED by 0", "None", 0, Phase.FAILED),
        ("CA", "None", 0, Phase.FAILED),
        ("TO", "TimeLimit", 0, Phase.FAILED),
    ],
)
def test_reasons_restarts_and_spellings(state: str, reason: str, restarts: int, phase: int) -> None:
    line = _with_state(state, reason, restarts)
    got, _ = phase_of(job_status(_commands.parse_show_job(line)))
    assert Phase.Phase.Name(got) == Phase.Phase.Name(phase)


def test_an_unknown_state_is_a_phase_with_a_message_not_an_error() -> None:
    started = phase_of(job_status(_commands.parse_show_job(_with_state("WARP_DRIVE"))))
    assert started[0] == Phase.RUNNING and "WARP_DRIVE" in started[1]
    waiting = phase_of(job_status(_commands.parse_show_job(_with_state("WARP_DRIVE", started=False))))
    assert waiting[0] == Phase.QUEUED and "WARP_DRIVE" in waiting[1]


def test_parser_keeps_free_text_whole_and_splits_unknown_keys() -> None:
    fields = _commands.parse_show_job(captured()["pending_held"])
    assert fields["JobName"] == "name with spaces x=1"
    assert fields["Comment"] == "a b=c  d"
    assert fields["TRES"].startswith("cpu=1")
    line = captured()["running"].replace(" Reason=None", " Reason=None NewKey23=v w")
    assert _commands.parse_show_job(line)["Reason"] == "None"
    two = captured()["completed"] + "\n" + captured()["failed"]
    assert _commands.parse_show_job(two, captured()["failed"].split()[0][6:])["JobState"] == "FAILED"
    with pytest.raises(ValueError):
        _commands.parse_show_job("slurm_load_jobs error: Invalid job id specified")


def test_sbatch_argv_quotes_nothing_and_merges_export() -> None:
    argv = _commands.sbatch_argv(
        {"job-name": "a; b", "nodes": 2.0, "exclusive": True, "requeue": False, "export": "NONE", "N": 1.0},
        outputs_file="/w/flyte-x.outputs.json",
        default_output="/w/slurm-%j.out",
        script_path="/w/job.sh",
        script_args=["x y"],
    )
    assert argv == [
        "sbatch",
        "--parsable",
        "--job-name=a; b",
        "--nodes=2",
        "--exclusive",
        "-N",
        "1",
        "--export=NONE,FLYTE_SLURM_OUTPUTS=/w/flyte-x.outputs.json",
        "--output=/w/slurm-%j.out",
        "--",
        "/w/job.sh",
        "x y",
    ]
    line = _commands.shell_line(["sbatch", "--job-name=a; b"], {"SLURM_CONF": "/x y"}, mkdir="/w d")
    assert line == "mkdir -p -- '/w d' && env 'SLURM_CONF=/x y' sbatch '--job-name=a; b'"


def test_host_entries() -> None:
    assert str(parse_host_entry("alice@Login.Example.org:2222")) == "alice@login.example.org:2222"
    assert parse_host_entry("[::1]:22").host == "::1"
    for bad in ("a b", "host:0", "host:x", "bad user@h", "[zz]:1"):
        with pytest.raises(ValueError):
            parse_host_entry(bad)


def test_interpolation_is_flytekits_format_limited_to_inputs_and_outputs() -> None:
    text = _commands.interpolate("{inputs.n:03d} {outputs.o} {{x}} ${{HOME}}", {"n": 7}, {"o": "/out"})
    assert text == "007 /out {x} ${HOME}"
    with pytest.raises(Exception, match="inputs.n.__class__"):
        _commands.interpolate("{inputs.n.__class__}", {"n": 1}, {})


# --------------------------------------------------------------------------- the binaries' absence


def test_missing_binaries_skip_locally_and_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.connectors import slurm_cluster as module

    monkeypatch.setattr(module, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install-system-deps"):
        module.require(("sbatch",), "x")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        module.require(("sbatch",), "x")


def test_a_flytekit_venv_that_cannot_be_built_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocked = tmp_path / "a file"
    blocked.write_text("")  # so nothing can be made under it
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="cannot build the flytekit venv"):
        require_venv(blocked / "venv")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_venv(blocked / "venv")
