from __future__ import annotations

from pathlib import Path

import pytest

from connector_service import Settings
from connector_service._settings_sources import env_names, unknown_env_vars
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


# -- a malformed config file, and where a bad value came from ------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("host: 127.0.0.1\n  port: 8001\n", 2, "mapping values are not allowed here"),  # bad indentation
        ("log_level: info\nplugins:\n  webhook:\n    allowed_hosts: [a.example\n", 5, "expected ','"),
        ("- port: 8001\n- host: 127.0.0.1\n", 1, "must be a mapping of settings"),  # a list at the top
        ("just a sentence\n", 1, "must be a mapping of settings"),
    ],
)
def test_a_malformed_config_file_is_one_line_naming_file_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError) as err:
        Settings.load(["--config-file", str(config)])
    message = str(err.value)
    assert "\n" not in message and len(message) < 300, message
    assert message.startswith(f"config file {config}:{line}: ") and problem in message, message


def test_errors_name_the_flag_the_variable_or_the_file_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text("log_level: info\ngrace_period: soon\ntls:\n  cert_file: /nonexistent/tls.crt\nprot: 8001\n")
    monkeypatch.setenv("CONNECTOR_PORT", "tcp://10.0.0.1:8000")  # as a Kubernetes service link sets it
    monkeypatch.setenv("CONNECTOR_CONFIG_FILE", str(config))
    with pytest.raises(SettingsError) as err:
        Settings.load(["--metrics-port", "lots", "--thread-pool-size", "0"])
    lines = str(err.value).splitlines()[1:]
    by_setting = {line.split(":")[0].strip(): line for line in lines}
    assert by_setting["port"].endswith("from CONNECTOR_PORT)"), lines
    assert by_setting["metrics-port"].endswith("from --metrics-port)"), lines
    assert by_setting["thread-pool-size"].endswith("from --thread-pool-size)"), lines
    assert by_setting["grace-period"].endswith(f"from {config}:2)"), lines
    assert by_setting["tls"].endswith(f"from {config}:3)"), lines
    assert by_setting["prot"].endswith(f"from {config}:5)") and "Extra inputs" in by_setting["prot"], lines


def test_nested_variables_and_defaults_from_other_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_TLS__CERT_FILE", "/nonexistent/tls.crt")
    monkeypatch.setenv("CONNECTOR_TLS__KEY_FILE", "/nonexistent/tls.key")
    monkeypatch.setenv("WEB_CONCURRENCY", "four")
    with pytest.raises(SettingsError) as err:
        Settings.load([])
    message = str(err.value)
    assert "from CONNECTOR_TLS__CERT_FILE, CONNECTOR_TLS__KEY_FILE)" in message, message
    assert "got 'four' from WEB_CONCURRENCY)" in message, message
    monkeypatch.delenv("CONNECTOR_TLS__CERT_FILE")
    monkeypatch.delenv("CONNECTOR_TLS__KEY_FILE")
    monkeypatch.setenv("CONNECTOR_OPERATION_TIMEOUTS", "{not json")
    with pytest.raises(
        SettingsError, match=r"operation-timeouts: not valid JSON \(from CONNECTOR_OPERATION_TIMEOUTS\)"
    ):
        Settings.load(["--workers", "1"])


# -- CONNECTOR_* variables that set nothing ------------------------------------------------------


def test_a_misspelt_variable_is_named_with_the_closest_setting() -> None:
    environ = {
        "CONNECTOR_PROT": "8001",
        "CONNECTOR_TLS_CERT_FILE": "/tls/tls.crt",  # one underscore where nesting needs two
        "connector_log_levle": "debug",
        "CONNECTOR_XYZZY": "1",
    }
    warnings = unknown_env_vars(Settings, environ)
    assert len(warnings) == 4, warnings
    assert any("CONNECTOR_PROT " in w and w.endswith("did you mean CONNECTOR_PORT?") for w in warnings)
    assert any(
        "CONNECTOR_TLS_CERT_FILE " in w and w.endswith("did you mean CONNECTOR_TLS__CERT_FILE?") for w in warnings
    )
    assert any("connector_log_levle " in w and w.endswith("did you mean CONNECTOR_LOG_LEVEL?") for w in warnings)
    assert any("CONNECTOR_XYZZY " in w and "did you mean" not in w for w in warnings)


def test_every_real_variable_passes_without_a_warning() -> None:
    environ = dict.fromkeys(env_names(Settings), "x")
    environ |= {
        "CONNECTOR_PLUGINS__WEBHOOK__ALLOWED_HOSTS": "a.example",  # free-form: validated by the plugin
        "CONNECTOR_PLUGINS__SQL_SENSOR__CONNECTIONS__WAREHOUSE__URL": "postgresql://db/dw",
        "CONNECTOR_OPERATION_TIMEOUTS__GET": "20",
        "CONNECTOR_SUPERVISOR_PID": "1",  # set by --workers for its processes
        "CONNECTOR_SECRETS_DIR": "/etc/secrets",  # set by the CLI for get_secret()
        "CONNECTOR_CONFIG_FILE": "/etc/connector/config.yaml",
        "OTHER_PROT": "1",
    }
    assert {"CONNECTOR_PORT", "CONNECTOR_TLS__CLIENT_CA_FILE", "CONNECTOR_CONNECTORS"} <= environ.keys()
    assert unknown_env_vars(Settings, environ) == []
