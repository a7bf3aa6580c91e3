"""Operator settings of the Slurm connectors: ``plugins.slurm``.

Where jobs may be submitted (which login nodes, or this machine) and with which key is the
operator's decision: a task template only *names* a host, and only hosts listed here are ever
contacted. The defaults refuse everything (no SSH host, no local submission), so a service
that nobody configured for Slurm cannot be used to run jobs anywhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from connector_service import CommaList

__all__ = ["HostEntry", "SlurmSettings", "parse_host_entry"]

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_USERNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*\$?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class HostEntry:
    """One allowed SSH target: the name templates use, its port, and optionally a fixed user."""

    host: str
    port: int = 22
    username: str | None = None

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{user}{host}:{self.port}"


def parse_host_entry(text: str) -> HostEntry:
    """``[user@]host[:port]`` (IPv6 as ``[::1]:22``) into a HostEntry; ValueError says what is wrong."""
    entry = text.strip()
    username: str | None = None
    if "@" in entry:
        username, entry = entry.rsplit("@", 1)
        if not _USERNAME.match(username):
            raise ValueError(f"{text!r}: {username!r} is not a valid user name")
    port = 22
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected [ipv6]:port")
            port = _port(text, rest[1:])
        if not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address")
    else:
        host, sep, port_text = entry.partition(":")
        if sep:
            port = _port(text, port_text)
        if not _HOSTNAME.match(host):
            raise ValueError(f"{text!r}: {host!r} is not a host name")
    return HostEntry(host=host.lower(), port=port, username=username)


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{text!r}: {value!r} is not a port number")
    return int(value)


def _json_object(value: Any) -> Any:
    # Env vars carry the mapping as JSON (CONNECTOR_PLUGINS__SLURM__ENV='{"SLURM_CONF": "..."}').
    if isinstance(value, str):
        return json.loads(value) if value.strip() else {}
    return value


class SlurmSettings(BaseModel):
    """``plugins.slurm``: what the ``slurm`` and ``slurm_fn`` connectors may reach, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_hosts: CommaList = Field(
        default_factory=list,
        description="SSH targets a template's ssh_config.host may name, as [user@]host[:port] (port 22 by "
        "default; a user here is the only one templates may log in as). Empty: SSH is refused.",
    )
    local_hosts: CommaList = Field(
        default_factory=list,
        description="Host names that mean 'submit on this machine, as the service's user' (e.g. localhost); a "
        "template with no ssh_config.host also submits locally when this is not empty. Empty: local submission "
        "is refused.",
    )
    known_hosts: Path | None = Field(
        default=None,
        validate_default=True,
        description="OpenSSH known_hosts file with the host keys of allowed_hosts; required with allowed_hosts. "
        "Host keys are always checked, never accepted on first use.",
    )
    private_key_secret: str = Field(
        default="slurm_private_key", description="Secret (get_secret) holding the SSH private key (OpenSSH/PEM)."
    )
    private_key_passphrase_secret: str | None = Field(
        default=None, description="Secret holding the private key's passphrase, if it has one."
    )
    username: str | None = Field(
        default=None, description="SSH user when neither the allowed_hosts entry nor the template names one."
    )
    connect_timeout: float = Field(default=10.0, gt=0, le=300, description="Seconds to open an SSH connection.")
    command_timeout: float = Field(
        default=30.0, gt=0, le=600, description="Upper bound in seconds on one Slurm command (the call's deadline too)."
    )
    work_dir: str = Field(
        default=".flyte-slurm",
        description="Directory on the submit host, shared with the compute nodes, for job stdout and outputs "
        "files; relative to the submitting user's home directory unless absolute.",
    )
    env: Annotated[dict[str, str], BeforeValidator(_json_object)] = Field(
        default_factory=dict,
        description="Environment for the Slurm commands (e.g. SLURM_CONF), locally and over SSH; jobs inherit it.",
    )
    log_link_template: str = Field(
        default="",
        description="URL of a job's logs for the UI, with {job_id}, {host} and {stdout} (URL-quoted) filled in; "
        "empty: no log link.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed(cls, value: list[str]) -> list[str]:
        seen: dict[str, HostEntry] = {}
        for text in value:
            entry = parse_host_entry(text)
            if entry.host in seen and seen[entry.host] != entry:
                raise ValueError(f"{entry.host!r} is listed twice ({seen[entry.host]} and {entry})")
            seen[entry.host] = entry
        return value

    @field_validator("local_hosts")
    @classmethod
    def _check_local(cls, value: list[str], info: ValidationInfo) -> list[str]:
        ssh_hosts = {parse_host_entry(text).host for text in info.data.get("allowed_hosts", [])}
        for name in value:
            if not _HOSTNAME.match(name):
                raise ValueError(f"{name!r} is not a host name")
            if name.lower() in ssh_hosts:
                raise ValueError(f"{name!r} is also in allowed_hosts; a name is either local or reached over SSH")
        return [name.lower() for name in value]

    @field_validator("known_hosts")
    @classmethod
    def _check_known_hosts(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            if info.data.get("allowed_hosts"):
                raise ValueError("required when allowed_hosts is set: host keys are always checked")
            return None
        if not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("private_key_secret", "private_key_passphrase_secret")
    @classmethod
    def _check_secret_name(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_NAME.match(value):
            raise ValueError(f"{value!r} is not a secret name (letters, digits, '_', '.', '-')")
        return value

    @field_validator("username")
    @classmethod
    def _check_username(cls, value: str | None) -> str | None:
        if value is not None and not _USERNAME.match(value):
            raise ValueError(f"{value!r} is not a valid user name")
        return value

    @field_validator("work_dir")
    @classmethod
    def _check_work_dir(cls, value: str) -> str:
        # The outputs path travels in sbatch's --export list, which splits on commas.
        if not value.strip() or any(c in value for c in ",\n\r\0") or ".." in Path(value).parts:
            raise ValueError(f"{value!r}: give a directory path without commas, newlines or '..'")
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if "\0" in item:
                raise ValueError(f"the value of {name} contains a NUL byte")
        return value

    def ssh_entries(self) -> dict[str, HostEntry]:
        return {entry.host: entry for entry in map(parse_host_entry, self.allowed_hosts)}
