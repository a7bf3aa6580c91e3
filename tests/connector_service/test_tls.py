"""TLS and mutual TLS over the wire, with certificates made by the openssl CLI for this session."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from flyteidl.service import agent_pb2_grpc
from pydantic import ValidationError

from connector_service import ConnectorRegistry, ConnectorService, Settings
from connector_service._literals import literal_map_to_python, python_to_literal_map
from connector_service._tls import TLSConfigError, server_credentials
from connector_service.config import TLSSettings
from connector_service.testing import task_template
from tests.utils import SAMPLES, sync_requests, test_settings

# A minimal config so the system openssl.cnf (and its default extensions) cannot change the certs.
_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


@dataclass(frozen=True)
class Certs:
    ca: Pair
    server: Pair
    client: Pair
    other_ca: Pair
    other_client: Pair


def _openssl(cnf: Path, *args: str | Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], check=True, capture_output=True, timeout=30, env={"OPENSSL_CONF": str(cnf)}
    )


def _make_ca(cnf: Path, out: Path, name: str) -> Pair:
    pair = Pair(out / f"{name}.pem", out / f"{name}.key")
    _openssl(
        cnf, "req", "-config", cnf, "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", pair.key, "-out", pair.cert, "-days", "2", "-subj", f"/CN={name}", "-extensions", "ca",
    )  # fmt: skip
    return pair


def _make_leaf(cnf: Path, out: Path, name: str, cn: str, ca: Pair, extensions: str, serial: int) -> Pair:
    pair = Pair(out / f"{name}.pem", out / f"{name}.key")
    csr = out / f"{name}.csr"
    _openssl(
        cnf, "req", "-config", cnf, "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", pair.key, "-out", csr, "-subj", f"/CN={cn}",
    )  # fmt: skip
    _openssl(
        cnf, "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial", str(serial),
        "-days", "2", "-out", pair.cert, "-extfile", cnf, "-extensions", extensions,
    )  # fmt: skip
    return pair


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    out = tmp_path_factory.mktemp("tls")
    cnf = out / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)
    ca = _make_ca(cnf, out, "test-ca")
    other_ca = _make_ca(cnf, out, "other-ca")
    return Certs(
        ca=ca,
        server=_make_leaf(cnf, out, "server", "localhost", ca, "server", 1),
        client=_make_leaf(cnf, out, "client", "propeller", ca, "client", 2),
        other_ca=other_ca,
        other_client=_make_leaf(cnf, out, "other-client", "propeller", other_ca, "client", 3),
    )


@contextlib.asynccontextmanager
async def serve_tls(certs: Certs, *, mutual: bool = False) -> AsyncIterator[ConnectorService]:
    """The real service with TLS on (client certs required when ``mutual``)."""
    tls: dict[str, Path] = {"cert_file": certs.server.cert, "key_file": certs.server.key}
    if mutual:
        tls["client_ca_file"] = certs.ca.cert
    service = ConnectorService(test_settings(tls=tls), ConnectorRegistry.build((SAMPLES,)))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@contextlib.asynccontextmanager
async def tls_channel(
    service: ConnectorService, trust: Pair | None, client: Pair | None = None
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to ``localhost`` (the name in the server cert); plaintext when ``trust`` is None."""
    target = f"localhost:{service.port}"
    if trust is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=trust.cert_pem,
            private_key=client.key_pem if client else None,
            certificate_chain=client.cert_pem if client else None,
        )
        channel = grpc.aio.secure_channel(target, credentials)
    try:
        yield channel
    finally:
        await channel.close()


async def list_agents(channel: grpc.aio.Channel) -> set[str]:
    stub = agent_pb2_grpc.AgentMetadataServiceStub(channel)
    response = await stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)
    return {agent.name for agent in response.agents}


async def assert_refused(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await list_agents(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


# -- TLS -----------------------------------------------------------------------------------------


async def test_tls_serves_clients_that_trust_the_ca_and_refuses_the_rest(certs: Certs) -> None:
    async with serve_tls(certs) as service:
        async with tls_channel(service, certs.ca) as channel:
            assert "Job Connector" in await list_agents(channel)
        async with tls_channel(service, None) as plaintext:
            await assert_refused(plaintext)
        async with tls_channel(service, certs.other_ca) as untrusting:
            await assert_refused(untrusting)


# -- mutual TLS ----------------------------------------------------------------------------------


async def test_mtls_serves_a_client_with_a_cert_from_the_ca(certs: Certs) -> None:
    async with serve_tls(certs, mutual=True) as service, tls_channel(service, certs.ca, certs.client) as channel:
        assert "Upper Connector" in await list_agents(channel)
        got = await agent_pb2_grpc.AgentMetadataServiceStub(channel).GetAgent(
            agent_pb2.GetAgentRequest(name="Upper Connector"), timeout=5
        )
        assert got.agent.is_sync
        template = task_template("upper", version=2, inputs={"s": str}, outputs={"s": str, "n": float, "ns": str})
        requests = sync_requests(template, python_to_literal_map({"s": "abc"}))
        call = agent_pb2_grpc.SyncAgentServiceStub(channel).ExecuteTaskSync(iter(requests), timeout=5)
        resource = [r async for r in call][0].header.resource
        assert resource.phase == execution_pb2.TaskExecution.SUCCEEDED
        assert literal_map_to_python(resource.outputs)["s"] == "ABC"


async def test_mtls_refuses_clients_without_a_cert_from_the_ca(certs: Certs) -> None:
    async with serve_tls(certs, mutual=True) as service:
        async with tls_channel(service, certs.ca) as no_cert:
            await assert_refused(no_cert)
        async with tls_channel(service, certs.ca, certs.other_client) as other_ca_cert:
            await assert_refused(other_ca_cert)
        async with tls_channel(service, None) as plaintext:
            await assert_refused(plaintext)


# -- settings and credentials --------------------------------------------------------------------


def test_cert_without_key_is_refused(certs: Certs) -> None:
    with pytest.raises(ValidationError, match="tls.cert_file and tls.key_file must be set together"):
        Settings(tls={"cert_file": certs.server.cert})


def test_client_ca_without_cert_is_refused(certs: Certs) -> None:
    with pytest.raises(ValidationError, match="client_ca_file needs"):
        TLSSettings(client_ca_file=certs.ca.cert)


def test_missing_file_is_refused_naming_the_setting(certs: Certs, tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(ValidationError, match=r"tls\.key_file: .*nope\.key is not a readable file"):
        TLSSettings(cert_file=certs.server.cert, key_file=missing)


def test_server_credentials_for_valid_files(certs: Certs) -> None:
    tls = TLSSettings(cert_file=certs.server.cert, key_file=certs.server.key, client_ca_file=certs.ca.cert)
    assert isinstance(server_credentials(tls), grpc.ServerCredentials)


def test_non_pem_cert_names_the_file_without_its_contents(certs: Certs, tmp_path: Path) -> None:
    bogus = tmp_path / "server.der"
    bogus.write_bytes(b"not-a-certificate-s3cr3t-material\n")
    with pytest.raises(TLSConfigError) as err:
        server_credentials(TLSSettings(cert_file=bogus, key_file=certs.server.key))
    message = str(err.value)
    assert "tls.cert_file" in message and str(bogus) in message and "not a PEM certificate" in message
    assert "s3cr3t" not in message


def test_cert_given_as_key_is_refused_without_echoing_either(certs: Certs) -> None:
    with pytest.raises(TLSConfigError) as err:
        server_credentials(TLSSettings(cert_file=certs.server.cert, key_file=certs.server.cert))
    message = str(err.value)
    assert "tls.key_file" in message and str(certs.server.cert) in message and "private key" in message
    assert "BEGIN CERTIFICATE-----" not in message and "MII" not in message


def test_non_pem_client_ca_is_refused(certs: Certs, tmp_path: Path) -> None:
    bogus = tmp_path / "ca.txt"
    bogus.write_text("hello")
    with pytest.raises(TLSConfigError, match=r"tls\.client_ca_file: .*ca\.txt is not a PEM CA"):
        server_credentials(TLSSettings(cert_file=certs.server.cert, key_file=certs.server.key, client_ca_file=bogus))


def test_empty_and_vanished_files_are_refused(certs: Certs, tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(b"")
    tls = TLSSettings(cert_file=certs.server.cert, key_file=key)
    with pytest.raises(TLSConfigError, match=r"tls\.key_file: .*server\.key is empty"):
        server_credentials(tls)
    key.unlink()  # e.g. a Secret rotated away between validation and start-up
    with pytest.raises(TLSConfigError, match=r"tls\.key_file: cannot read .*server\.key"):
        server_credentials(tls)


def test_tls_not_enabled_is_refused() -> None:
    with pytest.raises(TLSConfigError, match="must be set"):
        server_credentials(TLSSettings())
