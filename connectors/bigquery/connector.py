"""``bigquery_query_job_task`` (v0): a task's SQL as a BigQuery query job, polled and cancelled.

Templates are what flytekitplugins-bigquery 1.16 and Flyte 2's flyteplugins-bigquery 2.12
serialize (``BigQueryTask``): the SQL in ``sql.statement`` with ``@name`` parameters bound from
the task's inputs (``_params.py``), and ``custom`` = ``{ProjectID, Location, Domain}`` plus the
user's ``QueryJobConfig`` (``_job.py``). The project a template names must be one the
operator allows the task's team (``plugins.bigquery.projects``); the key comes from the
operator's secret. ``resource_meta`` holds the job id, project, location, the team's key and
the *name* of the key's secret: never a key, never inputs.

CreateTask is idempotent: the job id is derived from the task execution id and attempt, so a
CreateTask that propeller retries after a timeout names the job the first call started. The
job is looked up first, and a 409 "already exists" on insert (two calls at once) reads it too.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2, types_pb2

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
from connectors._scoped import DEFAULT, choose, execution_token, lookup, scope_of
from connectors.bigquery._api import AlreadyExists, JobNotFound, JobsClient, Refused, Target
from connectors.bigquery._job import WHO, build_job, destination_project
from connectors.bigquery._params import query_parameters
from connectors.bigquery.settings import BigQuerySettings, ProjectEntry
from connectors.bigquery.states import StateMapper

__all__ = ["BigQueryConnector", "BigQueryJobMeta"]

_log = logging.getLogger(__name__)

SETTING = "plugins.bigquery.projects"
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")
_LOCATION = re.compile(r"^[A-Za-z0-9-]{0,64}$")
_MARGIN = 0.5


@dataclass
class BigQueryJobMeta(ResourceMeta):
    """Finds the job again. The first fields are flytekit's, in its order, so its metas decode."""

    job_id: str
    project: str
    location: str
    team: str = ""
    """The plugins.bigquery.projects key the task was created with ("" in flytekit's metas)."""
    key_secret: str = ""
    has_output: bool = False
    refused: str = ""
    """BigQuery refused the job at insert (its message): GetTask answers FAILED with it."""


class BigQueryConnector(AsyncConnectorBase):
    """BigQuery query jobs as Flyte tasks (task type ``bigquery_query_job_task``, version 0)."""

    name = "BigQuery Connector"
    settings_key: ClassVar[str] = "bigquery"
    settings_model: ClassVar[type[BigQuerySettings]] = BigQuerySettings
    settings: BigQuerySettings

    def __init__(self) -> None:
        super().__init__(metadata_type=BigQueryJobMeta, task_type_name="bigquery_query_job_task", task_type_version=0)
        self.clients = HttpClients()
        self.states = StateMapper()
        self.configure(BigQuerySettings())

    def configure(self, settings: BigQuerySettings) -> None:
        self.settings = settings
        self.jobs = JobsClient(self.clients, settings)

    async def close(self) -> None:
        await self.clients.aclose()

    def _timeout(self, timeout: float | None) -> float:
        """Seconds for one call: the operator's cap, within the caller's deadline (less a margin to answer)."""
        limit = self.settings.request_timeout
        if timeout is not None:
            limit = min(limit, timeout - _MARGIN)
        return max(limit, 0.1)

    # ------------------------------------------------------------------ create

    def _target(self, custom: Mapping[str, Any], task_execution_metadata: Any) -> Target:
        team, entry = choose(self.settings.projects, scope_of(task_execution_metadata), SETTING)
        where = f"{SETTING}.{team}"
        project = custom.get("ProjectID")
        if not isinstance(project, str) or not project.strip():
            raise InvalidRequestError(f"{WHO}: custom.ProjectID is missing: the task names no Google Cloud project")
        project = project.strip()
        if project not in entry.allowed_projects:
            raise InvalidRequestError(
                f"{WHO}: custom.ProjectID {clip(project, 100)!r} is not allowed for this task's project/domain "
                f"({where}.allowed_projects)"
            )
        destination = destination_project(custom)
        if destination is not None and destination not in entry.allowed_projects:
            raise InvalidRequestError(
                f"{WHO}: custom.destinationTable.projectId {destination!r} is not allowed for this task's "
                f"project/domain ({where}.allowed_projects)"
            )
        location = custom.get("Location") or entry.default_location or ""
        if not isinstance(location, str) or not _LOCATION.match(location):
            raise InvalidRequestError(f"{WHO}: custom.Location {clip(str(location), 64)!r} is not a location")
        secret = entry.key_secret
        secrets = custom.get("secrets")
        named = secrets.get("google_application_credentials") if isinstance(secrets, Mapping) else None
        if named:
            if named not in entry.key_secrets():
                raise InvalidRequestError(
                    f"{WHO}: custom.secrets.google_application_credentials {clip(str(named), 100)!r} is not a key "
                    f"secret allowed for this task's project/domain ({where}.key_secret or allowed_key_secrets)"
                )
            secret = str(named)
        return Target(team=team, project=project, location=location, key_secret=secret)

    async def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> BigQueryJobMeta:
        custom = read_custom(task_template)
        target = self._target(custom, task_execution_metadata)
        statement = task_template.sql.statement
        if not statement.strip():
            raise InvalidRequestError(f"{WHO}: sql.statement is empty: the task has no query")
        parameters = query_parameters(inputs, task_template.interface, custom)
        token = execution_token(task_execution_metadata, prefix="flyte", length=64)
        job_id = token or f"flyte-{uuid.uuid4().hex}"
        body = build_job(job_id, target.project, target.location, statement, parameters, custom)
        meta = BigQueryJobMeta(
            job_id=job_id,
            project=target.project,
            location=target.location,
            team=target.team,
            key_secret=target.key_secret,
            has_output="results" in task_template.interface.outputs.variables,
        )
        budget = self._timeout(timeout)
        try:
            job = await self._existing(target, job_id, budget) if token else None
            if job is None:
                try:
                    job = await self.jobs.insert(target, body, budget)
                except AlreadyExists:  # a retried CreateTask racing the first one
                    job = await self.jobs.get(target, job_id, budget)
            else:
                _log.info("BigQuery job %s exists already (a retried CreateTask): following it", job_id)
        except (Refused, JobNotFound) as exc:
            # BigQuery will not take the job (an invalid config, a bad parameter, a project or
            # dataset it does not know): the task fails
            # with its message on the first GetTask, rather than a CreateTask error that propeller
            # would retry as if the service had failed.
            meta.refused = clip(str(exc), 1000)
            _log.info("BigQuery refused a job in project %s: %s", target.project, meta.refused)
            return meta
        reference = job.get("jobReference")
        if isinstance(reference, Mapping) and isinstance(reference.get("location"), str):
            meta.location = reference["location"]  # BigQuery's answer when the template named none
        _log.info("inserted BigQuery job %s in project %s (%s)", job_id, target.project, target.team)
        return meta

    async def _existing(self, target: Target, job_id: str, timeout: float) -> dict[str, Any] | None:
        try:
            return await self.jobs.get(target, job_id, timeout)
        except JobNotFound:
            return None

    # ------------------------------------------------------------------ get / delete

    def _team_of(self, meta: BigQueryJobMeta) -> tuple[str, ProjectEntry]:
        projects = self.settings.projects
        if meta.team:
            return meta.team, lookup(projects, meta.team, SETTING)
        # A meta from flytekit's connector: the entry that allows its project (default first).
        keys = sorted(projects, key=lambda k: (k != DEFAULT, k))
        key = next((k for k in keys if meta.project in projects[k].allowed_projects), "")
        if not key:
            raise InvalidRequestError(f"{WHO}: no entry of {SETTING} allows project {clip(meta.project, 100)!r}")
        return key, projects[key]

    def _target_of(self, meta: BigQueryJobMeta) -> Target:
        if not _JOB_ID.match(meta.job_id or ""):
            raise InvalidRequestError(f"{WHO}: resource_meta job_id {clip(meta.job_id, 80)!r} is not a job id")
        if not isinstance(meta.location, str) or not _LOCATION.match(meta.location):
            raise InvalidRequestError(f"{WHO}: resource_meta location {clip(str(meta.location), 64)!r} is not valid")
        team, entry = self._team_of(meta)
        if meta.project not in entry.allowed_projects:
            raise InvalidRequestError(
                f"{WHO}: project {clip(meta.project, 100)!r} is no longer allowed ({SETTING}.{team}.allowed_projects)"
            )
        secret = meta.key_secret or entry.key_secret
        if secret not in entry.key_secrets():
            raise InvalidRequestError(
                f"{WHO}: resource_meta names key secret {clip(secret, 100)!r}, which {SETTING}.{team} does not "
                "allow (any more)"
            )
        return Target(team=team, project=meta.project, location=meta.location, key_secret=secret)

    def _links(self, meta: BigQueryJobMeta) -> list[execution_pb2.TaskLog]:
        console = self.settings.console_url
        if not console:
            return []
        query = urllib.parse.urlencode(
            {"project": meta.project, "j": f"bq:{meta.location or 'US'}:{meta.job_id}", "page": "queryresults"},
            safe=":",
        )
        return [execution_pb2.TaskLog(uri=f"{console}?{query}", name="BigQuery Console")]

    async def get(self, resource_meta: BigQueryJobMeta, timeout: float | None = None, **kwargs: Any) -> Resource:
        meta = resource_meta
        links = self._links(meta)
        if meta.refused:
            return Resource(phase=Phase.FAILED, message=f"BigQuery refused the job: {meta.refused}", log_links=links)
        target = self._target_of(meta)
        try:
            job = await self.jobs.get(target, meta.job_id, self._timeout(timeout))
        except JobNotFound as exc:
            return Resource(
                phase=Phase.FAILED,
                message=f"BigQuery job {meta.job_id} is unknown to BigQuery in project {meta.project} ({exc}): "
                "its outcome cannot be known",
                log_links=links,
            )
        except Refused as exc:
            return Resource(
                phase=Phase.FAILED, message=f"BigQuery would not show job {meta.job_id}: {exc}", log_links=links
            )
        phase, message = self.states.phase_of(job, meta.job_id)
        # flytekit's metas say nothing of outputs, and its connector always returned the destination.
        wants = meta.has_output or not meta.team
        outputs = _results(job) if phase == Phase.SUCCEEDED and wants else None
        status = job.get("status")
        info: dict[str, Any] = {"job_id": meta.job_id, "project": meta.project, "location": meta.location}
        if isinstance(status, Mapping):
            info["state"] = status.get("state")
        return Resource(phase=phase, message=message, log_links=links, outputs=outputs, custom_info=info)

    async def delete(self, resource_meta: BigQueryJobMeta, timeout: float | None = None, **kwargs: Any) -> None:
        meta = resource_meta
        if meta.refused:
            return  # there is no job
        target = self._target_of(meta)
        try:
            await self.jobs.cancel(target, meta.job_id, self._timeout(timeout))
        except JobNotFound:
            _log.info("BigQuery job %s is unknown in project %s: nothing to cancel", meta.job_id, meta.project)
            return
        except Refused as exc:
            _log.info("BigQuery did not cancel job %s: %s", meta.job_id, exc)
            return
        _log.info("asked BigQuery to cancel job %s in project %s", meta.job_id, meta.project)


def _results(job: Mapping[str, Any]) -> literals_pb2.LiteralMap | None:
    """``results``: the job's destination table as a structured dataset ``bq://project:dataset.table``."""
    configuration = job.get("configuration")
    query = configuration.get("query") if isinstance(configuration, Mapping) else None
    table = query.get("destinationTable") if isinstance(query, Mapping) else None
    if not isinstance(table, Mapping):
        return None
    parts = [table.get("projectId"), table.get("datasetId"), table.get("tableId")]
    if not all(isinstance(p, str) and p for p in parts):
        return None
    uri = f"bq://{parts[0]}:{parts[1]}.{parts[2]}"
    dataset = literals_pb2.StructuredDataset(
        uri=uri,
        metadata=literals_pb2.StructuredDatasetMetadata(structured_dataset_type=types_pb2.StructuredDatasetType()),
    )
    return literals_pb2.LiteralMap(
        literals={"results": literals_pb2.Literal(scalar=literals_pb2.Scalar(structured_dataset=dataset))}
    )
