"""fakesnow's server (a Snowflake emulator on DuckDB) on loopback, for the Snowflake connector's tests.

fakesnow 0.12.1 runs from a venv of its own (``tests/tool_venv.py``), built once per machine.
It speaks Snowflake's REST protocol to the real snowflake-connector-python, accepts any key
(the JWT the client makes from the test's RSA key is not checked), runs every query
synchronously (``execute_async`` returns a finished query) and has no ``SYSTEM$CANCEL_QUERY``.
It keeps queries in memory: a restarted server has no record of earlier ones (NO_DATA).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import tool_venv
from tests.emulator import Emulator, http_ready

PINS = ("fakesnow[server]==0.12.1", "snowflake-connector-python>=4.8,<5")
TOOL = tool_venv.Tool("fakesnow", PINS, "import fakesnow.server, snowflake.connector")


def fakesnow_venv() -> Path:
    return TOOL.require()


def make_emulator(log_dir: Path, port: int | None = None) -> Emulator:
    """A fakesnow server (not started) on a free loopback port."""
    binary = fakesnow_venv() / "bin" / "fakesnow"
    return Emulator(
        "fakesnow",
        [str(binary), "-s", "--host", "127.0.0.1", "-p", "{port}"],
        log_dir=log_dir,
        ready=http_ready("/"),
        port=port,
    )


@pytest.fixture(scope="session")
def fakesnow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One fakesnow server for the session (tests that stop it start their own)."""
    with make_emulator(tmp_path_factory.mktemp("fakesnow")) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def private_key_pem() -> str:
    """A fresh RSA key in PEM (PKCS#8), as an operator stores a Snowflake user's key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()
