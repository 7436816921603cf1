"""Limits on what a client can make a node hold, hit through real sockets (STYLE.md rule 10)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest
from pamqp import body as content_body
from pamqp import commands, frame, header

from .conftest import RunningNode, start_node
from .rawclient import RawClient

WRITE_BUFFER_HIGH_BYTES = 64 * 1024
TX_BYTES_MAX = 100_000
# 80 MB in all: the consumer's credit (16 MiB), the write buffer and the kernel's socket
# buffers between node and client (up to about 10 MB) hold well under half of it
MESSAGES = 5000
BODY_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    running = start_node(
        tmp_path_factory.mktemp("limits"),
        None,
        "--write-buffer-high-bytes",
        str(WRITE_BUFFER_HIGH_BYTES),
        "--tx-max-bytes",
        str(TX_BYTES_MAX),
    )
    yield running
    running.stop()
    node_log = (running.directory / "node.log").read_text()
    assert running.process.returncode == 0, node_log
    assert "Traceback" not in node_log, node_log


def ready_count(node: RunningNode, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def publish_confirmed(node: RawClient, queue: str, bodies: list[bytes]) -> None:
    """Every publish at once (no waiting on each confirm), then the confirms of all."""
    node.open_channel(1)
    node.send_frame(1, commands.Confirm.Select())
    node.expect(commands.Confirm.SelectOk, 1)
    frames = []
    for body in bodies:
        frames.append(frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1))
        frames.append(
            frame.marshal(header.ContentHeader(0, len(body), commands.Basic.Properties()), 1)
        )
        frames.append(frame.marshal(content_body.ContentBody(body), 1))
    node.send(b"".join(frames))
    confirmed = 0
    while confirmed < len(bodies):
        ack = node.expect(commands.Basic.Ack, 1)
        confirmed = ack.delivery_tag


def body_frames(sock: socket.socket, count: int, timeout_s: float) -> list[bytes]:
    """The payloads of the next `count` body frames on the socket (other frames skipped)."""
    buffer = bytearray()
    offset = 0
    payloads: list[bytes] = []
    deadline_s = time.monotonic() + timeout_s
    while len(payloads) < count and time.monotonic() < deadline_s:
        while len(buffer) - offset >= 7:
            kind, _, size = struct.unpack_from(">BHI", buffer, offset)
            if len(buffer) - offset < 8 + size:
                break
            if kind == 3:
                payloads.append(bytes(buffer[offset + 7 : offset + 7 + size]))
            offset += 8 + size
        del buffer[:offset]
        offset = 0
        if len(payloads) >= count:
            break
        chunk = sock.recv(1 << 20)
        assert chunk, "the node closed the consumer's connection"
        buffer += chunk
    return payloads


def test_a_consumer_that_does_not_read_leaves_its_messages_in_the_queue(node: RunningNode) -> None:
    """An auto-ack consumer whose socket is full: without write-side back-pressure every message
    would move into the node's write buffer (and out of the queue) as fast as it is published."""
    setup = pika.BlockingConnection(pika.URLParameters(node.url))
    setup.channel().queue_declare("backed-up")
    setup.close()
    stalled = RawClient(node.port)
    assert isinstance(stalled.open(), commands.Connection.OpenOk)
    stalled.open_channel(1)
    stalled.send_frame(1, commands.Basic.Consume(queue="backed-up", consumer_tag="c", no_ack=True))
    stalled.expect(commands.Basic.ConsumeOk, 1)
    publisher = RawClient(node.port, timeout_s=60)
    assert isinstance(publisher.open(), commands.Connection.OpenOk)
    bodies = [b"%06d" % number + b"." * (BODY_BYTES - 6) for number in range(MESSAGES)]
    publish_confirmed(publisher, "backed-up", bodies)
    publisher.close()
    waiting = ready_count(node, "backed-up")
    assert waiting >= MESSAGES // 2, f"only {waiting} of {MESSAGES} stayed in the queue"
    # now the consumer reads: everything arrives, once, in order
    received = body_frames(stalled.sock, MESSAGES, timeout_s=60)
    stalled.close()
    assert [int(payload[:6]) for payload in received] == list(range(MESSAGES))
    assert ready_count(node, "backed-up") == 0


def test_a_transaction_holds_at_most_its_byte_limit(node: RunningNode) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    channel = connection.channel()
    channel.queue_declare("tx-bounded")
    channel.tx_select()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        for _ in range(10):  # the fifth goes past 100 000 bytes (20 000 + 256 each)
            channel.basic_publish("", "tx-bounded", b"t" * 20_000)
        channel.tx_commit()
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == (
        "PRECONDITION_FAILED - transaction size 101280 is larger than configured max 100000"
    )
    assert ready_count(node, "tx-bounded") == 0  # nothing of it was committed
    connection.close()
