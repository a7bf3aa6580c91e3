"""flyte-connector-service: a lean, standalone Flyte connector daemon and its connector SDK.

Connector authors need only this module's names (and ``sensors.BaseSensor`` for sensors).
"""

from connector_service._literals import Directory, File, LiteralConversionError
from connector_service._messages import clip
from connector_service.clients import SharedClients
from connector_service.config import Settings
from connector_service.connection import Connection
from connector_service.connector import (
    AsyncConnectorBase,
    ConnectorBase,
    Phase,
    Resource,
    ResourceMeta,
    SyncConnectorBase,
    TaskCategory,
    convert_to_flyte_phase,
    is_terminal_phase,
    read_custom,
    read_inputs,
)
from connector_service.errors import InvalidRequestError, NotFoundError, PreconditionError, UnavailableError
from connector_service.plugins import CommaList
from connector_service.process import CommandError, CommandResult, run_command
from connector_service.registry import ConnectorNotFoundError, ConnectorRegistry, RegistryError
from connector_service.secrets import SecretNotFoundError, get_secret
from connector_service.server import ConnectorService
from connector_service.testing import ConnectorTestHarness

__all__ = [
    # The connector SDK
    "AsyncConnectorBase",
    "CommaList",
    "CommandResult",
    "Connection",
    "ConnectorBase",
    "Directory",
    "File",
    "Phase",
    "Resource",
    "ResourceMeta",
    "SharedClients",
    "SyncConnectorBase",
    "TaskCategory",
    "clip",
    "convert_to_flyte_phase",
    "get_secret",
    "is_terminal_phase",
    "read_custom",
    "read_inputs",
    "run_command",
    # Errors a connector may raise or meet
    "CommandError",
    "ConnectorNotFoundError",
    "InvalidRequestError",
    "LiteralConversionError",
    "NotFoundError",
    "PreconditionError",
    "RegistryError",
    "SecretNotFoundError",
    "UnavailableError",
    # Running and testing
    "ConnectorRegistry",
    "ConnectorService",
    "ConnectorTestHarness",
    "Settings",
]
