"""``FileSensor``: done when a path exists, locally or on an object store via fsspec."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connector_service import clip
from connector_service.errors import InvalidRequestError, UnavailableError
from connector_service.plugins import CommaList
from sensors.base import BaseSensor

__all__ = ["FileSensor"]

DEFAULT_PROTOCOLS = ("file", "s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl")


class FileSensorSettings(BaseModel):
    """``plugins.file_sensor``: what task paths may reach, decided by the operator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocols: CommaList | None = Field(
        None, description=f"URL schemes a task's path may use (default: {', '.join(DEFAULT_PROTOCOLS)})."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for remote paths, e.g. {client_kwargs: {endpoint_url: ...}} for an S3 endpoint.",
    )


class FileSensor(BaseSensor):
    """Waits for ``path``. Remote schemes (``s3://``, ``gs://``, ...) need fsspec and its backend.

    The path comes from the task, so what it may reach is the operator's choice, not the
    task's: only ``protocols`` are accepted (not ``http://``, which would let a task probe
    internal addresses from inside the cluster), and fsspec ``storage_options`` come from the
    constructor only; a task's ``sensor_config`` cannot point the service's credentials at
    another endpoint. Credentials come from the backend's usual environment (``AWS_*`` etc.);
    flytekit's ``FLYTE_AWS_ENDPOINT`` is honoured for ``s3://``, as flytekit's sensor does.
    Set ``plugins.file_sensor.protocols`` / ``storage_options`` (or register
    ``FileSensor(protocols=[...], storage_options={...})``) to change either.

    A store that cannot be reached answers UNAVAILABLE (propeller polls again), not "absent".
    """

    aliases = ("flytekit.sensor.file_sensor.FileSensor",)
    settings_key = "file_sensor"
    settings_model = FileSensorSettings

    def __init__(
        self,
        name: str | None = None,
        *,
        protocols: Iterable[str] = DEFAULT_PROTOCOLS,
        storage_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.protocols = frozenset(protocols)
        self.storage_options = dict(storage_options or {})

    def configure(self, settings: FileSensorSettings) -> None:
        # Settings the operator left unset keep what the constructor was given.
        super().configure(settings)
        if settings.protocols is not None:
            self.protocols = frozenset(settings.protocols)
        if settings.storage_options:
            self.storage_options = dict(settings.storage_options)

    def check(self, path: str = "", **inputs: Any) -> None:
        self._scheme(path)

    def _scheme(self, path: str) -> str:
        scheme, sep, _ = str(path).partition("://")
        if sep and scheme not in self.protocols:
            raise InvalidRequestError(
                f"FileSensor: {clip(scheme)}:// paths are not allowed here "
                f"(allowed: {', '.join(sorted(self.protocols))})"
            )
        return scheme if sep else ""

    async def poke(self, path: str) -> bool:
        scheme = self._scheme(path)
        rest = str(path).partition("://")[2]
        if not scheme:
            return await asyncio.to_thread(os.path.exists, str(path))
        if scheme == "file":
            return await asyncio.to_thread(os.path.exists, rest)
        return await asyncio.to_thread(self._remote_exists, str(path), scheme)

    def _remote_exists(self, path: str, scheme: str) -> bool:
        try:
            import fsspec
        except ImportError:
            raise RuntimeError(
                f"FileSensor: {clip(scheme)}:// paths need fsspec and its {clip(scheme)} backend installed "
                "(pip install 'flyte-connector-service[fsspec]' s3fs)"
            ) from None
        options: dict[str, Any] = dict(self.storage_options)
        endpoint = os.environ.get("FLYTE_AWS_ENDPOINT")
        if scheme in ("s3", "s3a") and endpoint and "endpoint_url" not in options:
            options.setdefault("client_kwargs", {}).setdefault("endpoint_url", endpoint)
        # fsspec caches filesystem instances by their options, so this reuses one client.
        fs, fs_path = fsspec.core.url_to_fs(path, **options)
        # A listing cached by an earlier poke must not hide a file written since.
        fs.invalidate_cache(fs_path)
        try:
            return bool(fs.exists(fs_path))
        except Exception as exc:
            if _is_unreachable(exc):
                raise UnavailableError(
                    f"FileSensor: cannot reach the store for {clip(scheme)}:// paths: {clip(exc)}"
                ) from None
            raise


def _is_unreachable(exc: BaseException) -> bool:
    """Connection failures, whichever client library (botocore, aiohttp, requests) raised them."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        names = {cls.__name__ for cls in type(current).__mro__}
        if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError"}:
            return True
        current = current.__cause__ or current.__context__
    return False
