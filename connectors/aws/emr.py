"""``emr_serverless`` (v0): a Spark or Hive job run on an EMR Serverless application.

The template is flytekitplugins-awsemrserverless's (``_emr_plan.py``). CreateTask finds the
application (by id, or by name with ListApplications), starts it if it is CREATED or STOPPED,
and submits the job run once the application is STARTED, with a ``clientToken`` derived from
the task execution id and attempt (``connectors._scoped.execution_token``), so a CreateTask
that propeller retries names the same job run.

While the application starts, ``resource_meta`` carries the plan (the StartJobRun parameters,
small JSON) and no job run id. GetTask then checks the application; once it is STARTED it
looks for the job run by its name (which ends with the token) and submits it only if there is
none, with the same clientToken. flytekit's connector submits a new job run on every poll while
the application starts, and one more on delete; DeleteTask here never submits: it cancels the
job run if there is one.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import uuid
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
from connectors._scoped import execution_token
from connectors.aws._client import AwsClients, ClientKey, Refused
from connectors.aws._emr_plan import WHO, job_plan
from connectors.aws._team import client_key, region_of, team_named, team_of
from connectors.aws.settings import EmrServerlessSettings, check_region
from connectors.aws.states import StateMapper

__all__ = ["EmrServerlessConnector", "EmrServerlessMeta"]

_log = logging.getLogger(__name__)

KEY = "emr_serverless"
SERVICE = "emr-serverless"
MAX_PLAN = 16 * 1024
_ACTIVE_APPS = ["CREATED", "STARTING", "STARTED", "STOPPING", "STOPPED"]
_NEEDS_START = {"CREATED", "STOPPED"}
_WAITING = {"CREATING", "STARTING", "STOPPING"}
_ACTIVE_RUNS = ["SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED"]


@dataclass
class EmrServerlessMeta(ResourceMeta):
    """Finds the job run again. ``plan`` only while the application starts; never inputs or credentials."""

    application_id: str
    job_run_id: str = ""
    region: str = ""
    team: str = ""
    client_token: str = ""
    job_name: str = ""
    created_at: float = 0.0
    plan: str = ""
    """The StartJobRun parameters (JSON) while no job run was submitted yet."""
    refused: str = ""
    """EMR Serverless refused the job (its message): GetTask answers FAILED with it."""


class EmrServerlessConnector(AsyncConnectorBase):
    """Submits a job run once its application is started, follows it, cancels it on abort."""

    name = "EMR Serverless Connector"
    settings_key: ClassVar[str] = KEY
    settings_model: ClassVar[type[EmrServerlessSettings]] = EmrServerlessSettings
    settings: EmrServerlessSettings

    def __init__(self) -> None:
        super().__init__(metadata_type=EmrServerlessMeta, task_type_name="emr_serverless", task_type_version=0)
        self.states = StateMapper()
        self.configure(EmrServerlessSettings())

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        self.clients = AwsClients(settings.request_timeout)

    async def close(self) -> None:
        await self.clients.aclose()

    async def _call(self, target: ClientKey, operation: str, deadline: float, **params: Any) -> dict[str, Any]:
        return await self.clients.call(WHO, target, operation, params, deadline - time.monotonic())

    # ------------------------------------------------------------------ create

    async def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> EmrServerlessMeta:
        deadline = time.monotonic() + self.clients.budget(timeout)
        custom = read_custom(task_template)
        key, team = team_of(self.settings, KEY, task_execution_metadata)
        region = region_of(self.settings, KEY, key, team, custom.get("region"), WHO, "custom.region")
        token = execution_token(task_execution_metadata, prefix="flyte", length=40) or f"flyte-{uuid.uuid4().hex}"
        job_name = f"{clip(task_template.id.name or 'flyte-task', 180)}-{token}"
        plan = job_plan(custom, job_name, task_execution_metadata)
        if plan.by_name and not self.settings.allow_application_names:
            raise InvalidRequestError(
                f"{WHO}: custom.application_id must be an application id here (plugins.{KEY}.allow_application_names)"
            )
        text = json.dumps(plan.params, separators=(",", ":"), sort_keys=True)
        if len(text) > MAX_PLAN:
            raise InvalidRequestError(f"{WHO}: the job run's parameters are larger than {MAX_PLAN} bytes")
        target = client_key(self.settings, team, SERVICE, region)
        meta = EmrServerlessMeta(
            application_id="",
            region=region,
            team=key,
            client_token=token,
            job_name=job_name,
            created_at=round(time.time(), 3),
            plan=text,
        )
        try:
            meta.application_id = await self._application_id(target, plan.application, plan.by_name, deadline)
            state = await self._start_if_needed(target, meta.application_id, deadline)
            if state == "STARTED":
                meta.job_run_id = await self._submit(target, meta, deadline)
                meta.plan = ""
        except Refused as exc:
            meta.refused = clip(str(exc), 600)
            _log.info("EMR Serverless refused job %s: %s", job_name, meta.refused)
            return meta
        _log.info("EMR Serverless job %s on %s: %s", job_name, meta.application_id, meta.job_run_id or "pending start")
        return meta

    async def _application_id(self, target: ClientKey, application: str, by_name: bool, deadline: float) -> str:
        if not by_name:
            return application
        token: str | None = None
        for _ in range(20):  # 20 pages of 50: plenty for the applications of one account and region
            params: dict[str, Any] = {"states": _ACTIVE_APPS, "maxResults": 50}
            if token:
                params["nextToken"] = token
            page = await self._call(target, "list_applications", deadline, **params)
            for app in page.get("applications") or []:
                if app.get("name") == application:
                    return str(app["id"])
            token = page.get("nextToken")
            if not token:
                break
        raise Refused(
            "ResourceNotFoundException",
            f"no active EMR Serverless application is named {application!r} in {target.region} "
            "(this connector does not create applications)",
            404,
        )

    async def _start_if_needed(self, target: ClientKey, application_id: str, deadline: float) -> str:
        """The application's state after asking it to start if it was CREATED or STOPPED."""
        app = (await self._call(target, "get_application", deadline, applicationId=application_id)).get("application")
        state = str((app or {}).get("state", ""))
        if state in _NEEDS_START:
            try:
                await self._call(target, "start_application", deadline, applicationId=application_id)
            except Refused as exc:  # another task started it first (it is STARTING now): read it again
                _log.info("EMR Serverless application %s did not start on request: %s", application_id, exc)
            app = (await self._call(target, "get_application", deadline, applicationId=application_id))["application"]
            state = str(app.get("state", ""))
        if state == "TERMINATED":
            raise Refused("ValidationException", f"application {application_id} is terminated", 400)
        return state

    async def _submit(self, target: ClientKey, meta: EmrServerlessMeta, deadline: float) -> str:
        params = json.loads(meta.plan)
        answer = await self._call(
            target,
            "start_job_run",
            deadline,
            applicationId=meta.application_id,
            clientToken=meta.client_token,
            **params,
        )
        return str(answer["jobRunId"])

    async def _find(self, target: ClientKey, meta: EmrServerlessMeta, deadline: float, states: list[str]) -> str:
        """The id of the job run this task submitted (by its name, which ends with the token), or ""."""
        params: dict[str, Any] = {"applicationId": meta.application_id, "maxResults": 50}
        if states:
            params["states"] = states
        if meta.created_at:
            params["createdAtAfter"] = meta.created_at - 60
        token: str | None = None
        for _ in range(20):
            if token:
                params["nextToken"] = token
            page = await self._call(target, "list_job_runs", deadline, **params)
            for run in page.get("jobRuns") or []:
                if run.get("name") == meta.job_name:
                    return str(run["id"])
            token = page.get("nextToken")
            if not token:
                return ""
        return ""

    # ------------------------------------------------------------------ get / delete

    def _target(self, meta: EmrServerlessMeta) -> ClientKey:
        team = team_named(self.settings, KEY, meta.team)
        try:
            region = check_region(meta.region)
        except ValueError:
            raise InvalidRequestError(f"{WHO}: resource_meta region is not a region") from None
        return client_key(self.settings, team, SERVICE, region)

    async def get(self, resource_meta: EmrServerlessMeta, timeout: float | None = None, **kwargs: Any) -> Resource:
        meta = resource_meta
        if meta.refused:
            return Resource(phase=Phase.FAILED, message=f"EMR Serverless refused the job run: {meta.refused}")
        deadline = time.monotonic() + self.clients.budget(timeout)
        target = self._target(meta)
        job_run_id = meta.job_run_id
        try:
            if not job_run_id:
                state = await self._start_if_needed(target, meta.application_id, deadline)
                if state != "STARTED":
                    shown = clip(state or "unknown", 40)
                    return Resource(
                        phase=Phase.INITIALIZING if state in _WAITING | _NEEDS_START else Phase.RUNNING,
                        message=f"EMR Serverless application {meta.application_id} is {shown}; the job run is "
                        "submitted once it is STARTED",
                        log_links=self._links(meta, ""),
                    )
                job_run_id = await self._find(target, meta, deadline, []) or await self._submit(target, meta, deadline)
            answer = await self._call(
                target, "get_job_run", deadline, applicationId=meta.application_id, jobRunId=job_run_id
            )
        except Refused as exc:
            return Resource(phase=Phase.FAILED, message=f"EMR Serverless job run {job_run_id or '-'}: {exc}")
        job = answer.get("jobRun") or {}
        phase, message = self.states.job_run(job, job_run_id)
        info = {"application_id": meta.application_id, "job_run_id": job_run_id, "state": job.get("state")}
        outputs = literals_pb2.LiteralMap() if phase == Phase.SUCCEEDED else None
        return Resource(
            phase=phase, message=message, outputs=outputs, log_links=self._links(meta, job_run_id), custom_info=info
        )

    @staticmethod
    def _links(meta: EmrServerlessMeta, job_run_id: str) -> list[execution_pb2.TaskLog]:
        region = urllib.parse.quote(meta.region)
        app = urllib.parse.quote(meta.application_id)
        uri = f"https://{region}.console.aws.amazon.com/emr/home?region={region}#/serverless/{app}"
        if job_run_id:
            uri += f"/jobs/{urllib.parse.quote(job_run_id)}"
        return [execution_pb2.TaskLog(uri=uri, name="EMR Serverless Console")]

    async def delete(self, resource_meta: EmrServerlessMeta, timeout: float | None = None, **kwargs: Any) -> None:
        meta = resource_meta
        if meta.refused or not meta.application_id:
            return
        deadline = time.monotonic() + self.clients.budget(timeout)
        target = self._target(meta)
        try:
            job_run_id = meta.job_run_id or await self._find(target, meta, deadline, _ACTIVE_RUNS)
            if not job_run_id:
                _log.info("EMR Serverless job %s was never submitted: nothing to cancel", meta.job_name)
                return
            await self._call(target, "cancel_job_run", deadline, applicationId=meta.application_id, jobRunId=job_run_id)
        except Refused as exc:  # unknown, or already finished
            _log.info("EMR Serverless did not cancel job %s: %s", meta.job_name, exc)
            return
        _log.info("cancelled EMR Serverless job run %s on %s", job_run_id, meta.application_id)
