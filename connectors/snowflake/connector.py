"""``snowflake``: run a task's SQL in Snowflake without waiting, poll it, cancel it.

Templates are the ones flytekitplugins-snowflake 1.16 serializes (``SnowflakeTask``: account,
user, database, schema and warehouse in ``template.config``) and the ones Flyte 2's
flyteplugins-snowflake 2.12 serializes (``Snowflake``: the same in ``template.custom``, plus
``connection_kwargs``); the query is ``template.sql.statement`` in both. The account and user a
template names must be the ones ``plugins.snowflake.accounts`` gives the task's team; the key
comes from the operator's secret, never from the template.

Not idempotent: Snowflake has no request token, so a CreateTask that propeller retries after a
timeout may start the query twice. Each query carries ``QUERY_TAG`` = the task execution
(project/domain/execution/node/attempt) so duplicates can be found in the query history.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2, tasks_pb2, types_pb2

from connector_service import (
    AsyncConnectorBase,
    InvalidRequestError,
    Phase,
    PreconditionError,
    Resource,
    ResourceMeta,
    clip,
    read_custom,
    read_inputs,
)
from connectors._scoped import choose, lookup, scope_of
from connectors.snowflake._bind import bind
from connectors.snowflake._client import QueryRefusedError, SessionKey, SnowflakeClient
from connectors.snowflake._links import query_url
from connectors.snowflake.settings import AccountEntry, SnowflakeSettings, normalize_account
from connectors.snowflake.states import UnknownStatuses, phase_of, query_state

__all__ = ["SnowflakeConnector", "SnowflakeJobMeta"]

_log = logging.getLogger(__name__)

_SETTING = "plugins.snowflake.accounts"
_QUERY_ID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_CONNECTION_KWARGS = {"role"}
_MARGIN = 0.5


@dataclass
class SnowflakeJobMeta(ResourceMeta):
    """Finds the query again. The first fields are flytekit's, in its order, so its metas decode."""

    user: str
    account: str
    database: str
    schema: str
    warehouse: str
    query_id: str
    has_output: bool
    team: str = ""
    """The plugins.snowflake.accounts key the task was created with ("" in flytekit's metas)."""
    role: str = ""
    submitted_at: float = 0.0
    """Epoch seconds of the submission (0: unknown)."""
    error: str = ""
    """Snowflake's message when it refused the statement at submission."""
    generation: int = 1
    """Which SDK serialized the task (1: flytekit, 2: Flyte 2): their results URIs differ."""


@dataclass(frozen=True)
class _Task:
    """What a template asks for, from config (flytekit) or custom (Flyte 2)."""

    account: str
    user: str
    database: str
    schema: str
    warehouse: str
    role: str
    generation: int
    where: str


class SnowflakeConnector(AsyncConnectorBase):
    """Snowflake queries as Flyte tasks (task type ``snowflake``, version 0)."""

    name = "Snowflake Connector"
    settings_key: ClassVar[str] = "snowflake"
    settings_model: ClassVar[type[SnowflakeSettings]] = SnowflakeSettings
    settings: SnowflakeSettings

    def __init__(self) -> None:
        super().__init__(metadata_type=SnowflakeJobMeta, task_type_name="snowflake", task_type_version=0)
        self.settings = SnowflakeSettings()
        self._client: SnowflakeClient | None = None
        self._unknown = UnknownStatuses()

    def configure(self, settings: SnowflakeSettings) -> None:
        self.settings = settings
        self._client = None

    @property
    def client(self) -> SnowflakeClient:
        if self._client is None:
            self._client = SnowflakeClient(self.settings)
        return self._client

    def use_client(self, client: SnowflakeClient) -> None:
        """Replace the client (the tests put a recording fake behind it)."""
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _budget(self, timeout: float | None) -> float:
        limit = self.settings.call_timeout
        return limit if timeout is None else max(min(limit, timeout - _MARGIN), 0.1)

    # ------------------------------------------------------------------ create

    async def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> SnowflakeJobMeta:
        task = _read_task(task_template)
        team, entry = choose(self.settings.accounts, scope_of(task_execution_metadata), _SETTING)
        _check_allowed(task, team, entry)
        statement = task_template.sql.statement
        if not statement.strip():
            raise InvalidRequestError("snowflake: sql.statement is empty: the task has no query")
        sql, params = bind(statement, read_inputs(inputs, task_template))
        key = _session_key(task, entry)
        tag = _query_tag(task_execution_metadata)
        meta = SnowflakeJobMeta(
            user=task.user,
            account=task.account,
            database=task.database,
            schema=task.schema,
            warehouse=key.warehouse,
            query_id="",
            has_output="results" in task_template.interface.outputs.variables,
            team=team,
            role=key.role or "",
            submitted_at=time.time(),
            generation=task.generation,
        )
        try:
            meta.query_id = await self.client.submit(key, sql, params, tag, self._budget(timeout))
        except QueryRefusedError as exc:
            meta.query_id, meta.error = exc.query_id, clip(str(exc), 2000)
            _log.info("Snowflake refused a query of %s in account %s: %s", team, task.account, meta.error)
            return meta
        _log.info("submitted Snowflake query %s in account %s (%s)", meta.query_id, task.account, team)
        return meta

    # ------------------------------------------------------------------ get

    async def get(self, resource_meta: SnowflakeJobMeta, timeout: float | None = None, **kwargs: Any) -> Resource:
        meta = resource_meta
        links = self._links(meta)
        if meta.error:
            return Resource(phase=Phase.FAILED, message=f"Snowflake refused the query: {meta.error}", log_links=links)
        key = self._key_of(meta)
        answer = await self.client.status(key, meta.query_id, self._budget(timeout))
        age = time.time() - meta.submitted_at if meta.submitted_at else None
        phase, message = phase_of(
            query_state(answer),
            meta.query_id,
            age=age,
            no_data_grace=self.settings.no_data_grace,
            unknown=self._unknown,
        )
        outputs = _results(meta) if phase == Phase.SUCCEEDED and meta.has_output else None
        return Resource(phase=phase, message=message, log_links=links, outputs=outputs)

    def _links(self, meta: SnowflakeJobMeta) -> list[execution_pb2.TaskLog]:
        uri = query_url(self.settings.console_url, meta.account, meta.query_id)
        if not uri:
            return []
        return [execution_pb2.TaskLog(uri=uri, name="Snowflake Query Details")]

    def _key_of(self, meta: SnowflakeJobMeta) -> SessionKey:
        """The session a running task's meta names, if its team's entry still allows it."""
        if not _QUERY_ID.match(meta.query_id or ""):
            raise InvalidRequestError(f"snowflake: resource_meta query_id {clip(meta.query_id)!r} is not a query id")
        if meta.team:
            entry = lookup(self.settings.accounts, meta.team, _SETTING)
            team = meta.team
        else:  # a meta issued by flytekit's connector: the entry for its account and user
            team, entry = self._entry_for(meta)
        task = _Task(
            account=meta.account,
            user=meta.user,
            database=meta.database,
            schema=meta.schema,
            warehouse=meta.warehouse,
            role=meta.role,
            generation=meta.generation,
            where="resource_meta",
        )
        _check_allowed(task, team, entry)
        return _session_key(task, entry)

    def _entry_for(self, meta: SnowflakeJobMeta) -> tuple[str, AccountEntry]:
        for team, entry in self.settings.accounts.items():
            if normalize_account(entry.account) == normalize_account(meta.account) and (
                entry.user.upper() == meta.user.upper()
            ):
                return team, entry
        raise PreconditionError(
            f"snowflake: {_SETTING} has no entry for account {clip(meta.account)} and user {clip(meta.user)}, "
            "which this task's resource_meta names"
        )

    # ------------------------------------------------------------------ delete

    async def delete(self, resource_meta: SnowflakeJobMeta, timeout: float | None = None, **kwargs: Any) -> None:
        meta = resource_meta
        if meta.error or not meta.query_id:
            return  # never started
        key = self._key_of(meta)
        try:
            answer = await self.client.cancel(key, meta.query_id, self._budget(timeout))
        except QueryRefusedError as exc:
            # An unknown or finished query: nothing to cancel, which is what DeleteTask wants.
            _log.info("Snowflake did not cancel query %s: %s", meta.query_id, exc)
            return
        _log.info("cancelled Snowflake query %s: %s", meta.query_id, clip(answer))


# --------------------------------------------------------------------------- helpers


def _read_task(template: tasks_pb2.TaskTemplate) -> _Task:
    custom = read_custom(template)
    if custom.get("account"):
        return _from_custom(custom)
    config = dict(template.config)
    values = {}
    for name in ("account", "user", "database", "schema", "warehouse"):
        value = config.get(name, "").strip()
        if not value and name != "warehouse":
            raise InvalidRequestError(f"snowflake: config.{name} is missing (SnowflakeConfig.{name})")
        values[name] = value
    return _Task(**values, role="", generation=1, where="config")


def _from_custom(custom: Mapping[str, Any]) -> _Task:
    """Flyte 2's template: ``custom = {account, user, database, schema, warehouse, connection_kwargs, secrets}``."""
    if custom.get("batch"):
        raise InvalidRequestError("snowflake: custom.batch (multi-row VALUES from list inputs) is not supported")
    values: dict[str, str] = {}
    for name in ("account", "user", "database", "schema", "warehouse"):
        value = custom.get(name, "PUBLIC" if name == "schema" else "")
        if not isinstance(value, str) or (not value.strip() and name != "warehouse"):
            raise InvalidRequestError(f"snowflake: custom.{name} is missing or not a string")
        values[name] = value.strip()
    extra = custom.get("connection_kwargs") or {}
    if not isinstance(extra, Mapping):
        raise InvalidRequestError("snowflake: custom.connection_kwargs must be a mapping")
    refused = sorted(set(extra) - _CONNECTION_KWARGS)
    if refused:
        raise InvalidRequestError(
            f"snowflake: custom.connection_kwargs.{clip(refused[0])} is not allowed (allowed: role); the endpoint "
            "and credentials come from the operator's settings"
        )
    role = extra.get("role") or ""
    if not isinstance(role, str):
        raise InvalidRequestError("snowflake: custom.connection_kwargs.role must be a string")
    return _Task(**values, role=role, generation=2, where="custom")


def _check_allowed(task: _Task, team: str, entry: AccountEntry) -> None:
    """The template's account, user and role must be the ones the team's entry gives it."""
    setting = f"{_SETTING}.{team}"
    if normalize_account(task.account) != normalize_account(entry.account):
        raise InvalidRequestError(
            f"snowflake: {task.where}.account {clip(task.account)!r} is not allowed for this team: {setting} allows "
            f"{entry.account!r}"
        )
    if task.user.upper() != entry.user.upper():
        raise InvalidRequestError(
            f"snowflake: {task.where}.user {clip(task.user)!r} is not allowed: {setting} runs queries as {entry.user!r}"
        )
    if task.role and entry.role and task.role.upper() != entry.role.upper():
        raise InvalidRequestError(
            f"snowflake: role {clip(task.role)!r} is not allowed: {setting} uses role {entry.role!r}"
        )
    if not task.warehouse and not entry.warehouse:
        raise InvalidRequestError(
            f"snowflake: the task names no warehouse ({task.where}.warehouse) and {setting}.warehouse is not set"
        )


def _session_key(task: _Task, entry: AccountEntry) -> SessionKey:
    return SessionKey(
        account=entry.account,
        user=entry.user,
        role=task.role or entry.role,
        warehouse=task.warehouse or entry.warehouse or "",
        database=task.database,
        schema=task.schema,
        private_key_secret=entry.private_key_secret,
        private_key_passphrase_secret=entry.private_key_passphrase_secret,
    )


def _query_tag(metadata: agent_pb2.TaskExecutionMetadata | None) -> str | None:
    """``flyte:<project>/<domain>/<execution>/<node>/<attempt>``: what the query history can be searched by."""
    if metadata is None:
        return None
    tid = metadata.task_execution_id
    node = tid.node_execution_id
    wf = node.execution_id
    if not wf.name and not node.node_id:
        return None
    return clip(f"flyte:{wf.project}/{wf.domain}/{wf.name}/{node.node_id}/{tid.retry_attempt}", 2000)


def _results(meta: SnowflakeJobMeta) -> literals_pb2.LiteralMap:
    """``results``: the query's result as a structured dataset, in the URI format each SDK reads."""
    if meta.generation == 2:  # flyteplugins-snowflake's DataFrame
        uri = f"snowflake://{meta.user}/{meta.account}/{meta.warehouse}/{meta.database}/{meta.schema}/{meta.query_id}"
    else:  # flytekitplugins-snowflake's StructuredDataset
        uri = f"snowflake://{meta.user}:{meta.account}/{meta.warehouse}/{meta.database}/{meta.schema}/{meta.query_id}"
    dataset = literals_pb2.StructuredDataset(
        uri=uri,
        metadata=literals_pb2.StructuredDatasetMetadata(structured_dataset_type=types_pb2.StructuredDatasetType()),
    )
    return literals_pb2.LiteralMap(
        literals={"results": literals_pb2.Literal(scalar=literals_pb2.Scalar(structured_dataset=dataset))}
    )
