from __future__ import annotations

from pathlib import Path

import pytest

from connector_service import SecretNotFoundError, get_secret


def test_env_var_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_SECRETS_DEFAULT_DIR", str(tmp_path))
    (tmp_path / "api_key").write_text("from-file\n")
    assert get_secret("api_key") == "from-file"
    monkeypatch.setenv("_FSEC_API_KEY", "from-env")
    assert get_secret("api_key") == "from-env"


def test_group_and_service_secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "password").write_text("pw")
    monkeypatch.setenv("CONNECTOR_SECRETS_DIR", str(tmp_path))
    assert get_secret("PASSWORD", group="db") == "pw"


def test_missing_secret_names_where_it_looked_never_a_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_SECRETS_DEFAULT_DIR", str(tmp_path))
    monkeypatch.setenv("_FSEC_OTHER", "s3cr3t-value")
    with pytest.raises(SecretNotFoundError) as err:
        get_secret("token")
    message = str(err.value)
    assert "_FSEC_TOKEN" in message and str(tmp_path / "token") in message
    assert "s3cr3t-value" not in message
