"""What goes into an AWS call and what comes out of it: placeholders, integers, plain values. No I/O.

Templates are flytekitplugins-awssagemaker's: ``config`` strings may hold ``{inputs.x}``,
``{images.x}`` and ``{idempotence_token}``. A string that is exactly one ``{inputs.x}`` becomes
the input's value (typed); otherwise the value is formatted into the string, as flytekit's
``format_dict`` does. ``{idempotence_token}`` is a hash of the formatted request (so the same
request names the same resource, and a retried ``create_*`` finds what the first one made),
cut so that a SageMaker name stays within 63 characters. flytekit hashes with xxh64 and we
with SHA-256 (the same length, 16 hex digits): the token names a resource, no one computes it.

A Struct stores numbers as doubles: ``InitialInstanceCount: 1`` arrives as ``1.0``, which
botocore refuses for integer fields, so integral doubles become ints first (as flytekit does).

Answers hold datetimes, bytes and Decimals, which msgpack cannot store: ``plain`` turns them
into ISO-8601 strings, text (or base64) and numbers, never a pickle.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from flyteidl.core import literals_pb2

from connector_service import InvalidRequestError, clip
from connectors._literal_values import dict_literal as msgpack_dict
from connectors._literal_values import integral_numbers

__all__ = ["dict_literal", "format_config", "idempotence_token", "integral_numbers", "plain", "resolve_images"]

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_TOKEN = "idempotence_token"
_SAGEMAKER_NAME_MAX = 63

# AWS's accounts that publish the SageMaker Triton images, by region (what flytekit formats
# ``{account_id}`` with in an image whose name holds ``sagemaker-tritonserver``).
_TRITON_ACCOUNTS = {
    "us-east-1": "785573368785",
    "us-east-2": "007439368137",
    "us-west-1": "710691900526",
    "us-west-2": "301217895009",
    "eu-west-1": "802834080501",
    "eu-west-2": "205493899709",
    "eu-west-3": "254080097072",
    "eu-north-1": "601324751636",
    "eu-south-1": "966458181534",
    "eu-central-1": "746233611703",
    "ap-east-1": "110948597952",
    "ap-south-1": "763008648453",
    "ap-northeast-1": "941853720454",
    "ap-northeast-2": "151534178276",
    "ap-southeast-1": "324986816169",
    "ap-southeast-2": "355873309152",
    "cn-northwest-1": "474822919863",
    "cn-north-1": "472730292857",
    "sa-east-1": "756306329178",
    "ca-central-1": "464438896020",
    "me-south-1": "836785723513",
    "af-south-1": "774647643957",
}


def resolve_images(images: Any, region: str, who: str) -> dict[str, str]:
    """``custom.images`` with flytekit's ``{account_id}``/``{region}``/``{base}`` filled in Triton images."""
    if images is None:
        return {}
    if not isinstance(images, Mapping) or not all(isinstance(v, str) for v in images.values()):
        raise InvalidRequestError(f"{who}: custom.images must map names to image URIs (strings)")
    base = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    out: dict[str, str] = {}
    for name, image in images.items():
        if "sagemaker-tritonserver" in image:
            account = _TRITON_ACCOUNTS.get(region)
            if account is None:
                raise InvalidRequestError(f"{who}: custom.images.{clip(name)}: no SageMaker Triton image in {region}")
            try:
                image = image.format(account_id=account, region=region, base=base)
            except (KeyError, IndexError, ValueError):
                raise InvalidRequestError(f"{who}: custom.images.{clip(name)} has an unknown placeholder") from None
        out[str(name)] = image
    return out


def _lookup(values: Mapping[str, Any], dotted: str, field: str, who: str) -> Any:
    current: Any = values
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            raise InvalidRequestError(f"{who}: {field}: the placeholder {{{clip(dotted, 80)}}} names no value")
        current = current[part]
    return current


def _format(value: Any, values: Mapping[str, Any], token: str | None, service: str, field: str, who: str) -> Any:
    if isinstance(value, str) and "{" in value and "}" in value:
        text = value
        for match in _PLACEHOLDER.findall(value):
            if "." in match:
                found = _lookup(values, match, field, who)
                if value == f"{{{match}}}":
                    return found
                text = text.replace(f"{{{match}}}", str(found))
            elif match == _TOKEN and token:
                rest = len(text.replace(f"{{{match}}}", ""))
                cut = token
                if service == "sagemaker" and rest + len(token) > _SAGEMAKER_NAME_MAX:
                    cut = token[: max(_SAGEMAKER_NAME_MAX - rest, 0)]
                text = text.replace(f"{{{match}}}", cut)
        return text
    if isinstance(value, list):
        return [_format(v, values, token, service, f"{field}[{i}]", who) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _format(v, values, token, service, f"{field}.{k}", who) for k, v in value.items()}
    return value


def _sorted_repr(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_sorted_repr(k)}: {_sorted_repr(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_sorted_repr(v) for v in value) + "]"
    return str(value)


def idempotence_token(config: Any) -> str:
    """16 hex digits naming this exact request (keys in any order, lists in theirs)."""
    return hashlib.sha256(_sorted_repr(config).encode()).hexdigest()[:16]


def format_config(
    config: Any, inputs: Mapping[str, Any], images: Mapping[str, str], service: str, who: str
) -> tuple[dict[str, Any], str]:
    """The request ``config`` describes, and its idempotence token ("" when it uses none)."""
    if not isinstance(config, dict):
        raise InvalidRequestError(f"{who}: custom.config must be an object (the call's parameters)")
    values = {"inputs": dict(inputs), "images": dict(images)}
    formatted = integral_numbers(_format(config, values, None, service, "custom.config", who))
    token = ""
    if _TOKEN in str(formatted):
        token = idempotence_token(formatted)
        formatted = _format(formatted, values, token, service, "custom.config", who)
    return formatted, token


def plain(value: Any) -> Any:
    """``value`` with only what msgpack (and JSON) can hold: no datetimes, bytes, Decimals or sets."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def dict_literal(value: Mapping[str, Any]) -> literals_pb2.Literal:
    """A ``dict`` output as flytekit 1.16 writes it, of an answer made ``plain`` first."""
    return msgpack_dict(plain(value))
