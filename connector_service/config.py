"""Settings: one object, built once at start-up from CLI flags, ``CONNECTOR_*`` env vars,
an optional YAML file and defaults (in that order of precedence), then passed down.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from connector_service._settings_sources import ConfigFileError, Origins, read_config_file

__all__ = ["OPERATIONS", "ConnectorLimits", "Settings", "SettingsError", "TLSSettings"]

_DEFAULT_THREADS = 64


class SettingsError(ValueError):
    """Settings that cannot work; the message names the setting."""


class TLSSettings(BaseModel):
    """Server TLS; with ``client_ca_file`` set, clients must present a certificate (mutual TLS)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_file: Path | None = Field(None, description="PEM server certificate (chain); enables TLS.")
    key_file: Path | None = Field(None, description="PEM private key of the server certificate.")
    client_ca_file: Path | None = Field(None, description="PEM CA bundle; clients must present a cert it signed.")

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _check(self) -> TLSSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be set together")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("tls.client_ca_file needs tls.cert_file and tls.key_file")
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"tls.{name}: {path} is not a readable file")
        return self


class ConnectorLimits(BaseModel):
    """One task type's bulkhead; unset fields take the defaults derived from the service's settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrency: int | None = Field(
        None, ge=1, description="Its calls in flight at once (default: half of max_concurrent_rpcs)."
    )
    max_threads: int | None = Field(
        None, ge=1, le=4096, description="Threads of its own running its plain-def methods (default: thread_pool_size)."
    )
    max_wait: float | None = Field(
        None, ge=0, description="Seconds a call may wait for room (default: max_queue_wait)."
    )


OPERATIONS = ("create", "get", "delete", "get_metrics", "get_logs", "do")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONNECTOR_",
        env_nested_delimiter="__",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_exit_on_error=False,
        cli_prog_name="connector-service serve",
        populate_by_name=True,
        frozen=True,
        extra="forbid",
    )

    config_file: Path | None = Field(
        None, description="YAML file of settings (same names as the env vars, nested as mappings); CLI and env win."
    )

    # -- serving -------------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address the gRPC server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="gRPC port (0 picks a free port).")
    metrics_host: str = Field("0.0.0.0", description="Address of the Prometheus /metrics endpoint.")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus port; 0 turns metrics serving off.")

    # -- connectors ----------------------------------------------------------------------------
    connectors: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("connector", "connectors"),
        description=(
            "MODULE:ATTR of a connector instance, a sensor class or instance, or a list of these. Repeatable; "
            "env CONNECTOR_CONNECTORS takes a JSON list or commas (a:b,c:d)."
        ),
    )
    app_dir: str = Field(
        ".", description="Directory put first on sys.path to import --connector modules from (as uvicorn's --app-dir)."
    )
    skip_broken_connectors: bool = Field(
        False,
        description="Start without connectors whose set-up fails (reported in the log and in health) "
        "instead of failing start-up.",
    )
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Operator settings of connectors and sensors, by their settings key (e.g. plugins.webhook.allowed_hosts); "
            "each plugin validates its own. One field at a time in env: CONNECTOR_PLUGINS__<KEY>__<FIELD>."
        ),
    )
    entry_points: bool = Field(
        True,
        description="Load connectors and sensors that installed packages declare (group flyte.connectors).",
    )

    # -- execution -----------------------------------------------------------------------------
    thread_pool_size: int = Field(
        _DEFAULT_THREADS,
        ge=1,
        le=4096,
        description="Threads that run plain-def (blocking) connector and sensor methods.",
    )
    sensor_poke_timeout: float = Field(
        30.0,
        gt=0,
        description="Upper bound in seconds on one sensor poke (the caller's deadline also bounds it).",
    )
    workers: int = Field(
        # Validated like any other value, so WEB_CONCURRENCY=x is a settings error naming it.
        default_factory=lambda: os.environ.get("WEB_CONCURRENCY") or 1,
        validate_default=True,
        ge=1,
        le=64,
        description="Server processes sharing the port (SO_REUSEPORT) under one supervisor. "
        "Replicas are the first way to scale: see the README.",
    )
    reuse_port: bool = Field(
        False, description="Let several processes bind the same port (set for --workers' processes)."
    )
    protocols: Annotated[list[Literal["v1", "v2"]] | None, NoDecode] = Field(
        None,
        description="Connector API generations to serve on the port, comma-separated: v1 (flyteidl: Flyte 1's "
        "propeller), v2 (flyteidl2: Flyte 2's executor; needs the flyte2 extra).",
    )
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="Event loop: uvloop when installed (auto), or the standard asyncio loop."
    )

    max_concurrent_rpcs: int = Field(
        1000, ge=0, description="Calls served at once; beyond it callers get RESOURCE_EXHAUSTED. 0: no limit."
    )
    max_queue_wait: float = Field(
        0.1,
        ge=0,
        description="Seconds a call may wait for room in its connector's bulkhead before it is refused with "
        "RESOURCE_EXHAUSTED; never longer than its deadline leaves for the call itself.",
    )
    limits: dict[str, ConnectorLimits] = Field(
        default_factory=dict,
        description="Per task type bulkheads, e.g. {slurm: {max_concurrency: 200, max_threads: 16}}, and per sensor "
        "as sensor/<name>; a name that is not registered stops start-up. Env: CONNECTOR_LIMITS__SLURM__MAX_THREADS=16.",
    )
    timeout_cap: float = Field(
        60.0, gt=0, description="Server-side upper bound in seconds on any connector call, whatever the deadline."
    )
    operation_timeouts: dict[str, float] = Field(
        default_factory=dict,
        description='Per-operation caps overriding timeout_cap, e.g. {"get": 20, "do": 120}.',
    )

    # -- lifecycle -----------------------------------------------------------------------------
    shutdown_delay: float = Field(
        2.0, ge=0, description="Seconds between health turning NOT_SERVING and the server refusing new calls."
    )
    grace_period: float = Field(25.0, ge=0, description="Seconds in-flight calls get to finish on shutdown.")

    # -- limits and security -------------------------------------------------------------------
    max_message_size: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest gRPC message accepted or sent, in bytes (propeller: 4 MiB).",
    )
    tls: TLSSettings = Field(default_factory=TLSSettings, description="TLS for the gRPC port.")
    secrets_dir: Path | None = Field(
        None, description="Directory searched by get_secret() before /etc/secrets (a mounted Secret)."
    )
    resource_meta_key: SecretStr | None = Field(
        None, description="If set, resource_meta is signed (HMAC-SHA256) and unsigned metas are refused."
    )

    # -- logging -------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="text for a terminal, json for Kubernetes.")
    access_log: bool = Field(
        True,
        description="Log each connector call (operation, task type, task execution id, status, duration).",
    )
    slow_call_seconds: float = Field(
        1.0,
        ge=0,
        description="With the access log off, still log a successful call that took at least this long "
        "(0: never). Failed calls are always logged.",
    )

    @field_validator("connectors", mode="before")
    @classmethod
    def _split_connectors(cls, value: Any) -> Any:
        # Accept "a:b,c:d" from env as well as a JSON list, since both are common in manifests.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("protocols", mode="before")
    @classmethod
    def _split_protocols(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("protocols")
    @classmethod
    def _some_protocol(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("name at least one of v1, v2")
        return list(dict.fromkeys(value)) if value else value

    @field_validator("log_level", "log_format", "loop", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("operation_timeouts")
    @classmethod
    def _known_operations(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operation(s) {sorted(unknown)}; known: {', '.join(OPERATIONS)}")
        if any(v <= 0 for v in value.values()):
            raise ValueError("timeouts must be positive")
        return value

    def operation_timeout(self, operation: str) -> float:
        return self.operation_timeouts.get(operation, self.timeout_cap)

    def limits_for(self, key: str, *, within: int | None = None) -> tuple[int, int, float]:
        """(max_concurrency, max_threads, max_wait) of the bulkhead of ``key``: a task type, or
        ``sensor/<name>`` for one sensor of the sensor engine (``within`` its calls).

        By default one connector may hold half the server's concurrent calls (one sensor, half
        the engine's), so a saturated one leaves the other half to the rest, and as many threads
        of its own as the shared pool.
        """
        own = self.limits.get(key) or ConnectorLimits()
        whole = self.max_concurrent_rpcs if within is None else within
        default_calls = max(1, whole // 2) if whole else 1_000_000
        return (
            own.max_concurrency or default_calls,
            own.max_threads or self.thread_pool_size,
            self.max_queue_wait if own.max_wait is None else own.max_wait,
        )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.workers > 1 and self.port == 0:
            raise ValueError("workers > 1 needs a fixed port (port 0 would give each process its own)")
        if self.metrics_port and self.metrics_port == self.port and self.metrics_host == self.host:
            raise ValueError(f"metrics_port {self.metrics_port} is the same as port; pick another or 0 to disable")
        return self

    @property
    def signing_key(self) -> bytes | None:
        return self.resource_meta_key.get_secret_value().encode() if self.resource_meta_key else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if settings_cls.model_config.get("yaml_file"):
            sources += (YamlConfigSettingsSource(settings_cls),)
        return sources

    @staticmethod
    def origins(cli_args: Sequence[str] = ()) -> Origins:
        """Where each value ``load(cli_args)`` read came from, for errors found after loading
        (``plugins.*`` is validated by each plugin): ``origins(args).of(("plugins", "webhook"))``."""
        config_file = _config_file(cli_args)
        try:
            node = read_config_file(config_file) if config_file else None
        except (ConfigFileError, ImportError):
            node = None  # load() has reported it
        return Origins(cli_args, os.environ, config_file, node)

    @classmethod
    def load(cls, cli_args: Sequence[str] = (), *, command: str = "serve", **overrides: Any) -> Settings:
        """Build settings from CLI args (highest precedence), env vars, the config file and defaults.

        Raises SettingsError with a one-line-per-problem message naming each bad setting and
        where its value came from (the flag, the variable, or the config file's line).
        """
        from pydantic import ValidationError
        from pydantic_settings import CliSettingsSource
        from pydantic_settings import SettingsError as _PydanticSettingsError

        from connector_service._cli_help import make_readable

        settings_cls = cls
        config_file = _config_file(cli_args)
        config_node = None
        if config_file:
            if not Path(config_file).is_file():
                raise SettingsError(f"invalid settings:\n  config-file: {config_file} is not a readable file")
            try:
                import yaml  # noqa: F401
            except ImportError:
                raise SettingsError("config-file needs PyYAML: pip install 'flyte-connector-service[yaml]'") from None
            try:
                config_node = read_config_file(config_file)
            except ConfigFileError as exc:
                raise SettingsError(str(exc)) from None

            class _FromFile(cls):  # type: ignore[valid-type,misc]
                model_config = SettingsConfigDict(**{**cls.model_config, "yaml_file": config_file})

            _FromFile.__name__ = cls.__name__
            settings_cls = _FromFile
        origins = Origins(cli_args, os.environ, config_file, config_node)
        try:
            cli: CliSettingsSource[Any] = CliSettingsSource(settings_cls, cli_prog_name=f"connector-service {command}")
            cli.root_parser.description = _DESCRIPTIONS.get(command)
            make_readable(cli.root_parser, env_prefix=str(cls.model_config.get("env_prefix", "")))
            return settings_cls(_cli_settings_source=cli(args=list(cli_args)), **overrides)
        except ValidationError as exc:
            problems = []
            for err in exc.errors()[:_MAX_PROBLEMS]:
                where = ".".join(str(p) for p in err["loc"]) or "settings"
                origin = origins.of(err["loc"])
                got = "" if "key" in where else f"got {err.get('input')!r:.60}"
                shown = " ".join(p for p in (got, f"from {origin}" if origin else "") if p)
                problems.append(f"  {where.replace('_', '-')}: {err['msg']}" + (f" ({shown})" if shown else ""))
            if exc.error_count() > _MAX_PROBLEMS:
                problems.append(f"  ... and {exc.error_count() - _MAX_PROBLEMS} more")
            raise SettingsError("invalid settings:\n" + "\n".join(problems)) from None
        except _PydanticSettingsError as exc:
            raise SettingsError(f"invalid settings: {_source_named(str(exc), origins)}") from None


_MAX_PROBLEMS = 20
_DESCRIPTIONS = {
    "serve": "Start the gRPC daemon. Flags win over CONNECTOR_* environment variables,\n"
    "which win over the --config-file, which wins over the defaults.",
    "list": "Print the connectors and sensors that `serve` would register with the same\n"
    "options (all of serve's are accepted), then exit.",
}


def _source_named(message: str, origins: Origins) -> str:
    """pydantic-settings names a source class ("EnvSettingsSource"); name the variable instead."""
    first = (message.splitlines() or [""])[0]
    match = re.fullmatch(r'error parsing value for field "(\w+)" from source "(\w+)"', first)
    if match is None:
        return first[:300]
    origin = origins.of((match.group(1),))
    return f"{match.group(1).replace('_', '-')}: not valid JSON" + (f" (from {origin})" if origin else "")


def _config_file(cli_args: Sequence[str]) -> str | None:
    """Find --config-file before parsing, since it decides which sources the parse reads."""
    args = list(cli_args)
    for i, arg in enumerate(args):
        if arg == "--config-file" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config-file="):
            return arg.split("=", 1)[1]
    return os.environ.get("CONNECTOR_CONFIG_FILE") or None
