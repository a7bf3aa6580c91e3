"""Settings: one object, built once at start-up from CLI flags, ``CONNECTOR_*`` env vars,
an optional YAML file and defaults (in that order of precedence), then passed down.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = ["Settings", "SettingsError"]

_DEFAULT_THREADS = 64


class SettingsError(ValueError):
    """Settings that cannot work; the message names the setting."""


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
            "env CONNECTOR_CONNECTORS takes a JSON list."
        ),
    )
    app_dir: str = Field(
        ".", description="Directory put first on sys.path to import --connector modules from (as uvicorn's --app-dir)."
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
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="Event loop: uvloop when installed (auto), or the standard asyncio loop."
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
    resource_meta_key: SecretStr | None = Field(
        None, description="If set, resource_meta is signed (HMAC-SHA256) and unsigned metas are refused."
    )

    # -- logging -------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="text for a terminal, json for Kubernetes.")

    @field_validator("connectors", mode="before")
    @classmethod
    def _split_connectors(cls, value: Any) -> Any:
        # Accept "a:b,c:d" from env as well as a JSON list, since both are common in manifests.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", "log_format", "loop", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
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
        return (init_settings, env_settings)

    @classmethod
    def load(cls, cli_args: Sequence[str] = (), **overrides: Any) -> Settings:
        """Build settings from CLI args (highest precedence), env vars and defaults.

        Raises SettingsError with a one-line-per-problem message naming each bad setting.
        """
        from pydantic import ValidationError
        from pydantic_settings import SettingsError as _PydanticSettingsError

        try:
            return cls(_cli_parse_args=list(cli_args), **overrides)  # type: ignore[call-arg]
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "settings"
                shown = "" if "key" in where else f" (got {err.get('input')!r:.60})"
                problems.append(f"  {where.replace('_', '-')}: {err['msg']}{shown}")
            raise SettingsError("invalid settings:\n" + "\n".join(problems)) from None
        except _PydanticSettingsError as exc:
            raise SettingsError(f"invalid settings: {exc}") from None
