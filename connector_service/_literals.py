"""Conversion between Flyte literals and plain Python values.

Connector authors should not need flytekit (or to know the literal protos) to
read their inputs and return outputs, so this module is the one place where
``Literal`` <-> Python translation lives. It is on the request hot path, hence
the design: dispatch on ``WhichOneof`` / exact Python type through dicts built
once at import, and writers that fill a target ``Literal`` in place so nested
values are never copied.

Reading is lenient (the literal's own kind wins over the declared type, since
the data already exists and Flyte produced it); writing is strict (the value
must fit the declared type, since Flyte will type-check what we return).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import numbers
import operator
import os
import reprlib
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
from flyteidl.core.interface_pb2 import VariableMap
from flyteidl.core.literals_pb2 import Literal, LiteralMap
from flyteidl.core.types_pb2 import BlobType, EnumType, LiteralType, SimpleType

from connector_service._messages import clip

__all__ = [
    "Directory",
    "File",
    "LiteralConversionError",
    "infer_literal_type",
    "literal_map_to_python",
    "python_to_literal_map",
    "to_literal",
    "to_python",
    "variable_types",
]


class LiteralConversionError(ValueError):
    """A value does not fit its declared Flyte type (or a literal is unreadable).

    Subclasses ValueError so callers that already treat bad user data as
    ValueError keep working; the message always names the offending field.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class File:
    """A single-part blob, referenced by URI only: the daemon never moves data."""

    uri: str
    format: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Directory:
    """A multipart blob (a prefix of many objects), referenced by URI only."""

    uri: str
    format: str = ""


# --------------------------------------------------------------------------- #
# constants and error helpers
# --------------------------------------------------------------------------- #

_NONE = SimpleType.NONE
_INTEGER = SimpleType.INTEGER
_FLOAT = SimpleType.FLOAT
_STRING = SimpleType.STRING
_BOOLEAN = SimpleType.BOOLEAN
_DATETIME = SimpleType.DATETIME
_DURATION = SimpleType.DURATION
_BINARY = SimpleType.BINARY
_STRUCT = SimpleType.STRUCT
_SINGLE = BlobType.BlobDimensionality.SINGLE
_MULTIPART = BlobType.BlobDimensionality.MULTIPART

_UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Struct numbers are doubles: larger ints would silently change value.
_STRUCT_INT_MAX = 2**53
# google.protobuf.Duration's documented range (+-10000 years).
_DURATION_MAX_SECONDS = 315_576_000_000
_MSGPACK_TAG = "msgpack"
_MAX_REPR = 80

# reprlib bounds the work for big containers/strings; error paths must not
# stringify a multi-megabyte payload just to truncate it.
_repr = reprlib.Repr()
_repr.maxstring = _MAX_REPR
_repr.maxother = _MAX_REPR
_repr.maxlong = _MAX_REPR
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


def _short(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = repr(bytes(value[:_MAX_REPR]))
    else:
        try:
            text = _repr.repr(value)
        except Exception:  # a broken __repr__ must not mask the real error
            text = f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _describe(lt: LiteralType | None) -> str:
    """Human-readable type name for error messages (bounded length)."""
    text = _describe_full(lt)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _describe_full(lt: LiteralType | None) -> str:
    if lt is None:
        return "a supported Python type"
    kind = lt.WhichOneof("type")
    if kind == "simple":
        return str(SimpleType.Name(lt.simple))
    if kind == "collection_type":
        return f"list[{_describe_full(lt.collection_type)}]"
    if kind == "map_value_type":
        return f"dict[str, {_describe_full(lt.map_value_type)}]"
    if kind == "blob":
        what = "DIRECTORY" if lt.blob.dimensionality == _MULTIPART else "FILE"
        return f"{what}({lt.blob.format})" if lt.blob.format else what
    if kind == "enum_type":
        return f"ENUM{list(lt.enum_type.values)}"
    if kind == "union_type":
        return "UNION[" + " | ".join(_describe_full(v) for v in lt.union_type.variants) + "]"
    if kind == "schema":
        return "SCHEMA"
    if kind == "structured_dataset_type":
        return "STRUCTURED_DATASET"
    return "an unset LiteralType"


def _mismatch(name: str, lt: LiteralType | None, value: Any, why: str = "") -> LiteralConversionError:
    msg = f"{clip(name)}: expected {_describe(lt)}, got {type(value).__name__} {_short(value)}"
    return LiteralConversionError(f"{msg} ({why})" if why else msg)


# --------------------------------------------------------------------------- #
# reading: Literal -> Python
# --------------------------------------------------------------------------- #


def to_python(literal: Literal, literal_type: LiteralType | None = None) -> Any:
    """Convert a literal to a plain Python value.

    ``literal_type`` only guides ambiguous encodings (element types of
    collections, raw BINARY vs msgpack-encoded dicts); when it disagrees with
    the literal, the literal wins because it is what was actually produced.
    Kinds we do not model are returned as the ``Literal`` itself.
    """
    return _read(literal, literal_type, "value")


def _read(lit: Literal, lt: LiteralType | None, name: str) -> Any:
    kind = lit.WhichOneof("value")
    if kind == "scalar":
        return _read_scalar(lit, lt, name)
    if kind == "collection":
        elem_t = lt.collection_type if lt is not None and lt.HasField("collection_type") else None
        return [_read(item, elem_t, f"{name}[{i}]") for i, item in enumerate(lit.collection.literals)]
    if kind == "map":
        val_t = lt.map_value_type if lt is not None and lt.HasField("map_value_type") else None
        return {k: _read(v, val_t, f"{name}[{k!r}]") for k, v in lit.map.literals.items()}
    return lit  # offloaded_metadata, or an empty literal: pass through


def _read_scalar(lit: Literal, lt: LiteralType | None, name: str) -> Any:
    scalar = lit.scalar
    kind = scalar.WhichOneof("value")
    if kind == "primitive":
        prim = scalar.primitive
        pkind = prim.WhichOneof("value")
        if pkind is None:
            return lit
        return _PRIMITIVE_READERS[pkind](prim, name)
    if kind == "none_type":
        return None
    if kind == "generic":
        return _struct_to_dict(scalar.generic)
    if kind == "binary":
        binary = scalar.binary
        if binary.tag == _MSGPACK_TAG and not (lt is not None and lt.HasField("simple") and lt.simple == _BINARY):
            try:
                return msgpack.unpackb(binary.value, raw=False, strict_map_key=False)
            except Exception as exc:
                raise LiteralConversionError(
                    f"{clip(name)}: cannot decode msgpack binary ({len(binary.value)} bytes): {_short(exc)}"
                ) from exc
        return bytes(binary.value)
    if kind == "blob":
        blob = scalar.blob
        cls = Directory if blob.metadata.type.dimensionality == _MULTIPART else File
        return cls(uri=blob.uri, format=blob.metadata.type.format)
    if kind == "union":
        return _read(scalar.union.value, scalar.union.type, name)
    return lit  # schema, structured_dataset, error, or unset: pass through


def _read_datetime(prim: Any, name: str) -> _dt.datetime:
    ts = prim.datetime
    try:
        return _EPOCH + _dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    except OverflowError as exc:
        raise LiteralConversionError(
            f"{clip(name)}: timestamp seconds={ts.seconds} is outside Python's datetime range"
        ) from exc


def _read_duration(prim: Any, name: str) -> _dt.timedelta:
    d = prim.duration
    nanos = d.nanos
    # Duration nanos share the sign of seconds; truncate toward zero.
    micros = nanos // 1000 if nanos >= 0 else -(-nanos // 1000)
    try:
        return _dt.timedelta(seconds=d.seconds, microseconds=micros)
    except OverflowError as exc:
        raise LiteralConversionError(
            f"{clip(name)}: duration seconds={d.seconds} is outside Python's timedelta range"
        ) from exc


_PRIMITIVE_READERS: dict[str, Callable[[Any, str], Any]] = {
    "integer": lambda p, _n: int(p.integer),
    "float_value": lambda p, _n: float(p.float_value),
    "string_value": lambda p, _n: str(p.string_value),
    "boolean": lambda p, _n: bool(p.boolean),
    "datetime": _read_datetime,
    "duration": _read_duration,
}


def _struct_to_dict(struct: Any) -> dict[str, Any]:
    # Faithful to what Struct stores: every number comes back as a float.
    return {k: _value_to_python(v) for k, v in struct.fields.items()}


def _value_to_python(v: Any) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        return float(v.number_value)
    if kind == "string_value":
        return str(v.string_value)
    if kind == "bool_value":
        return bool(v.bool_value)
    if kind == "struct_value":
        return _struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [_value_to_python(x) for x in v.list_value.values]
    return None  # null_value or unset


def literal_map_to_python(lm: LiteralMap, types: Mapping[str, LiteralType] | None = None) -> dict[str, Any]:
    """Convert task inputs (or any LiteralMap) to a dict, using declared types where known."""
    if types:
        return {k: _read(v, types.get(k), f"input {k!r}") for k, v in lm.literals.items()}
    return {k: _read(v, None, f"input {k!r}") for k, v in lm.literals.items()}


def variable_types(variables: VariableMap) -> dict[str, LiteralType]:
    """Flatten an interface's VariableMap into the ``types`` mapping used here."""
    return {name: var.type for name, var in variables.variables.items()}


# --------------------------------------------------------------------------- #
# writing: Python -> Literal
# --------------------------------------------------------------------------- #
# Every writer fills ``out`` in place (``out`` is a fresh/empty Literal) so that
# nested collections are built directly inside their parent without copies.

_Writer = Callable[[Any, LiteralType, str, Literal], None]


def to_literal(value: Any, literal_type: LiteralType | None = None, *, name: str = "value") -> Literal:
    """Convert a Python value to a literal, strictly checked against ``literal_type``.

    Without a declared type the value's own Python type decides. A ``Literal``
    is returned unchanged so callers can pre-build kinds we do not model.
    ``name`` only labels error messages.
    """
    if isinstance(value, Literal):
        return value
    out = Literal()
    _write(value, literal_type, name, out)
    return out


def python_to_literal_map(values: Mapping[str, Any], types: Mapping[str, LiteralType] | None = None) -> LiteralMap:
    """Convert connector outputs to a LiteralMap; keys without a declared type are inferred."""
    if isinstance(values, LiteralMap):
        return values
    lm = LiteralMap()
    literals = lm.literals
    for key, value in values.items():
        if not isinstance(key, str):
            raise LiteralConversionError(f"output {_short(key)}: output names must be str, got {type(key).__name__}")
        if isinstance(value, Literal):
            literals[key].CopyFrom(value)
        else:
            _write(value, types.get(key) if types else None, f"output {key!r}", literals[key])
    return lm


def _write(value: Any, lt: LiteralType | None, name: str, out: Literal) -> None:
    if isinstance(value, Literal):
        out.CopyFrom(value)
        return
    kind = lt.WhichOneof("type") if lt is not None else None
    if lt is None or kind is None:  # undeclared (or an empty LiteralType)
        _write_inferred(value, name, out)
        return
    if isinstance(value, enum.Enum):
        value = value.value
    if kind == "simple":
        writer = _SIMPLE_WRITERS.get(lt.simple)
        if writer is None:
            raise _mismatch(name, lt, value, "unsupported simple type; pass a Literal")
        writer(value, lt, name, out)
    else:
        _KIND_WRITERS[kind](value, lt, name, out)


# -- simple types ------------------------------------------------------------ #


def _w_none(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if value is not None:
        raise _mismatch(name, lt, value)
    out.scalar.none_type.SetInParent()


def _w_bool(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if not isinstance(value, bool):
        raise _mismatch(name, lt, value)
    out.scalar.primitive.boolean = value


def _w_int(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if type(value) is not int:
        if isinstance(value, bool):
            raise _mismatch(name, lt, value)
        if isinstance(value, float):
            if not value.is_integer():
                raise _mismatch(name, lt, value, "float has a fractional part")
            value = int(value)
        elif isinstance(value, numbers.Integral):  # e.g. numpy integers
            value = operator.index(value)
        else:
            raise _mismatch(name, lt, value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _mismatch(name, lt, value, "out of int64 range")
    out.scalar.primitive.integer = value


def _w_float(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _mismatch(name, lt, value)
        try:
            value = float(value)
        except OverflowError as exc:
            raise _mismatch(name, lt, value, "too large for a double") from exc
    out.scalar.primitive.float_value = value


def _w_str(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if not isinstance(value, str):
        raise _mismatch(name, lt, value)
    try:
        out.scalar.primitive.string_value = value
    except ValueError as exc:  # e.g. lone surrogates are not valid UTF-8
        raise _mismatch(name, lt, value, "not valid UTF-8") from exc


def _w_datetime(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if not isinstance(value, _dt.datetime):
        raise _mismatch(name, lt, value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)  # naive means UTC by contract
    delta = value - _EPOCH
    ts = out.scalar.primitive.datetime
    ts.SetInParent()  # the epoch is all-default fields
    ts.seconds = delta.days * 86400 + delta.seconds
    ts.nanos = delta.microseconds * 1000


def _w_duration(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if not isinstance(value, _dt.timedelta):
        raise _mismatch(name, lt, value)
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    seconds, rem = divmod(abs(micros), 1_000_000)
    if seconds > _DURATION_MAX_SECONDS:
        raise _mismatch(name, lt, value, "outside protobuf Duration range")
    sign = -1 if micros < 0 else 1
    d = out.scalar.primitive.duration
    d.SetInParent()  # a zero duration is all-default fields
    d.seconds = sign * seconds
    d.nanos = sign * rem * 1000


def _w_binary(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _mismatch(name, lt, value)
    b = out.scalar.binary
    b.SetInParent()  # b"" alone would leave the oneof unset
    b.value = bytes(value)
    b.tag = ""


def _w_struct(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if not isinstance(value, Mapping):
        raise _mismatch(name, lt, value)
    _fill_struct(out.scalar.generic, value, name)


def _fill_struct(struct: Any, mapping: Mapping[Any, Any], name: str) -> None:
    struct.SetInParent()  # an empty dict must still be a (present) Struct
    fields = struct.fields
    for k, v in mapping.items():
        if not isinstance(k, str):
            raise LiteralConversionError(f"{clip(name)}: STRUCT keys must be str, got {type(k).__name__} {_short(k)}")
        _set_value(fields[k], v, f"{name}[{k!r}]")


def _set_value(slot: Any, v: Any, name: str) -> None:
    # Like Struct.update, but with a field path in errors and no silent
    # precision loss for big ints.
    if v is None:
        slot.null_value = 0
    elif isinstance(v, bool):
        slot.bool_value = v
    elif isinstance(v, str):
        slot.string_value = v
    elif isinstance(v, int):
        if not -_STRUCT_INT_MAX <= v <= _STRUCT_INT_MAX:
            raise LiteralConversionError(
                f"{clip(name)}: int {_short(v)} cannot be stored exactly in a STRUCT (doubles); use a str"
            )
        slot.number_value = v
    elif isinstance(v, float):
        slot.number_value = v
    elif isinstance(v, Mapping):
        _fill_struct(slot.struct_value, v, name)
    elif isinstance(v, (list, tuple)):
        lv = slot.list_value
        lv.SetInParent()
        for i, item in enumerate(v):
            _set_value(lv.values.add(), item, f"{name}[{i}]")
    else:
        raise LiteralConversionError(
            f"{clip(name)}: STRUCT values must be JSON-like, got {type(v).__name__} {_short(v)}"
        )


def _w_unsupported(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    raise _mismatch(name, lt, value, "no Python mapping for this type; pass a Literal")


_SIMPLE_WRITERS: dict[int, _Writer] = {
    _NONE: _w_none,
    _BOOLEAN: _w_bool,
    _INTEGER: _w_int,
    _FLOAT: _w_float,
    _STRING: _w_str,
    _DATETIME: _w_datetime,
    _DURATION: _w_duration,
    _BINARY: _w_binary,
    _STRUCT: _w_struct,
}


# -- composite types --------------------------------------------------------- #


def _w_collection(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if not isinstance(value, (list, tuple)):
        raise _mismatch(name, lt, value)
    elem_t = lt.collection_type
    items = out.collection.literals
    out.collection.SetInParent()  # an empty list is still a collection
    for i, item in enumerate(value):
        _write(item, elem_t, f"{name}[{i}]", items.add())


def _w_map(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if not isinstance(value, Mapping):
        raise _mismatch(name, lt, value)
    val_t = lt.map_value_type
    literals = out.map.literals
    out.map.SetInParent()
    for k, v in value.items():
        if not isinstance(k, str):
            raise LiteralConversionError(f"{clip(name)}: map keys must be str, got {type(k).__name__} {_short(k)}")
        _write(v, val_t, f"{name}[{k!r}]", literals[k])


def _w_blob(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    declared = lt.blob
    if isinstance(value, (File, Directory)):
        want_dir = declared.dimensionality == _MULTIPART
        if isinstance(value, Directory) is not want_dir:
            raise _mismatch(name, lt, value)
        if value.format and declared.format and value.format != declared.format:
            raise _mismatch(name, lt, value, f"format {value.format!r} != {declared.format!r}")
        uri, fmt = value.uri, value.format or declared.format
    elif isinstance(value, (str, os.PathLike)):
        uri, fmt = os.fspath(value), declared.format
        if not isinstance(uri, str):
            raise _mismatch(name, lt, value, "bytes paths are not supported")
    else:
        raise _mismatch(name, lt, value)
    blob = out.scalar.blob
    blob.SetInParent()
    blob.uri = uri
    blob.metadata.type.format = fmt
    blob.metadata.type.dimensionality = declared.dimensionality


def _w_enum(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    if not isinstance(value, str):
        raise _mismatch(name, lt, value)
    if value not in lt.enum_type.values:
        raise _mismatch(name, lt, value, "not one of the enum values")
    out.scalar.primitive.string_value = value


def _w_union(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    # First variant that accepts the value wins, so declaration order matters
    # (e.g. 2.0 into UNION[INTEGER | FLOAT] becomes the integer 2).
    for variant in lt.union_type.variants:
        attempt = Literal()
        try:
            _write(value, variant, name, attempt)
        except LiteralConversionError:
            continue
        union = out.scalar.union
        union.value.CopyFrom(attempt)
        union.type.CopyFrom(variant)
        return
    raise _mismatch(name, lt, value, "no union variant accepts it")


_KIND_WRITERS: dict[str, _Writer] = {
    "collection_type": _w_collection,
    "map_value_type": _w_map,
    "blob": _w_blob,
    "enum_type": _w_enum,
    "union_type": _w_union,
    "schema": _w_unsupported,
    "structured_dataset_type": _w_unsupported,
}


# -- undeclared: the value's own type decides -------------------------------- #

_T_NONE = LiteralType(simple=_NONE)
_T_BOOLEAN = LiteralType(simple=_BOOLEAN)
_T_INTEGER = LiteralType(simple=_INTEGER)
_T_FLOAT = LiteralType(simple=_FLOAT)
_T_STRING = LiteralType(simple=_STRING)
_T_DATETIME = LiteralType(simple=_DATETIME)
_T_DURATION = LiteralType(simple=_DURATION)
_T_BINARY = LiteralType(simple=_BINARY)
_T_STRUCT = LiteralType(simple=_STRUCT)


def _w_list_inferred(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    # Each element converts by its own type: cheaper than inferring an
    # element type up front, and it never rejects a heterogeneous list that
    # the caller did not constrain.
    items = out.collection.literals
    out.collection.SetInParent()
    for i, item in enumerate(value):
        _write(item, None, f"{name}[{i}]", items.add())


def _w_file_inferred(value: Any, lt: LiteralType, name: str, out: Literal) -> None:
    blob = out.scalar.blob
    blob.SetInParent()
    blob.uri = value.uri
    blob.metadata.type.format = value.format
    blob.metadata.type.dimensionality = _MULTIPART if isinstance(value, Directory) else _SINGLE


# Exact-type fast path; the isinstance chain in _write_inferred covers subclasses.
# The LiteralType passed along is only used for error messages.
_INFERRED_WRITERS: dict[type, tuple[_Writer, LiteralType]] = {
    type(None): (_w_none, _T_NONE),
    bool: (_w_bool, _T_BOOLEAN),
    int: (_w_int, _T_INTEGER),
    float: (_w_float, _T_FLOAT),
    str: (_w_str, _T_STRING),
    bytes: (_w_binary, _T_BINARY),
    bytearray: (_w_binary, _T_BINARY),
    _dt.datetime: (_w_datetime, _T_DATETIME),
    _dt.timedelta: (_w_duration, _T_DURATION),
    list: (_w_list_inferred, _T_NONE),
    tuple: (_w_list_inferred, _T_NONE),
    dict: (_w_struct, _T_STRUCT),
    File: (_w_file_inferred, _T_NONE),
    Directory: (_w_file_inferred, _T_NONE),
}

# Order matters: Enum before int/str (IntEnum, StrEnum), bool before int.
_INFERRED_FALLBACK: tuple[tuple[type | tuple[type, ...], type], ...] = (
    (bool, bool),
    (int, int),
    (float, float),
    (numbers.Integral, int),  # e.g. numpy integers
    (numbers.Real, float),
    (str, str),
    ((bytes, bytearray, memoryview), bytes),
    (_dt.datetime, _dt.datetime),
    (_dt.timedelta, _dt.timedelta),
    ((list, tuple), list),
    (Mapping, dict),
    ((File, Directory), File),
)


def _write_inferred(value: Any, name: str, out: Literal) -> None:
    entry = _INFERRED_WRITERS.get(type(value))
    if entry is None:
        if isinstance(value, enum.Enum):
            _write_inferred(value.value, name, out)
            return
        for cls, key in _INFERRED_FALLBACK:
            if isinstance(value, cls):
                entry = _INFERRED_WRITERS[key]
                break
        else:
            raise LiteralConversionError(
                f"{clip(name)}: cannot convert {type(value).__name__} {_short(value)} without a declared type"
            )
    writer, lt = entry
    writer(value, lt, name, out)


def infer_literal_type(value: Any) -> LiteralType:
    """Best-effort Flyte type for an undeclared value (e.g. an output missing from the interface).

    Lists take their element type from the first element (NONE when empty);
    dicts become STRUCT because their values are usually heterogeneous.
    """
    if value is None:
        return LiteralType(simple=_NONE)
    if isinstance(value, enum.Enum):
        members = [m.value for m in type(value)]
        if all(isinstance(m, str) for m in members):
            return LiteralType(enum_type=EnumType(values=members))
        return infer_literal_type(value.value)
    if isinstance(value, bool):
        return LiteralType(simple=_BOOLEAN)
    if isinstance(value, numbers.Integral):
        return LiteralType(simple=_INTEGER)
    if isinstance(value, numbers.Real):
        return LiteralType(simple=_FLOAT)
    if isinstance(value, str):
        return LiteralType(simple=_STRING)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return LiteralType(simple=_BINARY)
    if isinstance(value, _dt.datetime):
        return LiteralType(simple=_DATETIME)
    if isinstance(value, _dt.timedelta):
        return LiteralType(simple=_DURATION)
    if isinstance(value, (list, tuple)):
        elem = infer_literal_type(value[0]) if value else LiteralType(simple=_NONE)
        return LiteralType(collection_type=elem)
    if isinstance(value, Mapping):
        return LiteralType(simple=_STRUCT)
    if isinstance(value, File):
        return LiteralType(blob=BlobType(format=value.format, dimensionality=_SINGLE))
    if isinstance(value, Directory):
        return LiteralType(blob=BlobType(format=value.format, dimensionality=_MULTIPART))
    raise LiteralConversionError(f"cannot infer a Flyte type for {type(value).__name__} {_short(value)}")
