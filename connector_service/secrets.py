"""Secrets for connectors, found where flytekit's images put them.

Connectors call ``get_secret("api_key")`` rather than reading the environment themselves so
that the lookup order (the calling request's connection, sent by Flyte 2's executor; then env
``_FSEC_<KEY>``; then a file ``<dir>/<key>``) matches what a flytekit connector expects, and
so that error messages name the places looked at without ever echoing a value.
"""

from __future__ import annotations

import os
from pathlib import Path

from connector_service.connection import current_connection

__all__ = ["SecretNotFoundError", "get_secret"]

_DEFAULT_DIR = "/etc/secrets"


class SecretNotFoundError(KeyError):
    """No env var or file holds the secret; the message says where we looked."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def get_secret(key: str, *, group: str | None = None) -> str:
    """Return the secret ``key`` (optionally within ``group``), or raise SecretNotFoundError.

    flytekit's variables ``FLYTE_SECRETS_ENV_PREFIX``, ``FLYTE_SECRETS_DEFAULT_DIR`` and
    ``FLYTE_SECRETS_FILE_PREFIX`` are honoured, as is ``CONNECTOR_SECRETS_DIR`` (the
    service's own setting), which is searched before the default directory.
    """
    if not key:
        raise ValueError("secret key must not be empty")
    connection = current_connection()
    if connection is not None and connection.secrets:
        value = connection.secrets.get(f"{group}_{key}" if group else key)
        if value is None and group:
            value = connection.secrets.get(key)
        if value is not None:
            return value
    env_prefix = os.environ.get("FLYTE_SECRETS_ENV_PREFIX", "_FSEC_")
    env_name = f"{env_prefix}{group.upper() + '_' if group else ''}{key.upper()}"
    value = os.environ.get(env_name)
    if value is not None:
        return value

    file_prefix = os.environ.get("FLYTE_SECRETS_FILE_PREFIX", "")
    relative = Path(group.lower()) / f"{file_prefix}{key.lower()}" if group else Path(f"{file_prefix}{key.lower()}")
    dirs = [d for d in (os.environ.get("CONNECTOR_SECRETS_DIR"), os.environ.get("FLYTE_SECRETS_DEFAULT_DIR")) if d]
    dirs.append(_DEFAULT_DIR)
    looked = ["the request's connection"] if connection is not None and connection.secrets else []
    looked.append(f"env var {env_name}")
    for directory in dict.fromkeys(dirs):
        path = Path(directory) / relative
        looked.append(f"file {path}")
        try:
            return path.read_text().strip("\n")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
    raise SecretNotFoundError(f"secret {key!r} not found; looked in " + ", ".join(looked))
