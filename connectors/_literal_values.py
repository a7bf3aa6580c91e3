"""Values as a task template carries them and as flytekit writes its outputs, for every connector.

A template's ``custom`` is a protobuf Struct, which stores every number as a double: the ``5``
a workflow author wrote arrives as ``5.0``, and vendors refuse ``max_tokens: 64.0`` or
``num_workers: 2.0``. And flytekit 1.16 writes a ``dict`` output as msgpack in a Binary, which is
what downstream flytekit tasks expect to read from a connector that replaces flytekit's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
from flyteidl.core import literals_pb2

__all__ = ["dict_literal", "integral_numbers"]


def integral_numbers(value: Any) -> Any:
    """Integral doubles back to ints, recursively (a Struct's ``5.0`` was the user's ``5``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, list):
        return [integral_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: integral_numbers(v) for k, v in value.items()}
    return value


def dict_literal(value: Mapping[str, Any]) -> literals_pb2.Literal:
    """A ``dict`` output as flytekit 1.16 writes it: msgpack in a Binary, so ints stay ints.

    Byte for byte what flytekit's ``TypeEngine.to_literal`` makes for a ``dict`` (the OpenAI and
    AWS tests compare it with literals flytekit wrote). ``value`` must be msgpack-able.
    """
    packed = msgpack.packb(value, use_bin_type=True)
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(binary=literals_pb2.Binary(value=packed, tag="msgpack")))
