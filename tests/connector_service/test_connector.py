"""The SDK shapes: flytekit byte-compatibility and the author's test harness."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
from dataclasses import dataclass
from typing import Any

import pytest
from flyteidl.core import literals_pb2, tasks_pb2, types_pb2

from connector_service import (
    AsyncConnectorBase,
    ConnectorTestHarness,
    File,
    Phase,
    Resource,
    ResourceMeta,
    SyncConnectorBase,
    TaskCategory,
    convert_to_flyte_phase,
    is_terminal_phase,
    read_inputs,
)
from connector_service._literals import to_literal, to_python
from connector_service.testing import task_template
from tests.utils import FIXTURES

SAMPLES = json.loads((FIXTURES / "flytekit" / "resource_meta_samples.json").read_text())


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["class"] for s in SAMPLES])
def test_resource_meta_encoding_is_byte_compatible_with_flytekit(sample: dict[str, Any]) -> None:
    fields = sample["fields"]
    cls = dataclasses.make_dataclass(sample["class"], [(k, Any) for k in fields], bases=(ResourceMeta,))
    meta = cls(**fields)
    assert meta.encode() == sample["encoded"].encode("utf-8")
    assert cls.decode(sample["encoded"].encode("utf-8")) == meta


@dataclass
class Inner:
    a: int
    b: list[str]


@dataclass
class Outer(ResourceMeta):
    job_id: str
    inner: Inner
    extra: str | None = None


def test_resource_meta_decodes_nested_dataclasses_and_ignores_unknown_keys() -> None:
    data = b'{"job_id": "j", "inner": {"a": 1, "b": ["x"]}, "added_by_a_newer_version": 1}'
    assert Outer.decode(data) == Outer(job_id="j", inner=Inner(a=1, b=["x"]))
    assert Outer.decode(Outer("j", Inner(2, [])).encode()) == Outer("j", Inner(2, []))


@dataclass
class Flat(ResourceMeta):
    job_id: str
    attempt: int = 0


@pytest.mark.parametrize(
    "data",
    [b'{"job_id": "j", "attempt": 2}', b' {"job_id": "j", "attempt": 2}\n', b'{"attempt": 2, "job_id": "j", "x": [1]}'],
    ids=["exact", "surrounding-whitespace", "unknown-key"],
)
def test_resource_meta_decodes_whatever_json_loads_would(data: bytes) -> None:
    assert Flat.decode(data) == Flat("j", 2)


@pytest.mark.parametrize("data", [b'["j"]', b'{"job_id": "j"} trailing', b"", b"{'job_id': 'j'}", b"\xff"])
def test_resource_meta_refuses_what_is_not_one_json_object(data: bytes) -> None:
    with pytest.raises(ValueError):
        Flat.decode(data)


def test_resource_meta_encoding_copies_containers_like_asdict() -> None:
    assert Flat("j", 1).encode() == b'{"job_id": "j", "attempt": 1}'
    for job_id, attempt in [('é"\\\n\u2028', 10**20), ("", float("nan")), ("x", float("-inf")), ("y", 1e-7)]:
        meta = Flat(job_id, attempt)  # type: ignore[arg-type]
        assert meta.encode() == json.dumps(dataclasses.asdict(meta)).encode()
    nested = Outer("j", Inner(1, ["x"]), extra=None)
    assert nested.encode() == json.dumps(dataclasses.asdict(nested)).encode()


def test_task_category_and_phase_helpers_match_flytekit() -> None:
    assert str(TaskCategory("bigquery_query_job_task", 1)) == "bigquery_query_job_task_v1"
    assert TaskCategory("x") == TaskCategory("x", 0)
    assert convert_to_flyte_phase("DONE") == Phase.SUCCEEDED
    assert convert_to_flyte_phase("cancelled") == Phase.FAILED
    assert convert_to_flyte_phase("pending") == Phase.INITIALIZING
    assert convert_to_flyte_phase("internal_error") == Phase.RETRYABLE_FAILED
    with pytest.raises(ValueError, match="Unrecognized state: weird"):
        convert_to_flyte_phase("weird")
    assert is_terminal_phase(Phase.RETRYABLE_FAILED) and not is_terminal_phase(Phase.RUNNING)


LITERAL_CASES = json.loads((FIXTURES / "flytekit" / "literals.json").read_text())
EXPECTED: dict[str, Any] = {
    "int": 42,
    "float": 3.25,
    "str": "hello",
    "bool": True,
    "datetime": datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
    "timedelta": datetime.timedelta(seconds=3723, microseconds=500000),
    "list_int": [1, 2, 3],
    "dict_str_float": {"a": 1.5, "b": -2.0},
    "dict": {"a": 1, "b": [1, 2], "c": {"d": "e"}},
    "flytefile": File("s3://bucket/key.csv"),
    "optional_int_none": None,
    "optional_int_7": 7,
    "none": None,
    "dict_old_format": {"a": 1.0, "b": [1.0, 2.0], "c": {"d": "e"}},  # a Struct holds doubles
}


@pytest.mark.parametrize("case", LITERAL_CASES, ids=[c["name"] for c in LITERAL_CASES])
def test_literals_made_by_flytekit_read_and_write_back(case: dict[str, Any]) -> None:
    literal = literals_pb2.Literal.FromString(base64.b64decode(case["literal_b64"]))
    literal_type = types_pb2.LiteralType.FromString(base64.b64decode(case["literal_type_b64"]))
    value = to_python(literal, literal_type)
    assert value == EXPECTED[case["name"]]
    written = to_literal(value, literal_type)
    if case["name"].startswith("dict") and case["name"] != "dict_str_float":
        # We write generic dicts as a Struct, which every flytekit version reads.
        assert written.scalar.WhichOneof("value") == "generic"
        assert to_python(written, literal_type) == EXPECTED["dict_old_format"]
    else:
        assert written.SerializeToString(deterministic=True) == literal.SerializeToString(deterministic=True)


def test_flytekit_task_template_interface_types_inputs() -> None:
    template = tasks_pb2.TaskTemplate.FromString((FIXTURES / "flytekit" / "python_task_template.pb").read_bytes())
    by_name = {c["name"]: literals_pb2.Literal.FromString(base64.b64decode(c["literal_b64"])) for c in LITERAL_CASES}
    inputs = literals_pb2.LiteralMap()
    for var, case in {"a": "int", "b": "float", "when": "datetime", "m": "dict_str_float", "d": "dict"}.items():
        inputs.literals[var].CopyFrom(by_name[case])
    values = read_inputs(inputs, template)
    assert values == {
        "a": 42,
        "b": 3.25,
        "when": EXPECTED["datetime"],
        "m": EXPECTED["dict_str_float"],
        "d": EXPECTED["dict"],
    }
    assert set(template.interface.outputs.variables) == {"x", "y"}


@dataclass
class CountMeta(ResourceMeta):
    n: int


class Counter(AsyncConnectorBase):
    name = "Counter"

    def __init__(self) -> None:
        super().__init__(metadata_type=CountMeta, task_type_name="counter")

    def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kwargs: Any) -> CountMeta:
        return CountMeta(n=read_inputs(inputs, task_template)["n"])

    async def get(self, resource_meta: CountMeta, **kwargs: Any) -> Resource:
        return Resource(phase=Phase.SUCCEEDED, outputs={"total": resource_meta.n})

    def delete(self, resource_meta: CountMeta, **kwargs: Any) -> None:
        return None


class Adder(SyncConnectorBase):
    name = "Adder"

    def __init__(self) -> None:
        super().__init__(task_type_name="adder")

    async def do(self, task_template: Any, output_prefix: str, inputs: Any = None, **kwargs: Any) -> Resource:
        values = read_inputs(inputs, task_template)
        return Resource(phase=Phase.SUCCEEDED, outputs={"sum": values["a"] + values["b"]})


async def test_harness_runs_async_and_sync_connectors_without_a_server() -> None:
    harness = ConnectorTestHarness(Counter())
    template = task_template("counter", inputs={"n": int}, outputs={"total": float})
    meta = await harness.create(template, {"n": 3})
    resource = await harness.get(meta)
    assert resource.phase == Phase.SUCCEEDED
    assert harness.outputs(resource) == {"total": 3.0}  # converted with the declared type
    await harness.delete(meta)

    sync = ConnectorTestHarness(Adder())
    template = task_template("adder", inputs={"a": int, "b": int}, outputs={"sum": int})
    assert sync.outputs(await sync.do(template, {"a": 2, "b": 5})) == {"sum": 7}


async def test_harness_runs_a_sensor_through_the_engine(tmp_path: Any) -> None:
    from sensors.file_sensor import FileSensor

    harness = ConnectorTestHarness.for_sensor(FileSensor)
    template = task_template("sensor", custom={"sensor_module": "x", "sensor_name": "FileSensor"}, inputs={"path": str})
    target = tmp_path / "f"
    meta = await harness.create(template, {"path": str(target)})
    assert (await harness.get(meta)).phase == Phase.RUNNING
    target.touch()
    assert (await harness.get(meta)).phase == Phase.SUCCEEDED
