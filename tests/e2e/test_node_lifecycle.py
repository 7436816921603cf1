"""A node's life: its configured default user, and what survives SIGKILL and restart."""

from __future__ import annotations

import signal
from pathlib import Path

import amqp  # the PyPI package kombu speaks through, not our amqp/ folder
import kombu
import pika
import pika.exceptions
import pytest

from .conftest import start_node


def test_configured_default_user_replaces_guest(tmp_path: Path) -> None:
    node = start_node(tmp_path, None, "--default-user", "admin", "--default-pass", "s3cret")
    try:
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.URLParameters(node.url))
        connection = pika.BlockingConnection(
            pika.URLParameters(f"amqp://admin:s3cret@127.0.0.1:{node.port}/")
        )
        assert connection.channel().queue_declare("", exclusive=True).method.queue
        connection.close()
    finally:
        node.stop()


def test_every_confirmed_message_survives_sigkill(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("orders", durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_declare("scratch", exclusive=True)
    for number in range(500):
        channel.basic_publish(
            "",
            "orders",
            f"order-{number}".encode(),
            pika.BasicProperties(delivery_mode=2, message_id=str(number)),
        )
    channel.basic_qos(prefetch_count=3)
    held = []
    channel.basic_consume("orders", lambda ch, method, props, body: held.append(body))
    while len(held) < 3:
        connection.process_data_events(time_limit=1)
    assert held == [b"order-0", b"order-1", b"order-2"]  # delivered, never acked

    node.kill()
    node = start_node(tmp_path, node.port)
    try:
        connection = pika.BlockingConnection(pika.URLParameters(node.url))
        channel = connection.channel()
        assert channel.queue_declare("orders", passive=True).method.message_count == 500
        seen = {}
        for _ in range(500):
            method, properties, body = channel.basic_get("orders", auto_ack=True)
            seen[int(properties.message_id)] = (body, method.redelivered)
        assert sorted(seen) == list(range(500))
        assert all(body == f"order-{number}".encode() for number, (body, _) in seen.items())
        assert [number for number, (_, redelivered) in seen.items() if redelivered] == [0, 1, 2]
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
            channel.queue_declare("scratch", passive=True)  # exclusive: died with its owner
        assert gone.value.reply_code == 404
        connection.close()
    finally:
        node.stop()


def test_shutdown_tells_clients_320_connection_forced(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    node.process.send_signal(signal.SIGTERM)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        connection.process_data_events(time_limit=10)
    assert closed.value.reply_code == 320
    assert closed.value.reply_text == (
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    )
    assert node.process.wait(timeout=10) == 0


def test_kombu_publishes_and_consumes(tmp_path: Path) -> None:
    """kombu imports the PyPI 'amqp' package: our amqp/ folder must not shadow it."""
    assert "site-packages" in amqp.__file__
    node = start_node(tmp_path)
    try:
        with kombu.Connection(node.url) as connection:
            queue = kombu.Queue("kombu-tasks", kombu.Exchange("kombu-x", "direct"), "task")
            producer = connection.Producer(serializer="json")
            producer.publish(
                {"job": 7}, exchange=queue.exchange, routing_key="task", declare=[queue]
            )
            received = []
            with connection.Consumer(
                queue, callbacks=[lambda body, message: (received.append(body), message.ack())]
            ):
                connection.drain_events(timeout=10)
            assert received == [{"job": 7}]
    finally:
        node.stop()
