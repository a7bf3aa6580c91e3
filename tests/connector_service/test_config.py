from __future__ import annotations

import pytest

from connector_service import Settings
from connector_service.config import SettingsError


def test_defaults_match_flytekit_and_propeller() -> None:
    settings = Settings.load([])
    assert (settings.host, settings.port, settings.metrics_port) == ("0.0.0.0", 8000, 9090)
    assert settings.max_message_size == 4 * 1024 * 1024
    assert settings.connectors == []


def test_cli_beats_env_beats_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_PORT", "9001")
    monkeypatch.setenv("CONNECTOR_LOG_LEVEL", "DEBUG")
    settings = Settings.load(["--port", "9002", "--connector", "a:b", "--connector", "c:d"])
    assert settings.port == 9002
    assert settings.log_level == "debug"
    assert settings.connectors == ["a:b", "c:d"]


def test_connectors_from_env_as_json_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_CONNECTORS", '["m:a", "m:b"]')
    assert Settings.load([]).connectors == ["m:a", "m:b"]
    monkeypatch.setenv("CONNECTOR_CONNECTORS", "m:a, m:b")
    assert Settings.load([]).connectors == ["m:a", "m:b"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--port", "abc"], "port"),
        (["--port", "70000"], "port"),
        (["--thread-pool-size", "0"], "thread-pool-size"),
        (["--log-level", "loud"], "log-level"),
    ],
)
def test_bad_values_fail_with_the_setting_named(args: list[str], field: str) -> None:
    with pytest.raises(SettingsError, match=field):
        Settings.load(args)


def test_signing_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.load(["--resource-meta-key", "topsecret"])
    assert settings.signing_key == b"topsecret"
    assert "topsecret" not in repr(settings)


def test_readme_settings_table_lists_every_setting() -> None:
    from pathlib import Path

    from pydantic import BaseModel

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        nested = field.annotation if isinstance(field.annotation, type) else None
        if nested is not None and issubclass(nested, BaseModel):
            for sub in nested.model_fields:
                assert f"`CONNECTOR_{name.upper()}__{sub.upper()}`" in readme, f"{name}.{sub}"
        else:
            assert f"`CONNECTOR_{name.upper()}`" in readme, name
