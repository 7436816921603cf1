"""RabbitMQ's deprecated features as Amazon MQ's 4.3 brokers deny them, on a node whose config
says `deprecated_features.permit.transient_nonexcl_queues = false` and `... global_qos = false`
(permitted by default, as in RabbitMQ 4.2: the rest of the suite runs so)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from .conftest import RunningNode, start_node


@pytest.fixture(scope="module")
def denying_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    directory: Path = tmp_path_factory.mktemp("deprecated")
    config = directory / "node.toml"
    config.write_text(
        "deprecated_features.permit.transient_nonexcl_queues = false\n"
        "deprecated_features.permit.global_qos = false\n"
    )
    running = start_node(directory / "node", None, "--config", str(config))
    yield running
    running.stop()


def test_a_transient_non_exclusive_queue_is_refused_with_541(denying_node: RunningNode) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(denying_node.url))
    channel = connection.channel()
    channel.queue_declare("durable-one", durable=True)
    channel.queue_declare("", exclusive=True)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        channel.queue_declare("transient-one", durable=False)
    assert closed.value.reply_code == 541
    assert closed.value.reply_text.startswith(
        "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated."
    )


def test_global_qos_counts_per_consumer(denying_node: RunningNode) -> None:
    """RabbitMQ with global QoS denied takes basic.qos(global) as per-consumer prefetch: two
    consumers on one channel with prefetch 1 each hold a message."""
    connection = pika.BlockingConnection(pika.URLParameters(denying_node.url))
    channel = connection.channel()
    channel.queue_declare("qos-queue", durable=True)
    for body in (b"1", b"2", b"3"):
        channel.basic_publish("", "qos-queue", body)
    channel.basic_qos(prefetch_count=1, global_qos=True)
    received: list[bytes] = []
    for tag in ("a", "b"):
        channel.basic_consume(
            "qos-queue", lambda _c, _m, _p, body: received.append(body), consumer_tag=tag
        )
    deadline = time.monotonic() + 10
    while len(received) < 2 and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
    connection.process_data_events(time_limit=0.3)  # a global prefetch would stop at one
    assert sorted(received) == [b"1", b"2"]
    connection.close()
