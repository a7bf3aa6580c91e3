"""``slurm`` and ``slurm_fn``: run a task as a Slurm batch job, on this machine or over SSH.

Templates are the ones flytekitplugins-slurm serializes (``custom``: ``ssh_config``,
``sbatch_config``, and ``script`` or ``batch_script_path`` + ``batch_script_args`` for
``slurm``; ``script`` with a ``{task.fn}`` placeholder and the container's args for
``slurm_fn``). Unlike that plugin, the connector never takes keys or hosts from a template:
hosts must be allowed by the operator (``plugins.slurm``) and the key comes from a secret.

Job status comes from ``scontrol -o show job`` (every Slurm version has it; ``--json`` needs
23.02). See ``states.py`` for how states become phases, and the README for the outputs
contract (``FLYTE_SLURM_OUTPUTS``).
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import shlex
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service import (
    AsyncConnectorBase,
    InvalidRequestError,
    Phase,
    Resource,
    ResourceMeta,
    UnavailableError,
    read_custom,
    read_inputs,
)
from connectors.slurm import _commands
from connectors.slurm._transport import LocalTransport, SSHKey, SSHOptions, SSHPool, SSHTransport, Transport
from connectors.slurm.settings import SlurmSettings
from connectors.slurm.states import job_status, phase_of

__all__ = ["SlurmFunctionConnector", "SlurmJobMeta", "SlurmScriptConnector"]

_log = logging.getLogger(__name__)

MAX_OUTPUTS_BYTES = 1 << 20
"""Largest outputs file read (1 MiB): outputs travel in a GetTask reply, which propeller caps at 4 MiB."""

MAX_LOG_BYTES = 1 << 20

_JOB_ID = re.compile(r"^\d{1,12}$")
_OUTPUTS_FILE = re.compile(r"^/.*/flyte-[0-9a-f]{32}\.outputs\.json$")
_SSH_CONFIG_KEYS = {"host", "username", "client_keys", "port"}
_UNREACHABLE = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Zero Bytes were transmitted",
    "Connection refused",
    "Communication connection failure",
    "backup controller in standby",
    "Transport endpoint",
    "Munge",
    "munge",
    "Protocol authentication error",
)
_UNKNOWN_JOB = "Invalid job id specified"


@dataclass
class SlurmJobMeta(ResourceMeta):
    """Finds the job again: its id and where it was submitted. Never a key or a password."""

    job_id: str
    host: str = ""
    """The host the template named (an allowed_hosts or local_hosts name; "" for local with no host)."""
    port: int = 0
    username: str = ""
    local: bool = False
    stdout: str = ""
    """The job's stdout file when the connector chose it (the task did not set sbatch's output)."""
    outputs_file: str = ""
    """The JSON file the job writes its outputs to; "" when no output is read from it."""
    output_names: list[str] = field(default_factory=list)
    """Declared outputs taken from outputs_file."""
    outputs: dict[str, str] = field(default_factory=dict)
    """Declared outputs whose value is a location (custom.output_locs, as flytekitplugins-slurm has them)."""
    ssh_config: dict[str, Any] | None = None
    """Only in metas issued by flytekit's Slurm connectors (read for host and username, never written)."""


@dataclass(frozen=True)
class _Target:
    transport: Transport
    host: str
    port: int
    username: str
    local: bool


@dataclass
class _JobSpec:
    """What to submit: a script on stdin, or a script already on the cluster, plus its outputs contract."""

    script: str | None = None
    script_path: str | None = None
    script_args: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)


class _SlurmConnector(AsyncConnectorBase):
    """What both task types share: targets, submission, polling, cancelling."""

    settings_key: ClassVar[str] = "slurm"
    settings_model: ClassVar[type[SlurmSettings]] = SlurmSettings
    settings: SlurmSettings
    task_type: ClassVar[str]

    def __init__(self) -> None:
        super().__init__(metadata_type=SlurmJobMeta, task_type_name=self.task_type, task_type_version=0)
        self.settings = SlurmSettings()
        self._pool: SSHPool | None = None
        self._local: LocalTransport | None = None

    def configure(self, settings: SlurmSettings) -> None:
        self.settings = settings
        self._pool = None
        self._local = None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    @property
    def ssh_pool(self) -> SSHPool:
        """The shared SSH connections (made lazily; asyncssh is imported on first use only)."""
        if self._pool is None:
            known_hosts = self.settings.known_hosts
            if known_hosts is None:  # settings validation guarantees it when allowed_hosts is set
                raise InvalidRequestError("slurm: plugins.slurm.known_hosts is not set, so SSH is off")
            self._pool = SSHPool(
                SSHOptions(
                    known_hosts=known_hosts,
                    private_key_secret=self.settings.private_key_secret,
                    private_key_passphrase_secret=self.settings.private_key_passphrase_secret,
                    connect_timeout=self.settings.connect_timeout,
                )
            )
        return self._pool

    # ------------------------------------------------------------------ where

    def _local_transport(self) -> LocalTransport:
        if self._local is None:
            self._local = LocalTransport(self.settings.env)
        return self._local

    def _target(self, host: str, username: str | None, port: int | None = None) -> _Target:
        """The transport for a host a template (or a meta) names, if the operator allows it."""
        settings = self.settings
        name = host.strip().lower()
        if not name or name in settings.local_hosts:
            if not settings.local_hosts:
                raise InvalidRequestError(
                    "slurm: custom.ssh_config.host is missing and local submission is off "
                    "(plugins.slurm.local_hosts is empty)"
                )
            return _Target(self._local_transport(), host=name, port=0, username="", local=True)
        entries = settings.ssh_entries()
        entry = entries.get(name)
        if entry is None:
            allowed = ", ".join(sorted(entries)) or "none"
            raise InvalidRequestError(
                f"slurm: custom.ssh_config.host {host!r} is not in plugins.slurm.allowed_hosts (allowed: {allowed})"
            )
        if port is not None and port not in (0, entry.port):
            raise InvalidRequestError(
                f"slurm: custom.ssh_config.port {port} is not the port plugins.slurm.allowed_hosts has for {name}"
            )
        if entry.username and username and username != entry.username:
            raise InvalidRequestError(
                f"slurm: custom.ssh_config.username {username!r} is not allowed on {name}: "
                f"plugins.slurm.allowed_hosts fixes the user as {entry.username!r}"
            )
        user = entry.username or username or settings.username
        if not user:
            raise InvalidRequestError(
                f"slurm: no SSH user for {name}: set custom.ssh_config.username, or plugins.slurm.username"
            )
        key = SSHKey(host=entry.host, port=entry.port, username=user)
        return _Target(SSHTransport(self.ssh_pool, key, settings.env), entry.host, entry.port, user, local=False)

    def _target_of(self, meta: SlurmJobMeta) -> _Target:
        if not _JOB_ID.match(str(meta.job_id)):
            raise InvalidRequestError(f"slurm: resource_meta job_id {meta.job_id!r} is not a Slurm job id")
        if meta.local:
            if meta.host and meta.host not in self.settings.local_hosts:
                raise InvalidRequestError(f"slurm: {meta.host!r} is no longer in plugins.slurm.local_hosts")
            return self._target("" if not meta.host else meta.host, None)
        host, username = meta.host, meta.username
        if not host and isinstance(meta.ssh_config, Mapping):  # a meta from flytekit's connector
            host, username = str(meta.ssh_config.get("host") or ""), str(meta.ssh_config.get("username") or "")
        if not host:
            raise InvalidRequestError("slurm: resource_meta names no host")
        return self._target(host, username or None)

    def _budget(self, timeout: float | None) -> Callable[[], float]:
        """Seconds left for the next command: one call's commands share the operator's cap and the
        caller's remaining deadline (less a margin to answer in)."""
        total = self.settings.command_timeout
        if timeout is not None:
            total = min(total, timeout - 0.5)
        deadline = time.monotonic() + total
        return lambda: max(deadline - time.monotonic(), 0.5)

    # ------------------------------------------------------------------ what

    def _job_spec(
        self, template: tasks_pb2.TaskTemplate, custom: Mapping[str, Any], inputs: literals_pb2.LiteralMap | None
    ) -> _JobSpec:
        raise NotImplementedError

    # ------------------------------------------------------------------ create

    async def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> SlurmJobMeta:
        custom = read_custom(task_template)
        ssh_config = custom.get("ssh_config") or {}
        if not isinstance(ssh_config, Mapping):
            raise InvalidRequestError("slurm: custom.ssh_config must be a mapping")
        unknown = sorted(set(ssh_config) - _SSH_CONFIG_KEYS)
        if unknown:
            raise InvalidRequestError(
                f"slurm: custom.ssh_config.{unknown[0]} is not supported (supported: host, username)"
            )
        if ssh_config.get("client_keys"):
            raise InvalidRequestError(
                "slurm: custom.ssh_config.client_keys is not supported: the SSH key comes from the operator's secret "
                f"{self.settings.private_key_secret!r} (plugins.slurm.private_key_secret)"
            )
        port = ssh_config.get("port")
        target = self._target(
            str(ssh_config.get("host") or ""),
            str(ssh_config["username"]) if ssh_config.get("username") else None,
            int(port) if isinstance(port, int | float) else None,
        )
        sbatch_config = custom.get("sbatch_config") or {}
        if not isinstance(sbatch_config, Mapping):
            raise InvalidRequestError("slurm: custom.sbatch_config must be a mapping of sbatch options")
        spec = self._job_spec(task_template, custom, inputs)
        if not any(k in sbatch_config for k in ("job-name", "J")) and task_template.id.name:
            sbatch_config = {"job-name": task_template.id.name, **sbatch_config}

        left = self._budget(timeout)
        transport = target.transport
        work_dir = self.settings.work_dir
        if not work_dir.startswith("/"):
            work_dir = posixpath.join(await transport.home(left()), work_dir)
        work_dir = posixpath.normpath(work_dir)
        if "," in work_dir:
            raise UnavailableError(f"slurm: the work directory {work_dir} on {transport.where} contains a comma")
        outputs_file = f"{work_dir}/flyte-{uuid.uuid4().hex}.outputs.json"
        default_output = f"{work_dir}/slurm-%j.out"
        argv = _commands.sbatch_argv(
            sbatch_config,
            outputs_file=outputs_file,
            default_output=default_output,
            script_path=spec.script_path,
            script_args=spec.script_args,
        )
        result = await transport.run(argv, stdin=spec.script, mkdir=work_dir, timeout=left(), idempotent=False)
        if result.status != 0:
            self._raise_unreachable(result.status, result.stderr, "sbatch", transport)
            refusal = result.first_error_line()
            raise InvalidRequestError(f"slurm: sbatch on {transport.where} refused the job: {refusal}")
        try:
            job_id = _commands.parse_job_id(result.stdout)
        except ValueError as exc:
            raise UnavailableError(f"slurm: unexpected answer from sbatch on {transport.where}: {exc}") from None
        has_output = any(k in sbatch_config for k in ("output", "o"))
        _log.info("submitted Slurm job %s on %s", job_id, transport.where)
        return SlurmJobMeta(
            job_id=job_id,
            host=target.host,
            port=target.port,
            username=target.username,
            local=target.local,
            stdout="" if has_output else default_output.replace("%j", job_id),
            outputs_file=outputs_file if spec.output_names else "",
            output_names=spec.output_names,
            outputs=spec.outputs,
        )

    @staticmethod
    def _raise_unreachable(status: int, stderr: str, command: str, transport: Transport) -> None:
        """UNAVAILABLE when the status or stderr says the command never got to answer.

        Slurm's commands refuse with status 1 or 255. A shell between us and them (SSH, the
        stdin wrapper) turns "not found" into 127, "not executable" into 126, a death by signal
        into 128 + the signal, and the wrapper's own failure into 125.
        """
        if status == 127:
            raise UnavailableError(f"slurm: {command} is not installed on {transport.where} (exit 127)")
        if 125 <= status < 255:
            lines = [s.strip() for s in stderr.splitlines() if s.strip()]
            detail = f": {lines[-1][:300]}" if lines else ""
            raise UnavailableError(
                f"slurm: {command} on {transport.where} ended without an answer (exit status {status}){detail}"
            )
        if any(text in stderr for text in _UNREACHABLE):
            line = [s for s in stderr.splitlines() if s.strip()][-1].strip()[:300]
            raise UnavailableError(f"slurm: the Slurm controller cannot be reached from {transport.where}: {line}")

    # ------------------------------------------------------------------ get

    async def _show(self, meta: SlurmJobMeta, target: _Target, left: Callable[[], float]) -> dict[str, str] | None:
        """The job's scontrol fields, or None when the controller does not know the job."""
        transport = target.transport
        result = await transport.run(["scontrol", "-o", "show", "job", meta.job_id], timeout=left())
        if result.status != 0:
            if _UNKNOWN_JOB in result.stderr:
                return None
            self._raise_unreachable(result.status, result.stderr, "scontrol", transport)
            raise UnavailableError(f"slurm: scontrol on {transport.where} failed: {result.first_error_line()}")
        try:
            fields = _commands.parse_show_job(result.stdout, meta.job_id)
        except ValueError as exc:
            raise UnavailableError(f"slurm: unexpected answer from scontrol on {transport.where}: {exc}") from None
        owner = fields.get("UserId", "").split("(", 1)[0]
        if owner and owner != transport.user:
            raise InvalidRequestError(
                f"slurm: job {meta.job_id} on {transport.where} belongs to {owner!r}, not to {transport.user!r}"
            )
        return fields

    async def get(self, resource_meta: SlurmJobMeta, timeout: float | None = None, **kwargs: Any) -> Resource:
        meta = resource_meta
        target = self._target_of(meta)
        left = self._budget(timeout)
        fields = await self._show(meta, target, left)
        if fields is None:
            return Resource(
                phase=Phase.FAILED,
                message=f"Slurm job {meta.job_id} is unknown to the controller on {target.transport.where}: it "
                "ended longer ago than the cluster's MinJobAge, or it never existed, so its outcome cannot be known",
                custom_info={"job_id": meta.job_id, "state": "UNKNOWN"},
            )
        status = job_status(fields)
        phase, message = phase_of(status)
        stdout = fields.get("StdOut") or meta.stdout
        info = {
            "job_id": meta.job_id,
            "state": status.state,
            "reason": status.reason,
            "exit_code": status.exit_code,
            "host": target.host or "local",
            "stdout": stdout,
        }
        links = self._log_links(meta, target, stdout)
        if phase == Phase.SUCCEEDED and (meta.output_names or meta.outputs):
            outputs, problem = await self._outputs(meta, target, left)
            if problem:
                return Resource(phase=Phase.FAILED, message=problem, log_links=links, custom_info=info)
            return Resource(phase=phase, message=message, log_links=links, custom_info=info, outputs=outputs)
        return Resource(phase=phase, message=message, log_links=links, custom_info=info)

    def _log_links(self, meta: SlurmJobMeta, target: _Target, stdout: str) -> list[execution_pb2.TaskLog]:
        template = self.settings.log_link_template
        if not template:
            return []
        quote = urllib.parse.quote
        uri = template.format(job_id=quote(meta.job_id), host=quote(target.host or "local"), stdout=quote(stdout))
        return [execution_pb2.TaskLog(uri=uri, name=f"Slurm job {meta.job_id}")]

    async def _outputs(
        self, meta: SlurmJobMeta, target: _Target, left: Callable[[], float]
    ) -> tuple[dict[str, Any], str]:
        """The task's outputs, or an empty dict and what is wrong with them."""
        outputs: dict[str, Any] = dict(meta.outputs)
        if not meta.output_names:
            return outputs, ""
        path = meta.outputs_file
        if not _OUTPUTS_FILE.match(path) or ".." in path.split("/"):
            raise InvalidRequestError("slurm: resource_meta outputs_file is not an outputs file of this connector")
        try:
            data = await target.transport.read_file(path, MAX_OUTPUTS_BYTES + 1, left())
        except OSError as exc:
            raise UnavailableError(f"slurm: {exc}") from None
        where = f"{path} on {target.transport.where}"
        if data is None:
            return {}, (
                f"Slurm job {meta.job_id} COMPLETED but did not write its outputs file {where} "
                f"(the job finds its path in ${_commands.OUTPUTS_ENV})"
            )
        if len(data) > MAX_OUTPUTS_BYTES:
            return {}, f"Slurm job {meta.job_id}: the outputs file {where} is larger than {MAX_OUTPUTS_BYTES} bytes"
        try:
            values = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            return {}, f"Slurm job {meta.job_id}: the outputs file {where} is not valid JSON: {exc}"
        if not isinstance(values, dict):
            return {}, f"Slurm job {meta.job_id}: the outputs file {where} must hold a JSON object of the outputs"
        missing = [name for name in meta.output_names if name not in values]
        if missing:
            return {}, f"Slurm job {meta.job_id}: the outputs file {where} has no value for {', '.join(missing)}"
        outputs.update({name: values[name] for name in meta.output_names})
        return outputs, ""

    # ------------------------------------------------------------------ delete

    async def delete(self, resource_meta: SlurmJobMeta, timeout: float | None = None, **kwargs: Any) -> None:
        meta = resource_meta
        target = self._target_of(meta)
        transport = target.transport
        result = await transport.run(["scancel", meta.job_id], timeout=self._budget(timeout)())
        if result.status != 0 and _UNKNOWN_JOB not in result.stderr:
            # A finished or purged job is fine; an unreachable controller is not (propeller retries the abort).
            self._raise_unreachable(result.status, result.stderr, "scancel", transport)
            raise UnavailableError(f"slurm: scancel on {transport.where} failed: {result.first_error_line()}")
        _log.info("cancelled Slurm job %s on %s", meta.job_id, transport.where)

    # ------------------------------------------------------------------ logs

    async def get_logs(
        self, resource_meta: SlurmJobMeta, lines: int = 0, timeout: float | None = None, **kwargs: Any
    ) -> list[str]:
        """The last ``lines`` lines (all, up to 1 MiB, if 0) of the job's stdout."""
        meta = resource_meta
        target = self._target_of(meta)
        left = self._budget(timeout)
        fields = await self._show(meta, target, left)
        path = (fields or {}).get("StdOut") or meta.stdout
        if not path:
            return []
        try:
            data = await target.transport.read_file(path, MAX_LOG_BYTES, left())
        except OSError as exc:
            raise UnavailableError(f"slurm: {exc}") from None
        text = (data or b"").decode(errors="replace").splitlines()
        return text[-lines:] if lines > 0 else text


# --------------------------------------------------------------------------- the two task types


def _declared_outputs(template: tasks_pb2.TaskTemplate) -> list[str]:
    return list(template.interface.outputs.variables)


class SlurmScriptConnector(_SlurmConnector):
    """``slurm``: a batch script (``custom.script``) or a script on the cluster (``custom.batch_script_path``).

    Outputs: declared outputs named in ``custom.output_locs`` are those locations (as
    flytekitplugins-slurm has it); every other declared output is read from the JSON object the
    job writes to ``$FLYTE_SLURM_OUTPUTS``.
    """

    name = "Slurm Script Connector"
    task_type = "slurm"

    def _job_spec(
        self, template: tasks_pb2.TaskTemplate, custom: Mapping[str, Any], inputs: literals_pb2.LiteralMap | None
    ) -> _JobSpec:
        args = custom.get("batch_script_args") or []
        if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
            raise InvalidRequestError("slurm: custom.batch_script_args must be a list of strings")
        script_args = [str(int(a)) if isinstance(a, float) and a.is_integer() else str(a) for a in args]
        values = read_inputs(inputs, template)
        locations = self._output_locations(custom, values, _declared_outputs(template))
        output_names = [name for name in _declared_outputs(template) if name not in locations]
        script = custom.get("script")
        if script is not None:
            if not isinstance(script, str) or not script.strip() or script.strip() == "#!/bin/bash":
                raise InvalidRequestError("slurm: custom.script is empty: write the batch script's content")
            text = _commands.interpolate(script, values, locations)
            return _JobSpec(script=text, script_args=script_args, output_names=output_names, outputs=locations)
        path = custom.get("batch_script_path")
        if not path:
            raise InvalidRequestError(
                "slurm: the task has neither custom.script nor custom.batch_script_path: give the script to run"
            )
        if not isinstance(path, str) or "\0" in path or "\n" in path:
            raise InvalidRequestError("slurm: custom.batch_script_path must be a path")
        return _JobSpec(script_path=path, script_args=script_args, output_names=output_names, outputs=locations)

    @staticmethod
    def _output_locations(custom: Mapping[str, Any], values: Mapping[str, Any], declared: list[str]) -> dict[str, str]:
        locs = custom.get("output_locs") or []
        if not isinstance(locs, list):
            raise InvalidRequestError("slurm: custom.output_locs must be a list of {var, location}")
        locations: dict[str, str] = {}
        for index, loc in enumerate(locs):
            if not isinstance(loc, Mapping) or not isinstance(loc.get("var"), str) or "location" not in loc:
                raise InvalidRequestError(f"slurm: custom.output_locs[{index}] must be a mapping with var and location")
            var = loc["var"]
            if var not in declared:
                raise InvalidRequestError(f"slurm: custom.output_locs[{index}].var {var!r} is not a declared output")
            where = f"custom.output_locs[{index}].location"
            locations[var] = _commands.interpolate(str(loc["location"]), values, {}, where=where)
        return locations


class SlurmFunctionConnector(_SlurmConnector):
    """``slurm_fn``: the task's own command (pyflyte-execute ...) as a Slurm job.

    The command is the template's container args, as propeller rendered them, each quoted,
    put where ``custom.script`` has ``{task.fn}`` (or alone in a bash script). pyflyte-execute
    writes the outputs to the output prefix itself, so nothing is read back here.
    """

    name = "Slurm Function Connector"
    task_type = "slurm_fn"

    def _job_spec(
        self, template: tasks_pb2.TaskTemplate, custom: Mapping[str, Any], inputs: literals_pb2.LiteralMap | None
    ) -> _JobSpec:
        args = list(template.container.args)
        if not args:
            raise InvalidRequestError("slurm_fn: the template has no container.args: nothing to run")
        for arg in args:
            match = re.search(r"\{\{\s*\.\w+\s*\}\}", arg)
            if match:
                raise InvalidRequestError(
                    f"slurm_fn: container.args still holds the placeholder {match.group(0)}; propeller renders them "
                    "before CreateTask"
                )
        command = shlex.join(args)
        script = custom.get("script")
        if script is None:
            # As flytekitplugins-slurm does: an interactive bash, so ~/.bashrc sets up PATH (conda, modules).
            return _JobSpec(script=f"#!/bin/bash -i\n{command}\n")
        if not isinstance(script, str) or _commands.FN_PLACEHOLDER not in script:
            raise InvalidRequestError(
                f"slurm_fn: custom.script must contain {_commands.FN_PLACEHOLDER} where the task's command goes"
            )
        return _JobSpec(script=script.replace(_commands.FN_PLACEHOLDER, command))
