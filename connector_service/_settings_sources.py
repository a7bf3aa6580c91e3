"""Where a setting's value came from, so an error points at what to fix.

pydantic reports a bad value by its field path (``tls.cert_file``); an operator edits a flag, an
environment variable or a line of the config file. ``Origins`` maps one to the other, in the
order of precedence the settings are read. ``unknown_env_vars`` finds ``CONNECTOR_*`` variables
that set nothing, which pydantic-settings ignores without a word.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

__all__ = ["ConfigFileError", "Origins", "env_names", "read_config_file", "unknown_env_vars"]

ENV_PREFIX = "CONNECTOR_"
INTERNAL_ENV = frozenset({"CONNECTOR_SUPERVISOR_PID"})
"""Set by the service for its own processes; not settings."""

_FREE_FORM = ("plugins", "operation_timeouts")
"""Mappings whose keys are free-form (validated by each plugin, or by the field's validator)."""

_ALIASES = {"connector": "connectors"}
_DEFAULT_ENV = {"workers": "WEB_CONCURRENCY"}
"""Defaults read from another variable."""

Loc = tuple[str | int, ...]


class ConfigFileError(ValueError):
    """A config file that is not a mapping of settings; the message names the file and line."""


def read_config_file(path: str) -> Any:
    """Parse the YAML config file into its node tree, refusing what cannot be settings.

    PyYAML's own errors are a traceback with the position at the end; an operator needs one
    line: the file, the line, the problem.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"config file {path}: cannot read it ({exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        yaml.safe_load(text)  # constructor errors (bad tags, unhashable keys) too
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else path
        problem = " ".join(str(part) for part in (exc.problem, exc.context) if part) or type(exc).__name__
        raise ConfigFileError(f"config file {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"config file {path}: {str(exc).splitlines()[0]}") from None
    if node is not None and not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else f"the value {node.value!r:.40}"
        raise ConfigFileError(
            f"config file {path}:{node.start_mark.line + 1}: the top level must be a mapping of settings "
            f"(name: value, e.g. `port: 8000`), not {kind}"
        )
    return node


class Origins:
    """The flag, variable or config-file line that set each value, by pydantic's error location."""

    def __init__(
        self,
        cli_args: Sequence[str],
        environ: Mapping[str, str],
        config_path: str | None = None,
        config_node: Any = None,
    ) -> None:
        # Path -> (the flag or variable to name, its value).
        self._cli: dict[Loc, tuple[str, str | None]] = {}
        args = list(cli_args)
        for i, arg in enumerate(args):
            if arg.startswith("--"):
                flag, has_value, value = arg.partition("=")
                name = flag[2:].removeprefix("no-") if flag.startswith("--no-") else flag[2:]
                following = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None
                path = _normalise(tuple(name.replace("-", "_").split(".")))
                self._cli[path] = (flag, value if has_value else following)
        self._env: dict[Loc, tuple[str, str | None]] = {}
        for key, value in environ.items():
            upper = key.upper()
            if upper.startswith(ENV_PREFIX) and upper not in INTERNAL_ENV:
                path = tuple(upper.removeprefix(ENV_PREFIX).lower().split("__"))
                self._env[_normalise(path)] = (key, value)
        self._config_path = config_path
        self._config_node = config_node
        self._default_env: dict[Loc, str] = {(name,): env for name, env in _DEFAULT_ENV.items() if env in environ}

    def of(self, loc: Loc) -> str | None:
        """Where the value at ``loc`` came from: the first source in precedence order that set
        it, a mapping above it, or (for a mapping) anything below it."""
        loc = _normalise(loc)
        if not loc:
            return None
        found: list[str] = []
        for source in (self._cli, self._env):
            covering = [
                origin
                for path, (origin, value) in source.items()
                if loc[: len(path)] == path and _json_has(value, loc[len(path) :])
            ]
            if covering:
                return covering[0]
            found += [origin for path, (origin, _) in sorted(source.items()) if path[: len(loc)] == loc]
        line = self._config_line(loc)
        if line is not None:
            if not found:
                return f"{self._config_path}:{line}"
            found.append(f"{self._config_path}:{line}")
        return ", ".join(dict.fromkeys(found)) or self._default_env.get(loc[:1])

    def _config_line(self, loc: Loc) -> int | None:
        import yaml

        node, line = self._config_node, None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if _same_key(k.value, part)), None)
                if match is None:
                    return line
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _json_has(value: str | None, rest: Loc) -> bool:
    """Whether a JSON value given for a mapping (``--plugins '{...}'``) sets the path below it;
    a value that is no JSON container (``a,b``) sets whatever is below it."""
    try:
        data = json.loads(value) if value and rest else None
    except ValueError:
        return True
    for part in rest:
        if isinstance(data, dict):
            if str(part) not in data:
                return False
            data = data[str(part)]
        elif isinstance(data, list) and isinstance(part, int):
            if part >= len(data):
                return False
            data = data[part]
        else:
            break
    return True


def _same_key(key: Any, part: str | int) -> bool:
    return str(key) == str(part) or _ALIASES.get(str(key)) == str(part)


def _normalise(loc: Loc) -> Loc:
    if loc and isinstance(loc[0], str):
        return (_ALIASES.get(loc[0], loc[0]), *loc[1:])
    return loc


def env_names(model: type[BaseModel], prefix: str = ENV_PREFIX) -> list[str]:
    """Every variable that sets something: CONNECTOR_X, and CONNECTOR_X__Y for nested models."""
    names = []
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        names.append(env)
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names += env_names(nested, f"{env}__")
    return names


def unknown_env_vars(model: type[BaseModel], environ: Mapping[str, str]) -> list[str]:
    """One warning per ``CONNECTOR_*`` variable that sets nothing, naming the closest setting."""
    known = env_names(model)
    free_form = tuple(f"{ENV_PREFIX}{name.upper()}__" for name in _FREE_FORM)
    warnings = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in INTERNAL_ENV:
            continue
        if upper.startswith(free_form):
            continue
        # Compared without the shared prefix, which would make any two names look alike.
        names = [name.removeprefix(ENV_PREFIX) for name in known]
        import difflib  # only when a variable looks misspelt

        close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), names, n=1, cutoff=0.6)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else "; see connector-service serve --help"
        warnings.append(f"environment variable {key} is not a setting and is ignored{hint}")
    return warnings
