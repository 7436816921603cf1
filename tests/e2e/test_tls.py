"""amqps (5671's role) beside plain AMQP, with certificates this test makes: a CA, a server
certificate for 127.0.0.1, and client certificates from that CA and from a stranger's."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pika
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from proton import Delivery, Message, SSLDomain
from proton.utils import BlockingConnection

from warrenmq.cluster.ctl import ApiClient
from warrenmq.cluster.local import free_port

from .conftest import RunningNode, start_node


@dataclass
class Issued:
    certificate: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    directory: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    server: bool = False,
) -> tuple[Issued, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate signed by `issuer`, or a self-signed CA without one."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer[0].subject if issuer else _name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    certificate = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    issued = Issued(directory / f"{name}.pem", directory / f"{name}.key")
    issued.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    issued.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return issued, certificate, key


@dataclass
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    stranger: Issued  # from a CA the node does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_certificate, ca_key = issue(directory, "warren-test-ca")
    server, _, _ = issue(directory, "server", (ca_certificate, ca_key), server=True)
    client, _, _ = issue(directory, "client", (ca_certificate, ca_key))
    _, other_certificate, other_key = issue(directory, "other-ca")
    stranger, _, _ = issue(directory, "stranger", (other_certificate, other_key))
    return Pki(ca, server, client, stranger)


@dataclass
class TlsNode:
    node: RunningNode
    amqps_port: int
    management_port: int


def start_tls_node(directory: Path, pki: Pki, *extra: str) -> TlsNode:
    amqps_port, management_port = free_port(), free_port()
    node = start_node(
        directory,
        None,
        "--amqps-port",
        str(amqps_port),
        "--management-port",
        str(management_port),
        "--tls-certificate",
        str(pki.server.certificate),
        "--tls-key",
        str(pki.server.key),
        "--tls-ca",
        str(pki.ca.certificate),
        *extra,
    )
    return TlsNode(node, amqps_port, management_port)


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsNode]:
    running = start_tls_node(tmp_path_factory.mktemp("tls"), pki, "--management-tls")
    yield running
    running.node.stop()


def client_context(pki: Pki, certificate: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.certificate))
    if certificate is not None:
        context.load_cert_chain(str(certificate.certificate), str(certificate.key))
    return context


def pika_tls(port: int, context: ssl.SSLContext) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            port,
            ssl_options=pika.SSLOptions(context, "localhost"),
            connection_attempts=1,
        )
    )


def test_pika_over_amqps_and_plain_amqp_side_by_side(tls_node: TlsNode, pki: Pki) -> None:
    secure = pika_tls(tls_node.amqps_port, client_context(pki))
    channel = secure.channel()
    channel.confirm_delivery()
    channel.queue_declare("tls.q")
    channel.basic_publish("", "tls.q", b"over TLS")
    plain = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", tls_node.node.port, connection_attempts=1)
    )
    method, _, body = plain.channel().basic_get("tls.q", auto_ack=True)
    assert body == b"over TLS"
    management = ApiClient(
        f"https://localhost:{tls_node.management_port}", cafile=str(pki.ca.certificate)
    )
    connections = {c["port"]: c["ssl"] for c in management.get("/api/connections")}
    assert connections == {tls_node.amqps_port: True, tls_node.node.port: False}
    assert management.request("GET", "/api/health/checks/protocol-listener/amqp%2Fssl")[0] == 200
    plain.close()
    secure.close()


def test_amqp_1_0_over_amqps(tls_node: TlsNode, pki: Pki) -> None:
    """A TLS socket, then SASL and AMQP 1.0 inside it (RabbitMQ has no TLS header, id 2)."""
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(str(pki.ca.certificate))
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    connection = BlockingConnection(
        f"amqps://guest:guest@localhost:{tls_node.amqps_port}", timeout=20, ssl_domain=domain
    )
    plain = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", tls_node.node.port, connection_attempts=1)
    )
    plain.channel().queue_declare("tls.v1")
    sender = connection.create_sender("/queues/tls.v1")
    assert (
        sender.send(Message(body=b"1.0 over TLS", inferred=True)).remote_state == Delivery.ACCEPTED
    )
    method, _, body = plain.channel().basic_get("tls.v1", auto_ack=True)
    assert body == b"1.0 over TLS"
    management = ApiClient(
        f"https://localhost:{tls_node.management_port}", cafile=str(pki.ca.certificate)
    )
    (listed,) = [c for c in management.get("/api/connections") if c["protocol"] == "AMQP 1-0"]
    assert listed["ssl"] is True and listed["ssl_protocol"].startswith("TLS")
    connection.close()
    plain.close()


async def test_aio_pika_over_amqps(tls_node: TlsNode, pki: Pki) -> None:
    connection = await aio_pika.connect(
        f"amqps://guest:guest@localhost:{tls_node.amqps_port}/", ssl_context=client_context(pki)
    )
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("tls.aio", auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"aio over TLS"), "tls.aio")
        message = await queue.get(timeout=5)
        assert message is not None and message.body == b"aio over TLS"
        await message.ack()


def test_client_certificates_are_verified(tmp_path: Path, pki: Pki) -> None:
    running = start_tls_node(tmp_path, pki, "--tls-verify-peer", "--tls-fail-if-no-peer-cert")
    try:
        trusted = pika_tls(running.amqps_port, client_context(pki, pki.client))
        assert trusted.is_open
        management = ApiClient(f"http://127.0.0.1:{running.management_port}")
        (connection,) = management.get("/api/connections")
        assert connection["ssl"] is True and connection["peer_cert_subject"] == "commonName=client"
        assert connection["ssl_protocol"].startswith("TLSv1.")
        trusted.close()
        for certificate in (None, pki.stranger):
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                pika_tls(running.amqps_port, client_context(pki, certificate))
    finally:
        running.node.stop()
