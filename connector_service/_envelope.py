"""The bytes this service hands propeller as ``resource_meta``.

GetTask carries no template, yet converting a connector's Python outputs needs the output
types the task declared. So CreateTask wraps the connector's own encoded meta in a small
envelope that also carries those types (compacted: only what conversion reads), and, when a
signing key is set, an HMAC that proves this service issued it.

Layout: ``MAGIC (4) | flags (1) | varint len(types) | types (VariableMap proto) | meta | [tag (32)]``.
With the ``result`` flag, ``meta`` is a finished task's ``Resource`` instead: Flyte 2 has no
synchronous path, so a sync connector runs at CreateTask and GetTask answers from the meta.
The magic starts with a NUL byte, which neither JSON (flytekit's metas) nor pickle (very old
flytekit metas, ``\\x80``) can start with, so metas issued by flytekit's service are still
recognised and passed through unchanged during a migration.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import NamedTuple

from flyteidl.core import interface_pb2, types_pb2
from google.protobuf.message import DecodeError

MAGIC = b"\x00FCS"
_FLAG_SIGNED = 0x01
_FLAG_RESULT = 0x02
_KNOWN_FLAGS = _FLAG_SIGNED | _FLAG_RESULT
_TAG_LEN = hashlib.sha256().digest_size
_PICKLE_PREFIX = b"\x80"


class ResourceMetaError(ValueError):
    """The resource_meta bytes are not something this service can act on."""


class OpenedMeta(NamedTuple):
    meta: bytes
    output_types: dict[str, types_pb2.LiteralType] | None
    """None when the meta came from elsewhere (flytekit's service) and carries no types.

    Read-only: the same dict may be handed to many calls (see ``_output_types``)."""
    is_result: bool = False
    """``meta`` is a serialized ``Resource``: the outcome of a sync connector run at CreateTask."""


_CACHED_TYPES_MAX_BYTES = 4096
"""Type blobs up to this size are parsed once and remembered (bounded: 256 of them)."""


def compact_output_types(variables: interface_pb2.VariableMap) -> bytes:
    """Serialize just the output types, without descriptions, metadata or annotations.

    flytekit puts JSON schemas for dataclasses into ``LiteralType.metadata``; propeller
    keeps resource_meta in etcd, so those would be dead weight on every running task.
    Tasks of one kind share their interface, so the result is remembered per interface.
    """
    raw: bytes = variables.SerializeToString(deterministic=True)
    return _compact_cached(raw) if len(raw) <= _CACHED_INTERFACE_MAX_BYTES else _compact(raw)


def _compact(raw: bytes) -> bytes:
    variables = interface_pb2.VariableMap.FromString(raw)
    compact = interface_pb2.VariableMap()
    for name, variable in variables.variables.items():
        lt = types_pb2.LiteralType()
        lt.CopyFrom(variable.type)
        _strip(lt)
        compact.variables[name].type.CopyFrom(lt)
    data: bytes = compact.SerializeToString(deterministic=True)
    return data


_CACHED_INTERFACE_MAX_BYTES = 8192
_compact_cached = functools.lru_cache(maxsize=128)(_compact)


def _strip(lt: types_pb2.LiteralType) -> None:
    lt.ClearField("metadata")
    lt.ClearField("annotation")
    kind = lt.WhichOneof("type")
    if kind == "collection_type":
        _strip(lt.collection_type)
    elif kind == "map_value_type":
        _strip(lt.map_value_type)
    elif kind == "union_type":
        for variant in lt.union_type.variants:
            _strip(variant)


def seal(meta: bytes, output_types: bytes, key: bytes | None = None, *, result: bool = False) -> bytes:
    flags = (_FLAG_SIGNED if key else 0) | (_FLAG_RESULT if result else 0)
    n = len(output_types)
    header = MAGIC + (bytes((flags, n)) if n < 0x80 else bytes([flags]) + _varint(n))
    body = header + output_types + meta
    if key:
        body += hmac.new(key, body, hashlib.sha256).digest()
    return body


def open_meta(data: bytes, key: bytes | None = None) -> OpenedMeta:
    """Unwrap ``data``; with ``key`` set, refuse anything this service did not sign."""
    if not data.startswith(MAGIC):
        if key:
            raise ResourceMetaError("resource_meta is not signed by this service")
        if data.startswith(_PICKLE_PREFIX):
            # Never unpickle bytes a caller sent: that would run arbitrary code.
            raise ResourceMetaError("resource_meta is a pickle (from an old flytekit service); it is not accepted")
        return OpenedMeta(meta=data, output_types=None)
    if len(data) < len(MAGIC) + 2:
        raise ResourceMetaError("resource_meta is truncated")
    flags = data[len(MAGIC)]
    if flags & ~_KNOWN_FLAGS:
        raise ResourceMetaError(f"resource_meta has unknown flags {flags:#x}")
    end = len(data)
    if flags & _FLAG_SIGNED:
        if not key:
            raise ResourceMetaError("resource_meta is signed but this service has no signing key configured")
        end -= _TAG_LEN
        if end < len(MAGIC) + 2 or not hmac.compare_digest(
            hmac.new(key, data[:end], hashlib.sha256).digest(), data[end:]
        ):
            raise ResourceMetaError("resource_meta signature does not match")
    elif key:
        raise ResourceMetaError("resource_meta is not signed by this service")
    pos = len(MAGIC) + 1
    length = data[pos]
    if length < 0x80:  # one-byte varint: type blobs under 128 bytes, the common case
        pos += 1
    else:
        length, pos = _read_varint(data, pos, end)
    if pos + length > end:
        raise ResourceMetaError("resource_meta is truncated")
    blob = data[pos : pos + length]
    types = _output_types(blob) if length <= _CACHED_TYPES_MAX_BYTES else _parse_types(blob)
    return OpenedMeta(data[pos + length : end], types, bool(flags & _FLAG_RESULT))


def _parse_types(blob: bytes) -> dict[str, types_pb2.LiteralType]:
    variables = interface_pb2.VariableMap()
    try:
        variables.ParseFromString(blob)
    except DecodeError as exc:
        raise ResourceMetaError(f"resource_meta output types are corrupt: {exc}") from None
    return {name: v.type for name, v in variables.variables.items()}


_output_types = functools.lru_cache(maxsize=256)(_parse_types)
"""Every poll of a task carries the same types (and most tasks of a type share them), so
GetTask parses each blob once rather than on every poll. Corrupt blobs raise and are not kept."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 35:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise ResourceMetaError("resource_meta header is corrupt")
