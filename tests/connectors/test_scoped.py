"""Per-team settings tables and the idempotency token, as connectors use them."""

from __future__ import annotations

import pytest
from flyteidl.admin import agent_pb2
from pydantic import BaseModel, ValidationError

from connector_service import PreconditionError
from connectors._scoped import Scope, Scoped, choose, execution_token, lookup, scope_of
from tests.utils import task_execution_metadata as _metadata


class _Instance(BaseModel):
    host: str


class _Settings(BaseModel):
    instances: Scoped[_Instance] = {}


def test_the_most_specific_entry_wins_and_its_key_is_returned() -> None:
    table = _Settings.model_validate(
        {"instances": {"default": {"host": "d"}, "ml": {"host": "p"}, "ml/prod": {"host": "pd"}}}
    ).instances
    assert choose(table, Scope("ml", "prod"), "s") == ("ml/prod", _Instance(host="pd"))
    assert choose(table, Scope("ml", "dev"), "s") == ("ml", _Instance(host="p"))
    assert choose(table, Scope("other", "prod"), "s") == ("default", _Instance(host="d"))
    assert choose(table, scope_of(_metadata()), "s")[0] == "ml/prod"
    assert choose(table, scope_of(None), "s")[0] == "default"


def test_no_entry_for_a_team_is_failed_precondition_naming_the_setting() -> None:
    table = {"ml/prod": _Instance(host="x")}
    with pytest.raises(PreconditionError, match=r"plugins\.x\.instances has no entry for project/domain fin/prod"):
        choose(table, Scope("fin", "prod"), "plugins.x.instances")
    with pytest.raises(PreconditionError, match="no longer configured"):
        lookup(table, "gone", "plugins.x.instances")
    assert lookup(table, "ml/prod", "s").host == "x"


@pytest.mark.parametrize("key", ["a/b/c", "", "a b", "ml/"])
def test_keys_that_could_never_match_are_refused_at_start_up(key: str) -> None:
    with pytest.raises(ValidationError, match="is not 'default'"):
        _Settings.model_validate({"instances": {key: {"host": "x"}}})


def test_the_token_is_stable_per_attempt_and_differs_between_attempts() -> None:
    first = execution_token(_metadata())
    assert first is not None and first == execution_token(_metadata())
    assert first.startswith("flyte-") and len(first) == 64
    assert execution_token(_metadata(retry=1)) != first
    assert execution_token(_metadata(node="n1")) != first
    assert execution_token(None) is None
    assert execution_token(agent_pb2.TaskExecutionMetadata()) is None
    assert len(execution_token(_metadata(), prefix="x", length=36) or "") == 36
