"""``sagemaker-endpoint`` (v0): a SageMaker endpoint created, followed until in service, deleted on abort.

Templates are flytekitplugins-awssagemaker's ``SageMakerEndpointTask``: ``custom = {config,
region}``, ``config`` being ``CreateEndpoint``'s parameters with ``{inputs.x}`` placeholders
(an input named ``region`` overrides ``custom.region``). The output ``result`` is
``{"EndpointArn": ...}``, as flytekit's.

Unlike flytekit's connector: ``resource_meta`` is the endpoint's name, region and the team's
key (flytekit pickles the config and the inputs into it); every endpoint status maps
(``states.py``); "already exists" on create follows the existing endpoint (a CreateTask that
propeller retries after a timeout, or a re-run of the same workflow); a refused create fails
the task with SageMaker's message; DeleteTask of an endpoint that is gone is fine.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
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
    read_inputs,
)
from connectors.aws._client import AwsClients, ClientKey, Refused
from connectors.aws._team import client_key, region_of, team_named, team_of
from connectors.aws._values import dict_literal, format_config
from connectors.aws.settings import SageMakerSettings, check_region
from connectors.aws.states import StateMapper

__all__ = ["SageMakerEndpointConnector", "SageMakerEndpointMeta"]

_log = logging.getLogger(__name__)

WHO = "sagemaker-endpoint"
KEY = "sagemaker"
SERVICE = "sagemaker"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_EXISTS = "Cannot create already existing"
_MISSING = "Could not find endpoint"


@dataclass
class SageMakerEndpointMeta(ResourceMeta):
    """Finds the endpoint again: its name, region and the team's key. Never inputs or credentials."""

    endpoint_name: str
    region: str = ""
    team: str = ""
    refused: str = ""
    """SageMaker refused the create (its message): GetTask answers FAILED with it."""


class SageMakerEndpointConnector(AsyncConnectorBase):
    """Creates a SageMaker endpoint and reports it SUCCEEDED once InService."""

    name = "SageMaker Endpoint Connector"
    settings_key: ClassVar[str] = KEY
    settings_model: ClassVar[type[SageMakerSettings]] = SageMakerSettings
    settings: SageMakerSettings

    def __init__(self) -> None:
        super().__init__(metadata_type=SageMakerEndpointMeta, task_type_name="sagemaker-endpoint", task_type_version=0)
        self.states = StateMapper()
        self.configure(SageMakerSettings())

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        self.clients = AwsClients(settings.request_timeout)

    async def close(self) -> None:
        await self.clients.aclose()

    async def create(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> SageMakerEndpointMeta:
        custom = read_custom(task_template)
        key, team = team_of(self.settings, KEY, task_execution_metadata)
        values = read_inputs(inputs, task_template)
        asked = values.get("region") or custom.get("region")
        field = "the input region" if values.get("region") else "custom.region"
        region = region_of(self.settings, KEY, key, team, asked, WHO, field)
        params, _ = format_config(custom.get("config"), values, {}, SERVICE, WHO)
        name = params.get("EndpointName")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequestError(
                f"{WHO}: custom.config.EndpointName must be a SageMaker endpoint name (letters, digits, '-'; "
                f"at most 63), got {clip(str(name), 80)!r}"
            )
        if not isinstance(params.get("EndpointConfigName"), str):
            raise InvalidRequestError(f"{WHO}: custom.config.EndpointConfigName is required (a string)")
        meta = SageMakerEndpointMeta(endpoint_name=name, region=region, team=key)
        target = client_key(self.settings, team, SERVICE, region)
        try:
            await self.clients.call(WHO, target, "create_endpoint", params, self.clients.budget(timeout))
        except Refused as exc:
            if exc.code == "ValidationException" and _EXISTS in exc.message:
                _log.info("SageMaker endpoint %s in %s exists already: following it", name, region)
                return meta
            meta.refused = clip(str(exc), 600)
            _log.info("SageMaker refused endpoint %s in %s: %s", name, region, meta.refused)
            return meta
        _log.info("creating SageMaker endpoint %s in %s for team %s", name, region, key)
        return meta

    def _target(self, meta: SageMakerEndpointMeta) -> ClientKey:
        team = team_named(self.settings, KEY, meta.team)
        try:
            region = check_region(meta.region)
        except ValueError:
            raise InvalidRequestError(
                f"{WHO}: resource_meta region {clip(meta.region, 40)!r} is not a region"
            ) from None
        if not _NAME.match(meta.endpoint_name):
            raise InvalidRequestError(f"{WHO}: resource_meta endpoint_name is not a SageMaker endpoint name")
        return client_key(self.settings, team, SERVICE, region)

    async def get(self, resource_meta: SageMakerEndpointMeta, timeout: float | None = None, **kwargs: Any) -> Resource:
        meta = resource_meta
        if meta.refused:
            return Resource(phase=Phase.FAILED, message=f"SageMaker refused to create the endpoint: {meta.refused}")
        target = self._target(meta)
        params = {"EndpointName": meta.endpoint_name}
        try:
            answer = await self.clients.call(WHO, target, "describe_endpoint", params, self.clients.budget(timeout))
        except Refused as exc:
            if _MISSING in exc.message:
                return Resource(
                    phase=Phase.FAILED,
                    message=f"SageMaker endpoint {meta.endpoint_name} does not exist in {meta.region} (deleted?): "
                    f"{exc}",
                )
            return Resource(phase=Phase.FAILED, message=f"SageMaker would not describe the endpoint: {exc}")
        phase, message = self.states.endpoint(answer, meta.endpoint_name)
        outputs = None
        if phase == Phase.SUCCEEDED:
            outputs = literals_pb2.LiteralMap()
            outputs.literals["result"].CopyFrom(dict_literal({"EndpointArn": answer.get("EndpointArn")}))
        info = {"endpoint_name": meta.endpoint_name, "region": meta.region, "status": answer.get("EndpointStatus")}
        return Resource(phase=phase, message=message, outputs=outputs, log_links=self._links(meta), custom_info=info)

    @staticmethod
    def _links(meta: SageMakerEndpointMeta) -> list[execution_pb2.TaskLog]:
        region = urllib.parse.quote(meta.region)
        uri = (
            f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
            f"#/endpoints/{urllib.parse.quote(meta.endpoint_name)}"
        )
        return [execution_pb2.TaskLog(uri=uri, name="SageMaker Console")]

    async def delete(self, resource_meta: SageMakerEndpointMeta, timeout: float | None = None, **kwargs: Any) -> None:
        meta = resource_meta
        if meta.refused:
            return  # there is no endpoint
        target = self._target(meta)
        try:
            await self.clients.call(
                WHO, target, "delete_endpoint", {"EndpointName": meta.endpoint_name}, self.clients.budget(timeout)
            )
        except Refused as exc:
            if _MISSING in exc.message:
                _log.info("SageMaker endpoint %s is gone already", meta.endpoint_name)
                return
            _log.info("SageMaker did not delete endpoint %s: %s", meta.endpoint_name, exc)
            return
        _log.info("deleting SageMaker endpoint %s in %s", meta.endpoint_name, meta.region)
