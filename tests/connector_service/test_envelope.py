"""The resource_meta envelope: what CreateTask seals, GetTask opens."""

from __future__ import annotations

import pytest
from flyteidl.core import interface_pb2, types_pb2

from connector_service import _envelope
from connector_service._envelope import ResourceMetaError, compact_output_types, open_meta, seal


def _outputs(count: int) -> interface_pb2.VariableMap:
    variables = interface_pb2.VariableMap()
    for i in range(count):
        variables.variables[f"output_{i}"].type.simple = types_pb2.SimpleType.INTEGER
    return variables


@pytest.mark.parametrize("count", [0, 1, 40], ids=["none", "one", "a 2-byte length"])
@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["plain", "signed"])
def test_what_is_sealed_opens_to_the_same_meta_and_types(count: int, key: bytes | None) -> None:
    types = compact_output_types(_outputs(count))
    assert (len(types) >= 0x80) == (count == 40)
    opened = open_meta(seal(b'{"job": 1}', types, key), key)
    assert opened.meta == b'{"job": 1}'
    assert opened.output_types is not None
    assert sorted(opened.output_types) == sorted(f"output_{i}" for i in range(count))
    assert open_meta(seal(b"{}", types, key), key).output_types == opened.output_types  # remembered, same answer


def test_compaction_drops_metadata_and_is_remembered_per_interface() -> None:
    variables = _outputs(1)
    variables.variables["output_0"].type.metadata.update({"schema": "x" * 1000})
    compact = compact_output_types(variables)
    assert len(compact) < 100 and compact == compact_output_types(variables)
    assert compact == compact_output_types(_outputs(1))


def test_foreign_and_damaged_metas() -> None:
    assert open_meta(b'{"from": "flytekit"}') == (b'{"from": "flytekit"}', None, False)
    with pytest.raises(ResourceMetaError, match="pickle"):
        open_meta(b"\x80\x04x")
    sealed = seal(b"{}", compact_output_types(_outputs(1)))
    with pytest.raises(ResourceMetaError, match="truncated"):
        open_meta(sealed[:7])
    with pytest.raises(ResourceMetaError, match="corrupt"):
        open_meta(_envelope.MAGIC + bytes((0, 3)) + b"\xff\xff\xff")
    with pytest.raises(ResourceMetaError, match="not signed"):
        open_meta(sealed, b"k" * 32)
    with pytest.raises(ResourceMetaError, match="does not match"):
        open_meta(seal(b"{}", b"", b"a" * 32), b"b" * 32)
