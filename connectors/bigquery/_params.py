"""The task's inputs as BigQuery query parameters, typed from the task's interface.

flytekit's connector maps each input's *Python* type through a table that has no entry for a
list but ``"ARRAY"``, and builds a ``ScalarQueryParameter`` with it: a list input is an invalid
scalar and the job is refused. Here each input's Flyte literal type gives its BigQuery type:

- INTEGER -> INT64, FLOAT -> FLOAT64, STRING -> STRING, BOOLEAN -> BOOL, DATETIME -> DATETIME
  (the instant's UTC wall clock, as flytekit sends it), and a list of one of these -> ARRAY of
  it; an ``Optional[...]`` input is its type, NULL when it has no value.
- A type the user declared for the same name in the task's ``QueryJobConfig``
  (``query_parameters``, serialized into ``custom.queryParameters``) wins: DATE, TIMESTAMP,
  BYTES, NUMERIC, ... (Flyte has no date or bytes type: a ``datetime.date`` arrives as a
  DATETIME at midnight, and this is how to send it as a DATE). Parameters declared there that
  are not inputs are sent as declared (fixed values).

Values are always parameters, never SQL text.
"""

from __future__ import annotations

import base64
import datetime
import math
from collections.abc import Mapping
from typing import Any

from flyteidl.core import literals_pb2, types_pb2

from connector_service import InvalidRequestError, clip

__all__ = ["query_parameters"]

WHO = "bigquery"
_SIMPLE = {
    types_pb2.INTEGER: "INT64",
    types_pb2.FLOAT: "FLOAT64",
    types_pb2.STRING: "STRING",
    types_pb2.BOOLEAN: "BOOL",
    types_pb2.DATETIME: "DATETIME",
}
_SCALARS = frozenset(
    {"INT64", "FLOAT64", "STRING", "BOOL", "DATETIME", "TIMESTAMP", "DATE", "BYTES", "NUMERIC", "BIGNUMERIC", "TIME"}
)
_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "BIGDECIMAL": "BIGNUMERIC", "DECIMAL": "NUMERIC"}


def _bq_type_of(name: str, literal_type: types_pb2.LiteralType) -> dict[str, Any]:
    kind = literal_type.WhichOneof("type")
    if kind == "simple" and literal_type.simple in _SIMPLE:
        return {"type": _SIMPLE[literal_type.simple]}
    if kind == "collection_type":
        inner = _bq_type_of(name, literal_type.collection_type)
        if inner["type"] == "ARRAY":
            raise InvalidRequestError(f"{WHO}: input {clip(name)} is a list of lists; BigQuery has no arrays of arrays")
        return {"type": "ARRAY", "arrayType": inner}
    if kind == "union_type":
        variants = [v for v in literal_type.union_type.variants if v.WhichOneof("type") != "simple" or v.simple != 0]
        if len(variants) == 1:
            return _bq_type_of(name, variants[0])
    raise InvalidRequestError(
        f"{WHO}: input {clip(name)} has a type BigQuery parameters cannot take ({clip(str(kind))}); use str, int, "
        "float, bool, datetime or a list of one of these"
    )


def _declared(custom: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``custom.queryParameters`` (the user's QueryJobConfig) by name."""
    declared = custom.get("queryParameters") or []
    if not isinstance(declared, list):
        raise InvalidRequestError(f"{WHO}: custom.queryParameters must be a list")
    out: dict[str, dict[str, Any]] = {}
    for i, param in enumerate(declared):
        if not isinstance(param, Mapping) or not isinstance(param.get("name"), str):
            raise InvalidRequestError(f"{WHO}: custom.queryParameters[{i}] has no name (named parameters only)")
        if not isinstance(param.get("parameterType"), Mapping):
            raise InvalidRequestError(f"{WHO}: custom.queryParameters[{i}] has no parameterType")
        out[param["name"]] = dict(param)
    return out


def _normal(name: str, declared_type: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(declared_type.get("type", "")).upper()
    kind = _ALIASES.get(kind, kind)
    if kind == "ARRAY" and isinstance(declared_type.get("arrayType"), Mapping):
        inner = _normal(name, declared_type["arrayType"])
        if inner["type"] != "ARRAY":
            return {"type": "ARRAY", "arrayType": inner}
    if kind in _SCALARS:
        return {"type": kind}
    raise InvalidRequestError(
        f"{WHO}: custom.queryParameters declares {clip(name)} as {clip(str(declared_type.get('type')))}, which an "
        "input cannot be bound to"
    )


def _utc(ts: Any) -> datetime.datetime:
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        seconds=ts.seconds, microseconds=ts.nanos // 1000
    )


def _scalar_value(name: str, literal: literals_pb2.Literal, bq_type: str) -> str | None:
    """BigQuery's wire text for one value (None: NULL)."""
    if literal.WhichOneof("value") != "scalar":
        raise InvalidRequestError(f"{WHO}: input {clip(name)} is not a single value but the parameter is {bq_type}")
    scalar = literal.scalar
    if scalar.WhichOneof("value") == "none_type":
        return None
    if scalar.WhichOneof("value") != "primitive":
        raise InvalidRequestError(f"{WHO}: input {clip(name)} is not a primitive value")
    primitive = scalar.primitive
    kind = primitive.WhichOneof("value")
    value: Any = getattr(primitive, kind) if kind else None
    if kind == "datetime":
        moment = _utc(value)
        if bq_type == "DATE":
            return moment.date().isoformat()
        if bq_type == "TIMESTAMP":
            return moment.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
        if bq_type in ("DATETIME", "STRING"):
            return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    elif kind == "boolean":
        if bq_type in ("BOOL", "STRING"):
            return "true" if value else "false"
    elif kind == "integer":
        if bq_type in ("INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "STRING"):
            return str(value)
    elif kind == "float_value":
        if bq_type in ("FLOAT64", "NUMERIC", "BIGNUMERIC", "STRING"):
            if math.isnan(value):
                return "NaN"
            if math.isinf(value):
                return "Infinity" if value > 0 else "-Infinity"
            return repr(value)
    elif kind == "string_value":
        if bq_type == "BYTES":
            return base64.b64encode(value.encode()).decode("ascii")
        return str(value)  # BigQuery parses the text as the declared type (DATE, TIMESTAMP, NUMERIC...)
    raise InvalidRequestError(f"{WHO}: input {clip(name)} ({clip(str(kind))}) cannot be sent as a {bq_type} parameter")


def _value(name: str, literal: literals_pb2.Literal, bq_type: Mapping[str, Any]) -> dict[str, Any]:
    if bq_type["type"] == "ARRAY":
        if literal.WhichOneof("value") == "scalar" and literal.scalar.WhichOneof("value") == "none_type":
            return {}
        if literal.WhichOneof("value") != "collection":
            raise InvalidRequestError(f"{WHO}: input {clip(name)} is not a list but its parameter is an ARRAY")
        items = []
        for item in literal.collection.literals:
            value = _scalar_value(name, item, bq_type["arrayType"]["type"])
            if value is None:
                raise InvalidRequestError(f"{WHO}: input {clip(name)} holds a None; BigQuery arrays cannot")
            items.append({"value": value})
        return {"arrayValues": items}
    value = _scalar_value(name, literal, bq_type["type"])
    return {} if value is None else {"value": value}


def query_parameters(
    inputs: literals_pb2.LiteralMap | None,
    interface: Any,
    custom: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The ``queryParameters`` of the job: one per input (and per fixed parameter the user declared)."""
    declared = _declared(custom)
    variables = interface.inputs.variables
    literals = inputs.literals if inputs is not None else {}
    params: list[dict[str, Any]] = []
    for name in sorted(literals):
        if name not in variables:
            raise InvalidRequestError(f"{WHO}: input {clip(name)} is not in the task's interface")
        if name in declared:
            bq_type = _normal(name, declared.pop(name)["parameterType"])
        else:
            bq_type = _bq_type_of(name, variables[name].type)
        params.append({"name": name, "parameterType": bq_type, "parameterValue": _value(name, literals[name], bq_type)})
    params.extend(declared.values())
    return params
