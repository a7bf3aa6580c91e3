"""Operator settings for connectors and sensors: ``plugins.<key>`` in the service settings.

What a plugin may reach (hosts, databases, SSH keys) is the operator's decision, not the
task's, so it belongs in the service's settings rather than in a task template. A plugin
declares a pydantic model and a key; the registry validates ``plugins.<key>`` against that
model once at start-up and hands the result to ``configure``, so a typo or a bad value stops
the service with a message naming the field instead of failing the first task.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ValidationError

__all__ = ["CommaList", "Configurable", "PluginSettingsError", "configure_plugins"]


class PluginSettingsError(ValueError):
    """``plugins.*`` settings that cannot work; the message names each bad field."""


def _split(value: Any) -> Any:
    # Env vars carry lists as JSON or as "a,b"; YAML and Python carry real lists.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], BeforeValidator(_split)]
"""A list of strings that also accepts ``"a,b"`` or a JSON list (as env vars carry them)."""


class Configurable:
    """Mixin for connectors and sensors that take operator settings.

    Set ``settings_key`` and ``settings_model``; ``self.settings`` then holds the validated
    model (its defaults when the operator set nothing) before ``setup`` runs.
    """

    settings_key: ClassVar[str | None] = None
    settings_model: ClassVar[type[BaseModel] | None] = None
    settings: Any = None

    def configure(self, settings: Any) -> None:
        """Receive the validated settings once at start-up; override to derive state from them."""
        self.settings = settings


Origin = Callable[[tuple[str | int, ...]], str | None]
"""Where the value at a settings path came from (a flag, a variable, a config file's line)."""


def configure_plugins(plugins: Iterable[object], values: Mapping[str, Any], origin: Origin | None = None) -> None:
    """Validate ``values[key]`` for each configurable plugin and call its ``configure``.

    Keys that no registered plugin claims are refused: a misspelt key would otherwise leave a
    plugin on its (usually most restrictive) defaults without a word. ``origin`` names where
    each bad value came from in the message.
    """
    problems: list[str] = []
    claimed: dict[str, str] = {}

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        where = origin(("plugins", *loc)) if origin is not None else None
        path = ".".join(str(part) for part in ("plugins", *loc))
        problems.append(f"  {path}: {message}" + (f" (from {where})" if where else ""))

    for plugin in plugins:
        key = getattr(plugin, "settings_key", None)
        model = getattr(plugin, "settings_model", None)
        if key is None or model is None:
            continue
        claimed[key] = type(plugin).__name__
        raw = values.get(key) or {}
        if not isinstance(raw, Mapping):
            problem((key,), f"expected a mapping of settings, got {type(raw).__name__}")
            continue
        unknown = _unknown_fields(model, raw)
        if unknown:
            fields = ", ".join(sorted(model.model_fields)) or "none"
            owner = claimed[key]
            for name in unknown:
                problem((key, name), f"not a setting of {owner} (settings: {fields})")
            continue
        try:
            validated = model.model_validate(dict(raw))
        except ValidationError as exc:
            for err in exc.errors():
                problem((key, *err["loc"]), err["msg"])
            continue
        plugin.configure(validated)  # type: ignore[attr-defined]
    for key in values:
        if key not in claimed:
            known = ", ".join(sorted(claimed)) or "none"
            problem((key,), f"no registered connector or sensor takes settings here (known: {known})")
    if problems:
        # Plugins sharing a key (slurm and slurm_fn) would report the same problem twice.
        raise PluginSettingsError("invalid plugin settings:\n" + "\n".join(dict.fromkeys(problems)))


def _unknown_fields(model: type[BaseModel], raw: Mapping[str, Any]) -> list[str]:
    """Keys the model would silently ignore: typos, unless the model asks for extras."""
    if model.model_config.get("extra") == "allow":
        return []
    known = set(model.model_fields)
    known |= {f.alias for f in model.model_fields.values() if f.alias}
    return sorted(str(k) for k in raw if k not in known)
