from __future__ import annotations

import datetime as dt
import enum
import math
import pathlib
from typing import Any

import msgpack
import pytest
from flyteidl.core.interface_pb2 import Variable, VariableMap
from flyteidl.core.literals_pb2 import (
    Binary,
    Literal,
    LiteralMap,
    LiteralOffloadedMetadata,
    Scalar,
    Schema,
    StructuredDataset,
)
from flyteidl.core.types_pb2 import BlobType, EnumType, LiteralType, SimpleType, UnionType
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_service._literals import (
    Directory,
    File,
    LiteralConversionError,
    infer_literal_type,
    literal_map_to_python,
    python_to_literal_map,
    to_literal,
    to_python,
    variable_types,
)

UTC = dt.UTC
SINGLE = BlobType.BlobDimensionality.SINGLE
MULTIPART = BlobType.BlobDimensionality.MULTIPART
DURATION_MAX = dt.timedelta(seconds=315_576_000_000)


def simple(t: SimpleType.ValueType) -> LiteralType:
    return LiteralType(simple=t)


def union(*variants: LiteralType) -> LiteralType:
    return LiteralType(union_type=UnionType(variants=list(variants)))


# --------------------------------------------------------------------------- #
# strategies: (LiteralType, strategy of values of that type)
# --------------------------------------------------------------------------- #

ints64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False)
utc_datetimes = st.datetimes(timezones=st.just(UTC))
durations = st.timedeltas(min_value=-DURATION_MAX, max_value=DURATION_MAX)
json_leaf = st.none() | st.booleans() | st.text(max_size=10) | floats | st.integers(-(2**53), 2**53)
json_like = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=5), json_like, max_size=4)
uris = st.text(min_size=1, max_size=20).map(lambda s: "s3://bucket/" + s)

Spec = tuple[LiteralType, st.SearchStrategy[Any]]

INFERABLE_LEAVES: list[Spec] = [
    (simple(SimpleType.NONE), st.none()),
    (simple(SimpleType.BOOLEAN), st.booleans()),
    (simple(SimpleType.INTEGER), ints64),
    (simple(SimpleType.FLOAT), floats),
    (simple(SimpleType.STRING), st.text(max_size=20)),
    (simple(SimpleType.BINARY), st.binary(max_size=20)),
    (simple(SimpleType.DATETIME), utc_datetimes),
    (simple(SimpleType.DURATION), durations),
    (simple(SimpleType.STRUCT), json_objects),
    (LiteralType(blob=BlobType(format="csv", dimensionality=SINGLE)), uris.map(lambda u: File(u, "csv"))),
    (LiteralType(blob=BlobType(format="", dimensionality=MULTIPART)), uris.map(Directory)),
]
DECLARED_ONLY_LEAVES: list[Spec] = [
    (
        LiteralType(enum_type=EnumType(values=["red", "green", "blue"])),
        st.sampled_from(["red", "green", "blue"]),
    ),
    (union(simple(SimpleType.INTEGER), simple(SimpleType.NONE)), st.none() | ints64),
    (union(simple(SimpleType.STRING), simple(SimpleType.FLOAT)), st.text(max_size=5) | floats),
]


def _extend(kids: st.SearchStrategy[Spec], *, min_size: int = 0) -> st.SearchStrategy[Spec]:
    lists = kids.map(lambda s: (LiteralType(collection_type=s[0]), st.lists(s[1], min_size=min_size, max_size=4)))
    maps = kids.map(
        lambda s: (
            LiteralType(map_value_type=s[0]),
            st.dictionaries(st.text(max_size=5), s[1], max_size=4),
        )
    )
    return lists | maps


def _pairs(leaves: list[Spec], *, allow_maps: bool = True, min_size: int = 0) -> st.SearchStrategy[Any]:
    if allow_maps:
        specs = st.recursive(st.sampled_from(leaves), lambda k: _extend(k, min_size=min_size), max_leaves=3)
    else:
        specs = st.recursive(
            st.sampled_from(leaves),
            lambda k: k.map(
                lambda s: (
                    LiteralType(collection_type=s[0]),
                    st.lists(s[1], min_size=min_size, max_size=4),
                )
            ),
            max_leaves=3,
        )
    return specs.flatmap(lambda s: s[1].map(lambda v: (s[0], v)))


declared_pairs = _pairs(INFERABLE_LEAVES + DECLARED_ONLY_LEAVES)
# Undeclared dicts become STRUCT, and element types come from the first element,
# so inference only round-trips for non-empty homogeneous lists of inferable leaves.
inferable_values = _pairs(INFERABLE_LEAVES, allow_maps=False, min_size=1).map(lambda p: p[1])


# --------------------------------------------------------------------------- #
# properties
# --------------------------------------------------------------------------- #


@settings(max_examples=300, deadline=None)
@given(declared_pairs)
def test_declared_round_trip(pair: tuple[LiteralType, Any]) -> None:
    lt, value = pair
    lit = to_literal(value, lt)
    assert to_python(lit, lt) == value


@settings(max_examples=150, deadline=None)
@given(declared_pairs)
def test_declared_round_trip_through_proto_bytes(pair: tuple[LiteralType, Any]) -> None:
    lt, value = pair
    lit = to_literal(value, lt)
    again = Literal.FromString(lit.SerializeToString())
    assert again == lit
    assert to_python(again, lt) == value
    assert to_python(again) == value  # the type hint is optional when reading


@settings(max_examples=200, deadline=None)
@given(inferable_values)
def test_inferred_round_trip(value: Any) -> None:
    lt = infer_literal_type(value)
    assert to_python(to_literal(value, lt), lt) == value
    assert to_python(to_literal(value)) == value
    assert to_literal(value) == to_literal(value, lt)


@settings(max_examples=100, deadline=None)
@given(st.lists(declared_pairs, max_size=4), st.lists(inferable_values, max_size=3))
def test_literal_map_round_trip(declared: list[tuple[LiteralType, Any]], undeclared: list[Any]) -> None:
    types = {f"d{i}": lt for i, (lt, _) in enumerate(declared)}
    values = {f"d{i}": v for i, (_, v) in enumerate(declared)}
    values.update({f"u{i}": v for i, v in enumerate(undeclared)})
    lm = python_to_literal_map(values, types)
    assert set(lm.literals) == set(values)
    assert literal_map_to_python(LiteralMap.FromString(lm.SerializeToString()), types) == values


@settings(max_examples=100, deadline=None)
@given(st.datetimes())
def test_naive_datetime_is_utc(value: dt.datetime) -> None:
    got = to_python(to_literal(value, simple(SimpleType.DATETIME)))
    assert got.tzinfo is UTC
    assert got == value.replace(tzinfo=UTC)


@settings(max_examples=100, deadline=None)
@given(st.datetimes(timezones=st.timezones()))
def test_aware_datetime_is_normalised_to_utc(value: dt.datetime) -> None:
    try:
        expected = value.astimezone(UTC)
    except OverflowError:  # near datetime.min/max the UTC instant is not representable
        return
    got = to_python(to_literal(value))
    assert got == expected
    assert got.utcoffset() == dt.timedelta(0)


# --------------------------------------------------------------------------- #
# examples
# --------------------------------------------------------------------------- #


def test_int_declared_float_becomes_float_literal() -> None:
    lit = to_literal(3, simple(SimpleType.FLOAT))
    assert lit.scalar.primitive.WhichOneof("value") == "float_value"
    got = to_python(lit)
    assert got == 3.0 and type(got) is float


def test_integral_float_declared_integer_is_accepted() -> None:
    lit = to_literal(4.0, simple(SimpleType.INTEGER))
    assert lit.scalar.primitive.WhichOneof("value") == "integer"
    assert to_python(lit) == 4 and type(to_python(lit)) is int


def test_fractional_float_declared_integer_names_field() -> None:
    with pytest.raises(LiteralConversionError) as info:
        python_to_literal_map({"x": 2.5}, {"x": simple(SimpleType.INTEGER)})
    msg = str(info.value)
    assert "'x'" in msg and "INTEGER" in msg and "float" in msg and "2.5" in msg


def test_error_message_format() -> None:
    with pytest.raises(LiteralConversionError, match=r"^output 'x': expected INTEGER, got str 'abc'$"):
        to_literal("abc", simple(SimpleType.INTEGER), name="output 'x'")


@pytest.mark.parametrize("t", [SimpleType.INTEGER, SimpleType.FLOAT], ids=lambda t: SimpleType.Name(t))
def test_bool_is_not_a_number(t: SimpleType.ValueType) -> None:
    with pytest.raises(LiteralConversionError, match="got bool True"):
        to_literal(True, simple(t))


def test_bool_before_int_when_inferring() -> None:
    assert to_literal(True).scalar.primitive.WhichOneof("value") == "boolean"
    assert infer_literal_type(False).simple == SimpleType.BOOLEAN
    assert to_python(to_literal(False)) is False


def test_int_out_of_int64_range() -> None:
    with pytest.raises(LiteralConversionError, match="int64"):
        to_literal(2**63)


def test_nested_error_names_path() -> None:
    lt = LiteralType(map_value_type=LiteralType(collection_type=simple(SimpleType.INTEGER)))
    with pytest.raises(LiteralConversionError, match=r"^output 'o'\['k'\]\[1\]: expected INTEGER, got str"):
        python_to_literal_map({"o": {"k": [1, "two"]}}, {"o": lt})


def test_error_messages_are_short() -> None:
    huge = "x" * 1_000_000
    cases: list[tuple[Any, LiteralType]] = [
        (huge, simple(SimpleType.INTEGER)),
        (huge.encode(), simple(SimpleType.STRING)),
        (list(range(100_000)), simple(SimpleType.STRUCT)),
        ({str(i): i for i in range(10_000)}, LiteralType(collection_type=simple(SimpleType.STRING))),
        ("nope", LiteralType(enum_type=EnumType(values=[f"v{i}" * 20 for i in range(1000)]))),
    ]
    for value, lt in cases:
        with pytest.raises(LiteralConversionError) as info:
            to_literal(value, lt, name="output 'big'")
        assert len(str(info.value)) < 300, str(info.value)[:400]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


def test_enum_declared() -> None:
    lt = LiteralType(enum_type=EnumType(values=["red", "green"]))
    lit = to_literal("green", lt)
    assert lit.scalar.primitive.string_value == "green"
    assert to_python(lit, lt) == "green"
    assert to_literal(Color.RED, lt).scalar.primitive.string_value == "red"
    with pytest.raises(LiteralConversionError, match="enum"):
        to_literal("purple", lt, name="output 'c'")
    with pytest.raises(LiteralConversionError):
        to_literal(1, lt)


def test_enum_inferred() -> None:
    lt = infer_literal_type(Color.GREEN)
    assert list(lt.enum_type.values) == ["red", "green"]
    assert to_python(to_literal(Color.GREEN)) == "green"
    assert to_python(to_literal(Color.GREEN, simple(SimpleType.STRING))) == "green"


def test_optional_int_none_as_union() -> None:
    lt = union(simple(SimpleType.INTEGER), simple(SimpleType.NONE))
    lit = to_literal(None, lt)
    assert lit.scalar.WhichOneof("value") == "union"
    assert lit.scalar.union.type == simple(SimpleType.NONE)
    assert lit.scalar.union.value.scalar.WhichOneof("value") == "none_type"
    assert to_python(lit, lt) is None

    lit = to_literal(7, lt)
    assert lit.scalar.union.type == simple(SimpleType.INTEGER)
    assert lit.scalar.union.value.scalar.primitive.integer == 7
    assert to_python(lit) == 7

    with pytest.raises(LiteralConversionError, match="UNION"):
        to_literal("seven", lt, name="output 'n'")


def test_union_tries_variants_in_order() -> None:
    lt = union(simple(SimpleType.STRING), simple(SimpleType.FLOAT))
    assert to_literal(1, lt).scalar.union.type == simple(SimpleType.FLOAT)
    assert to_literal("1", lt).scalar.union.type == simple(SimpleType.STRING)


def test_blob_from_str_and_pathlike() -> None:
    lt = LiteralType(blob=BlobType(format="parquet", dimensionality=SINGLE))
    lit = to_literal("s3://b/k.parquet", lt)
    blob = lit.scalar.blob
    assert blob.uri == "s3://b/k.parquet"
    assert blob.metadata.type.format == "parquet"
    assert blob.metadata.type.dimensionality == SINGLE
    assert to_python(lit) == File("s3://b/k.parquet", "parquet")

    dir_t = LiteralType(blob=BlobType(dimensionality=MULTIPART))
    assert to_python(to_literal(pathlib.PurePosixPath("/tmp/out"), dir_t)) == Directory("/tmp/out")


def test_blob_kind_and_format_mismatch() -> None:
    file_t = LiteralType(blob=BlobType(format="csv", dimensionality=SINGLE))
    with pytest.raises(LiteralConversionError):
        to_literal(Directory("s3://b/d"), file_t)
    with pytest.raises(LiteralConversionError, match="format"):
        to_literal(File("s3://b/f", "json"), file_t)
    with pytest.raises(LiteralConversionError):
        to_literal(123, file_t)
    assert to_python(to_literal(File("s3://b/f"), file_t)) == File("s3://b/f", "csv")


def test_msgpack_binary_reads_as_dict() -> None:
    payload = {"a": 1, "b": [1.5, "x", None], "c": {"d": True}}
    lit = Literal(scalar=Scalar(binary=Binary(value=msgpack.packb(payload), tag="msgpack")))
    assert to_python(lit) == payload
    got = to_python(lit, simple(SimpleType.STRUCT))
    assert got == payload and type(got["a"]) is int  # msgpack keeps ints, unlike Struct
    # Declared BINARY means the caller wants the raw bytes.
    assert to_python(lit, simple(SimpleType.BINARY)) == msgpack.packb(payload)


def test_corrupt_msgpack_raises_named_error() -> None:
    lit = Literal(scalar=Scalar(binary=Binary(value=b"\xc1" * 10_000, tag="msgpack")))
    with pytest.raises(LiteralConversionError, match=r"^input 'm': cannot decode msgpack") as info:
        literal_map_to_python(LiteralMap(literals={"m": lit}))
    assert len(str(info.value)) < 200


def test_plain_binary_round_trip() -> None:
    lit = to_literal(b"\x00\x01")
    assert lit.scalar.binary.tag == ""
    assert to_python(lit) == b"\x00\x01"
    assert to_python(to_literal(bytearray(b"ab"))) == b"ab"


def test_struct_numbers_come_back_as_floats() -> None:
    got = to_python(to_literal({"n": 3, "l": [1, 2]}))
    assert got == {"n": 3.0, "l": [1.0, 2.0]}
    assert type(got["n"]) is float


def test_struct_rejects_non_json_and_big_ints() -> None:
    with pytest.raises(LiteralConversionError, match=r"value\['t'\]: STRUCT values must be JSON-like"):
        to_literal({"t": dt.datetime.now()})
    with pytest.raises(LiteralConversionError, match="keys must be str"):
        to_literal({1: "a"}, simple(SimpleType.STRUCT))
    with pytest.raises(LiteralConversionError, match="exactly"):
        to_literal({"big": 2**60})


def test_map_requires_str_keys() -> None:
    lt = LiteralType(map_value_type=simple(SimpleType.INTEGER))
    with pytest.raises(LiteralConversionError, match="map keys must be str"):
        to_literal({1: 2}, lt, name="output 'm'")
    lit = to_literal({"a": 1}, lt)
    assert lit.WhichOneof("value") == "map"
    assert to_python(lit, lt) == {"a": 1}


def test_tuple_is_a_collection_and_empty_list_is_typed_none() -> None:
    assert to_python(to_literal((1, 2), LiteralType(collection_type=simple(SimpleType.INTEGER)))) == [1, 2]
    assert infer_literal_type([]) == LiteralType(collection_type=simple(SimpleType.NONE))
    lit = to_literal([])
    assert lit.WhichOneof("value") == "collection"
    assert to_python(Literal.FromString(lit.SerializeToString())) == []


def test_infer_first_element_decides() -> None:
    assert infer_literal_type([1.5, 2]) == LiteralType(collection_type=simple(SimpleType.FLOAT))
    assert infer_literal_type({"a": 1}) == simple(SimpleType.STRUCT)
    assert infer_literal_type(File("s3://x", "csv")).blob == BlobType(format="csv", dimensionality=SINGLE)
    with pytest.raises(LiteralConversionError, match="cannot infer"):
        infer_literal_type(object())


def test_negative_and_sub_second_durations() -> None:
    for td in (dt.timedelta(microseconds=-1), dt.timedelta(days=-3, microseconds=5), dt.timedelta(0)):
        lit = to_literal(td)
        d = lit.scalar.primitive.duration
        assert d.seconds == 0 or d.nanos == 0 or (d.seconds < 0) == (d.nanos < 0)
        assert to_python(lit) == td
    with pytest.raises(LiteralConversionError, match="Duration range"):
        to_literal(dt.timedelta.max)


@pytest.mark.parametrize(
    "lit",
    [
        Literal(scalar=Scalar(schema=Schema(uri="s3://schema"))),
        Literal(scalar=Scalar(structured_dataset=StructuredDataset(uri="s3://sd"))),
        Literal(offloaded_metadata=LiteralOffloadedMetadata(uri="s3://off", size_bytes=10)),
    ],
    ids=["schema", "structured_dataset", "offloaded"],
)
def test_unknown_kinds_pass_through(lit: Literal) -> None:
    assert to_python(lit) is lit
    assert to_literal(lit) is lit
    lm = python_to_literal_map({"x": lit, "y": 1})
    assert lm.literals["x"] == lit
    assert literal_map_to_python(lm)["x"] == lit


def test_schema_type_requires_literal() -> None:
    from flyteidl.core.types_pb2 import SchemaType

    with pytest.raises(LiteralConversionError, match="SCHEMA"):
        to_literal("s3://x", LiteralType(schema=SchemaType()))


def test_reading_trusts_the_literal_kind() -> None:
    lit = to_literal("abc")
    assert to_python(lit, simple(SimpleType.INTEGER)) == "abc"
    assert to_python(to_literal(5), LiteralType(collection_type=simple(SimpleType.STRING))) == 5


def test_literal_map_passthrough_and_partial_types() -> None:
    lm = LiteralMap(literals={"a": to_literal(1)})
    assert python_to_literal_map(lm) is lm
    out = python_to_literal_map({"a": 1, "b": 2.5}, {"a": simple(SimpleType.FLOAT)})
    assert out.literals["a"].scalar.primitive.float_value == 1.0
    assert out.literals["b"].scalar.primitive.float_value == 2.5


def test_variable_types() -> None:
    vm = VariableMap(
        variables={
            "a": Variable(type=simple(SimpleType.INTEGER)),
            "b": Variable(type=LiteralType(collection_type=simple(SimpleType.STRING))),
        }
    )
    types = variable_types(vm)
    assert types == {"a": simple(SimpleType.INTEGER), "b": vm.variables["b"].type}
    assert literal_map_to_python(python_to_literal_map({"a": 1.0, "b": ["x"]}, types), types) == {
        "a": 1,
        "b": ["x"],
    }


def test_special_floats() -> None:
    assert to_python(to_literal(math.inf)) == math.inf
    assert math.isnan(to_python(to_literal(math.nan, simple(SimpleType.FLOAT))))


def test_file_and_directory_are_frozen() -> None:
    f = File("s3://x")
    with pytest.raises(AttributeError):
        f.uri = "s3://y"  # type: ignore[misc]
    d: object = Directory("s3://d")
    assert d != File("s3://d")
