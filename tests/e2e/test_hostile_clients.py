"""Hostile publishes against three real nodes: each gets RabbitMQ's answer, and every node still
serves afterwards, and again after all three were SIGKILLed and restarted from their data.

The attacks are the ones that once stopped the cluster or stalled a queue (issue 12): a direct
reply-to routing key whose token is JSON of the wrong shape, and property lists that are
malformed (refused at publish, as RabbitMQ refuses them) or odd but valid (kept byte for byte
and annotated on redelivery).
"""

from __future__ import annotations

import base64
import signal
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pamqp import commands

from warrenmq.cluster.config import Member
from warrenmq.cluster.local import LocalCluster

from .operations import READY_S, pika_connection, running_cluster
from .rawclient import RawClient

REPLY_TO = "amq.rabbitmq.reply-to"
CRAFTED_REPLY_TO_TOKENS = [[[1], 1, 1, 1], [{"a": 1}, 1, 1, 1], ["n", [1], 1, 1], ["n", 1, 1]]
MALFORMED_PROPERTIES = [b"\x80\x00", b"\x20\x00\x00\x00\x00\x10", b"\x00\x40\x00\x00", b""]
# taken by RabbitMQ 3.10.8 and delivered as they came: a content type that is not UTF-8, and
# the unused flag bit 1 (the continuation bit 0 too, but pika cannot read that back)
ODD_PROPERTIES = [b"\x80\x00\x02\xff\xfe", b"\x00\x02"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("hostile"))) as cluster:
        yield cluster


def raw_publish(client: RawClient, routing_key: str, properties: bytes, body: bytes = b"x") -> None:
    """basic.publish (mandatory) with a content header carrying `properties` as given."""
    client.send_frame(
        1, commands.Basic.Publish(exchange="", routing_key=routing_key, mandatory=True)
    )
    payload = struct.pack(">HHQ", 60, 0, len(body)) + properties
    client.send(struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce")
    client.send(struct.pack(">BHI", 3, 1, len(body)) + body + b"\xce")


def confirming_client(member: Member) -> RawClient:
    client = RawClient(member.amqp_port)
    assert isinstance(client.open(), commands.Connection.OpenOk)
    client.open_channel(1)
    client.send_frame(1, commands.Confirm.Select())
    client.expect(commands.Confirm.SelectOk, 1)
    return client


def assert_serves(member: Member) -> None:
    """Declare, a confirmed publish and a get, through this node."""
    connection = pika_connection(member)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = f"serve-{uuid.uuid4().hex[:8]}"
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.basic_publish("", queue, b"served", mandatory=True)
        assert channel.basic_get(queue, auto_ack=True)[2] == b"served"
        channel.queue_delete(queue)
    finally:
        connection.close()


def test_a_crafted_reply_to_is_returned_unroutable_on_every_node(cluster: LocalCluster) -> None:
    """RabbitMQ 3.10.8 answers each of these with basic.return 312 NO_ROUTE, then basic.ack."""
    for member in cluster.members:
        client = confirming_client(member)
        for token in CRAFTED_REPLY_TO_TOKENS:
            address = f"{REPLY_TO}.{base64.urlsafe_b64encode(orjson.dumps(token)).decode()}"
            raw_publish(client, address, b"\x00\x00")
            returned = client.expect(commands.Basic.Return, 1)
            assert (returned.reply_code, returned.reply_text) == (312, "NO_ROUTE")
            client.read_frame()  # the returned message's content header …
            client.read_frame()  # … and its body
            client.expect(commands.Basic.Ack, 1)
        client.close()
    for member in cluster.members:
        assert_serves(member)


@pytest.mark.parametrize("properties", MALFORMED_PROPERTIES)
def test_a_malformed_property_list_closes_the_connection_541(
    cluster: LocalCluster, properties: bytes
) -> None:
    client = confirming_client(cluster.members[0])
    raw_publish(client, "anywhere", properties)
    close = client.expect(commands.Connection.Close, 0)
    assert (close.reply_code, close.reply_text) == (541, "INTERNAL_ERROR")
    assert (close.class_id, close.method_id) == (0, 0)
    client.close()
    assert_serves(cluster.members[0])


def test_odd_but_valid_properties_survive_redelivery_and_dead_lettering(
    cluster: LocalCluster,
) -> None:
    """Before issue 12 these were stored unchecked and made every redelivery raise: the
    consumer stalled with the message recorded as unacked."""
    member = cluster.members[1]
    connection = pika_connection(member)
    channel = connection.channel()
    channel.queue_declare("odd-dlq", durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_declare(
        "odd",
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "odd-dlq",
            "x-delivery-limit": 1,
        },
    )
    client = confirming_client(member)
    for index, properties in enumerate(ODD_PROPERTIES):
        raw_publish(client, "odd", properties, f"odd-{index}".encode())
        client.expect(commands.Basic.Ack, 1)
    client.close()
    seen: list[tuple[bytes, bool, object]] = []
    for _ in range(2 * len(ODD_PROPERTIES)):  # each is delivered, then redelivered
        method, properties, body = next(channel.consume("odd", inactivity_timeout=10))
        assert method is not None, f"the consumer stalled after {seen}"
        seen.append((body, method.redelivered, (properties.headers or {}).get("x-delivery-count")))
        channel.basic_nack(method.delivery_tag, requeue=True)
    channel.cancel()
    assert sorted(seen) == sorted(
        [(f"odd-{i}".encode(), False, None) for i in range(2)]
        + [(f"odd-{i}".encode(), True, 1) for i in range(2)]
    )
    dead = []
    for _ in ODD_PROPERTIES:  # past the delivery limit: dead-lettered with x-death
        method, properties, body = next(channel.consume("odd-dlq", inactivity_timeout=10))
        assert method is not None, f"dead letters stalled after {dead}"
        dead.append(body)
        assert properties.headers["x-death"][0]["reason"] == "delivery_limit"
        channel.basic_ack(method.delivery_tag)
    channel.cancel()
    assert sorted(dead) == [b"odd-0", b"odd-1"]
    connection.close()


def test_every_node_serves_after_all_three_restart(cluster: LocalCluster) -> None:
    """The hostile entries above are in every journal: replaying them must not stop a node."""
    for member in cluster.members:
        cluster.signal(member.node_id, signal.SIGKILL)
    for member in cluster.members:
        cluster.processes[member.node_id].wait(timeout=10)
        cluster.start(member.node_id, log_to_file=True)
    cluster.wait_healthy(timeout_s=READY_S)
    for member in cluster.members:
        assert_serves(member)
