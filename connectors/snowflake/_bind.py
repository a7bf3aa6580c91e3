"""The task's inputs as bound parameters of its statement, never as SQL text.

flytekit's and Flyte 2's Snowflake plugins hand ``%(name)s`` placeholders and a dict to the
Python connector's default ``pyformat`` style, which *formats* the quoted values into the SQL
on the client. Here each ``%(name)s`` becomes a ``?`` bound on the server (``qmark``), so an
input can never change the statement. ``%%`` is a literal ``%`` when the task has inputs, as
with pyformat; a statement without inputs is sent as written, as the plugins do.
"""

from __future__ import annotations

import datetime
import decimal
import re
from collections.abc import Mapping
from typing import Any

from connector_service import InvalidRequestError, clip

__all__ = ["bind"]

_TOKEN = re.compile(r"%%|%\((?P<name>[^)]*)\)(?P<conv>.?)")


def bind(statement: str, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``statement`` with ``?`` for each ``%(name)s``, and the values in placeholder order."""
    params: list[Any] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        name, conv = match.group("name"), match.group("conv")
        if conv != "s":
            raise InvalidRequestError(
                f"snowflake: sql.statement has %({clip(name)}){clip(conv)}: write inputs as %(name)s"
            )
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise InvalidRequestError(
                f"snowflake: sql.statement uses %({clip(name)})s but the task has no such input (inputs: {known})"
            )
        params.append(_bindable(name, values[name]))
        return "?"

    if not values:
        for match in _TOKEN.finditer(statement):
            if match.group("name") is not None:
                replace(match)  # raises: a placeholder with no inputs at all
        return statement, []
    return _TOKEN.sub(replace, statement), params


def _bindable(name: str, value: Any) -> Any:
    """A value the Snowflake client binds server-side, with its Snowflake type where Python's is ambiguous."""
    if value is None or isinstance(value, bool | int | float | str | bytes | decimal.Decimal | datetime.date):
        if isinstance(value, datetime.datetime):
            return ("TIMESTAMP_TZ" if value.tzinfo is not None else "TIMESTAMP_NTZ", value)
        return value
    raise InvalidRequestError(
        f"snowflake: input {clip(name)} is a {type(value).__name__}; only strings, numbers, booleans, bytes and "
        "datetimes can be bound to a %(name)s placeholder"
    )
