"""``databricks`` and ``spark`` (v0): a Flyte Spark task as a one-time Databricks run.

Templates are what flytekitplugins-spark 1.16 serializes (``DatabricksV2``: task type
``databricks``; the deprecated ``Databricks``: ``spark``) and what Flyte 2's
flyteplugins-databricks 2.12 serializes (``databricks``); ``_body.py`` turns them into a
``runs/submit`` body. The workspace and credential come from ``plugins.databricks.instances``
for the task's project/domain; ``resource_meta`` holds the run id, the instance's key and the
*name* of the token's secret, never a token (flytekit stores the token itself there).

CreateTask is idempotent: the run is submitted with an ``idempotency_token`` derived from the
task execution id and attempt, so a CreateTask that propeller retries after a timeout gets
the run the first call started.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2

from connector_service import (
    AsyncConnectorBase,
    InvalidRequestError,
    Phase,
    Resource,
    ResourceMeta,
    clip,
    read_custom,
)
from connectors._http import HttpClients
from connectors._scoped import choose, execution_token, lookup, scope_of
from connectors.databricks._api import JobsClient, Refused, RunNotFound, Target
from connectors.databricks._body import WHO, build_submit_body, is_flyte2
from connectors.databricks.settings import DatabricksSettings, normalize_host
from connectors.databricks.states import StateMapper

__all__ = ["DatabricksConnector", "DatabricksRunMeta", "DatabricksSparkConnector"]

_log = logging.getLogger(__name__)

SETTING = "plugins.databricks.instances"
_AUTH_TYPES = ("pat", "oauth_m2m")


@dataclass
class DatabricksRunMeta(ResourceMeta):
    """Finds the run again. Never a token: only the name of the secret that holds it."""

    run_id: str
    instance: str = ""
    """The key of the operator's instance entry (``project/domain``, ``project`` or ``default``)."""
    auth_type: str = "pat"
    token_secret: str = ""
    refused: str = ""
    """Databricks refused the run at submit (its message): GetTask answers FAILED with it."""
    databricks_instance: str = ""
    """Only in metas issued by flytekit's connector (its ``auth_token`` is never read)."""


class DatabricksConnector(AsyncConnectorBase):
    """``databricks`` v0: flytekitplugins-spark's ``DatabricksV2`` and Flyte 2's ``Databricks`` tasks."""

    name = "Databricks Connector"
    task_type: ClassVar[str] = "databricks"
    settings_key: ClassVar[str] = "databricks"
    settings_model: ClassVar[type[DatabricksSettings]] = DatabricksSettings
    settings: DatabricksSettings

    def __init__(self) -> None:
        super().__init__(metadata_type=DatabricksRunMeta, task_type_name=self.task_type, task_type_version=0)
        self.clients = HttpClients()
        self.jobs = JobsClient(self.clients)
        self.states = StateMapper()
        self.configure(DatabricksSettings())

    async def close(self) -> None:
        await self.clients.aclose()

    def _timeout(self, timeout: float | None) -> float:
        """Seconds for one call: the operator's cap, within the caller's deadline (less a margin to answer)."""
        limit = self.settings.request_timeout
        if timeout is not None:
            limit = min(limit, timeout - 0.5)
        return max(limit, 0.1)

    # ------------------------------------------------------------------ create

    def _target(self, custom: Mapping[str, Any], task_execution_metadata: Any) -> Target:
        key, instance = choose(self.settings.instances, scope_of(task_execution_metadata), SETTING)
        where = f"{SETTING}.{key}"
        named = custom.get("databricksInstance")
        if named:
            if not isinstance(named, str) or normalize_host(named) != instance.host:
                raise InvalidRequestError(
                    f"{WHO}: custom.databricksInstance {clip(str(named), 100)!r} is not allowed for this task's "
                    f"project/domain: {where} is {instance.host} (leave it out to use that workspace)"
                )
        auth_type = custom.get("databricksAuthType") or instance.auth_type
        if auth_type not in _AUTH_TYPES:
            raise InvalidRequestError(
                f"{WHO}: custom.databricksAuthType {clip(str(auth_type), 40)!r} is not supported (pat or oauth_m2m)"
            )
        if auth_type == "oauth_m2m" and not instance.oauth_ready:
            raise InvalidRequestError(
                f"{WHO}: custom.databricksAuthType oauth_m2m is not allowed here: {where} has no "
                "oauth_client_id_secret/oauth_client_secret_secret"
            )
        field, secret = "custom.databricksTokenSecret", custom.get("databricksTokenSecret")
        if is_flyte2(custom):
            secrets = custom.get("secrets")
            field = "custom.secrets.databricks_token"
            secret = secrets.get("databricks_token") if isinstance(secrets, Mapping) else None
        if secret and auth_type == "pat" and secret not in instance.token_secrets():
            raise InvalidRequestError(
                f"{WHO}: {field} {clip(str(secret), 100)!r} is not a token secret allowed for this task's "
                f"project/domain ({where}.token_secret or allowed_token_secrets)"
            )
        token_secret = str(secret) if secret and auth_type == "pat" else instance.token_secret
        return Target(key=key, instance=instance, auth_type=auth_type, token_secret=token_secret)

    async def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> DatabricksRunMeta:
        custom = read_custom(task_template)
        target = self._target(custom, task_execution_metadata)
        token = execution_token(task_execution_metadata, prefix="flyte", length=64) or f"flyte-{uuid.uuid4().hex}"
        body = build_submit_body(task_template, custom, token)
        meta = DatabricksRunMeta(
            run_id="", instance=target.key, auth_type=target.auth_type, token_secret=target.token_secret
        )
        try:
            meta.run_id = await self.jobs.submit(target, body, self._timeout(timeout))
        except (Refused, RunNotFound) as exc:
            # The workspace will not run it (a bad cluster spec, a missing notebook...): the task
            # fails with Databricks' message on its first GetTask, rather than a CreateTask error
            # that propeller would retry as if the service had failed.
            meta.refused = clip(str(exc), 600)
            _log.info("Databricks on %s refused a run: %s", target.where, meta.refused)
            return meta
        _log.info("submitted Databricks run %s on %s", meta.run_id, target.where)
        return meta

    # ------------------------------------------------------------------ get / delete

    def _target_of(self, meta: DatabricksRunMeta) -> Target:
        instances = self.settings.instances
        if not meta.instance and meta.databricks_instance:  # a meta from flytekit's connector
            host = normalize_host(meta.databricks_instance)
            key = next((k for k, entry in instances.items() if entry.host == host), "")
            if not key:
                raise InvalidRequestError(f"{WHO}: no entry of {SETTING} is the workspace {clip(host)}")
            instance = instances[key]
            return Target(key=key, instance=instance, auth_type=instance.auth_type, token_secret=instance.token_secret)
        instance = lookup(instances, meta.instance, SETTING)
        if meta.auth_type not in _AUTH_TYPES or (meta.auth_type == "oauth_m2m" and not instance.oauth_ready):
            raise InvalidRequestError(f"{WHO}: resource_meta auth_type {clip(meta.auth_type, 40)!r} is not usable")
        secret = meta.token_secret or instance.token_secret
        if secret not in instance.token_secrets():
            raise InvalidRequestError(
                f"{WHO}: resource_meta names token secret {clip(secret, 100)!r}, which {SETTING}.{meta.instance} "
                "does not allow (any more)"
            )
        return Target(key=meta.instance, instance=instance, auth_type=meta.auth_type, token_secret=secret)

    @staticmethod
    def _check_run_id(meta: DatabricksRunMeta) -> str:
        run_id = str(meta.run_id)
        if not run_id.isdigit() or len(run_id) > 20:
            raise InvalidRequestError(f"{WHO}: resource_meta run_id {clip(run_id, 40)!r} is not a Databricks run id")
        return run_id

    async def get(self, resource_meta: DatabricksRunMeta, timeout: float | None = None, **kwargs: Any) -> Resource:
        meta = resource_meta
        if meta.refused:
            return Resource(phase=Phase.FAILED, message=f"Databricks refused the run: {clip(meta.refused, 600)}")
        target = self._target_of(meta)
        run_id = self._check_run_id(meta)
        try:
            run = await self.jobs.get(target, run_id, self._timeout(timeout))
        except RunNotFound as exc:
            return Resource(
                phase=Phase.FAILED,
                message=f"Databricks run {run_id} is unknown to {target.where} ({exc}): it was deleted, or the "
                "workspace lost it, so its outcome cannot be known",
            )
        except Refused as exc:
            return Resource(phase=Phase.FAILED, message=f"Databricks would not show run {run_id}: {exc}")
        phase, message = self.states.phase_of(run, run_id)
        info = {"run_id": run_id, "job_id": run.get("job_id"), "host": target.where}
        state = run.get("state")
        if isinstance(state, Mapping):
            info["life_cycle_state"] = state.get("life_cycle_state")
            info["result_state"] = state.get("result_state")
        return Resource(phase=phase, message=message, log_links=self._links(target, run, run_id), custom_info=info)

    @staticmethod
    def _links(target: Target, run: Mapping[str, Any], run_id: str) -> list[execution_pb2.TaskLog]:
        job_id = run.get("job_id")
        if isinstance(job_id, int | str) and not isinstance(job_id, bool) and str(job_id).isdigit():
            uri = f"https://{target.instance.host}/#job/{job_id}/run/{run_id}"
        else:
            page = run.get("run_page_url")
            if not isinstance(page, str) or not page.startswith(("https://", "http://")):
                return []
            uri = page  # no job id (an emulator): Databricks' own link to the run
        return [execution_pb2.TaskLog(uri=uri, name="Databricks Console")]

    async def delete(self, resource_meta: DatabricksRunMeta, timeout: float | None = None, **kwargs: Any) -> None:
        meta = resource_meta
        if meta.refused:
            return  # there is no run
        target = self._target_of(meta)
        run_id = self._check_run_id(meta)
        try:
            await self.jobs.cancel(target, run_id, self._timeout(timeout))
        except RunNotFound:
            _log.info("Databricks run %s is unknown to %s: nothing to cancel", run_id, target.where)
            return
        except Refused as exc:  # e.g. a run that already ended
            _log.info("Databricks did not cancel run %s on %s: %s", run_id, target.where, exc)
            return
        _log.info("cancelled Databricks run %s on %s", run_id, target.where)


class DatabricksSparkConnector(DatabricksConnector):
    """``spark`` v0: flytekitplugins-spark's deprecated ``Databricks`` tasks (same templates, older task type)."""

    name = "Databricks Spark Connector"
    task_type: ClassVar[str] = "spark"
