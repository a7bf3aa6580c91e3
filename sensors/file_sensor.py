"""``FileSensor``: done when a path exists, locally or on an object store via fsspec."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sensors.base import BaseSensor

__all__ = ["FileSensor"]


class FileSensor(BaseSensor):
    """Waits for ``path``. Remote schemes (``s3://``, ``gs://``, ...) need fsspec and its backend.

    ``sensor_config`` may carry ``storage_options`` (non-secret, e.g. an endpoint URL) for
    fsspec; credentials come from the backend's usual environment (``AWS_*`` etc.).
    flytekit's ``FLYTE_AWS_ENDPOINT`` is honoured for ``s3://``, as flytekit's sensor does.
    """

    aliases = ("flytekit.sensor.file_sensor.FileSensor",)

    async def poke(self, path: str) -> bool:  # type: ignore[override]
        scheme, sep, _ = str(path).partition("://")
        if not sep or scheme == "file":
            local = str(path)[len("file://") :] if scheme == "file" and sep else str(path)
            return await asyncio.to_thread(os.path.exists, local)
        return await asyncio.to_thread(self._remote_exists, str(path), scheme)

    def _remote_exists(self, path: str, scheme: str) -> bool:
        try:
            import fsspec
        except ImportError:
            raise RuntimeError(
                f"FileSensor: {scheme}:// paths need fsspec and its {scheme} backend installed "
                "(pip install 'flyte-connector-service[fsspec]' s3fs)"
            ) from None
        options: dict[str, Any] = dict(self.sensor_config.get("storage_options") or {})
        endpoint = os.environ.get("FLYTE_AWS_ENDPOINT")
        if scheme in ("s3", "s3a") and endpoint and "endpoint_url" not in options:
            options.setdefault("client_kwargs", {}).setdefault("endpoint_url", endpoint)
        # A fresh filesystem per poke: fsspec caches instances, and a poke is at most
        # one call every ~30 s per task, so instance caching is all the pooling needed.
        fs, fs_path = fsspec.core.url_to_fs(path, **options)
        return bool(fs.exists(fs_path))
