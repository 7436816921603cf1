"""Quorum queues: delivery counts and limits, single active consumer, what they refuse."""

from __future__ import annotations

import time

from pamqp import commands

from ..probe import CLOSE_CHANNEL, Broker
from ..registry import confirmed, consume, get, get_eventually, queue_declare, quorum, scenario


def _quorum_queue(broker: Broker, name: str, **arguments):
    connection = broker.connect()
    queue_declare(connection, name, durable=True, arguments=quorum(**arguments))
    return connection


def _cleanup(broker: Broker, name: str) -> None:
    broker.connect().call(1, commands.Queue.Delete(queue=name))


@scenario
def quorum_declare(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    lines = queue_declare(connection, name, durable=True, arguments=quorum())
    _cleanup(broker, name)
    return lines


@scenario
def quorum_redelivery_counts(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name)
    connection.publish(1, "", name, b"m")
    connection.sync()
    lines = []
    for tag in (1, 2, 3):
        lines += get(connection, name, no_ack=False)
        connection.send(1, commands.Basic.Nack(delivery_tag=tag, requeue=True))
        connection.sync()
    _cleanup(broker, name)
    return lines


@scenario
def quorum_delivery_limit_drops(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name, **{"x-delivery-limit": 1})
    connection.publish(1, "", name, b"m")
    connection.sync()
    lines = []
    for tag in (1, 2):
        lines += get(connection, name, no_ack=False)
        connection.send(1, commands.Basic.Reject(delivery_tag=tag, requeue=True))
        connection.sync()
    lines += get(connection, name)
    _cleanup(broker, name)
    return lines


@scenario
def quorum_delivery_limit_dead_letters(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, f"{name}.dlq", exclusive=True)
    arguments = {
        "x-delivery-limit": 0,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": f"{name}.dlq",
    }
    queue_declare(connection, name, durable=True, arguments=quorum(**arguments))
    connection.publish(1, "", name, b"m")
    connection.sync()
    lines = get(connection, name, no_ack=False)
    connection.send(1, commands.Basic.Nack(delivery_tag=1, requeue=True))
    connection.sync()
    lines += get_eventually(connection, f"{name}.dlq")
    _cleanup(broker, name)
    return lines


@scenario
def quorum_consume_redelivered_after_cancel(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name)
    connection.publish(1, "", name, b"m")
    connection.sync()
    lines = consume(connection, name) + connection.expect(1)
    lines += connection.call(1, CLOSE_CHANNEL)
    connection.call(2, commands.Channel.Open())
    lines += get(connection, name, channel=2)
    _cleanup(broker, name)
    return lines


@scenario
def quorum_single_active_consumer(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name, **{"x-single-active-consumer": True})
    connection.call(2, commands.Channel.Open())
    consume(connection, name, consumer_tag="first")
    consume(connection, name, channel=2, consumer_tag="second")
    connection.publish(1, "", name, b"1")
    lines = connection.expect(1)
    connection.call(1, commands.Basic.Cancel(consumer_tag="first"))
    connection.publish(1, "", name, b"2")
    lines += connection.expect(1)
    _cleanup(broker, name)
    return lines


@scenario
def quorum_global_qos_consume(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name)
    connection.call(1, commands.Basic.Qos(prefetch_count=5, global_=True))
    lines = consume(connection, name)
    _cleanup(broker, name)
    return lines


@scenario
def quorum_consume_without_prefetch(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name)
    lines = consume(connection, name)
    _cleanup(broker, name)
    return lines


@scenario
def quorum_purge(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name)
    for _ in range(3):
        connection.publish(1, "", name)
    connection.sync()
    lines = connection.call(1, commands.Queue.Purge(queue=name))
    _cleanup(broker, name)
    return lines


@scenario
def quorum_reject_publish(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    connection.call(1, commands.Confirm.Select())
    connection.publish(1, "", name, b"1")
    connection.publish(1, "", name, b"2")
    lines = confirmed(connection, 2)
    _cleanup(broker, name)
    return lines


@scenario
def quorum_priority_high_first(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name)
    for priority in (0, 9, 2, 6):
        properties = commands.Basic.Properties(priority=priority)
        connection.publish(1, "", name, str(priority).encode(), properties=properties)
    connection.sync()
    lines = [line for _ in range(4) for line in get(connection, name)]
    _cleanup(broker, name)
    return lines


@scenario
def quorum_redeclare_as_classic(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name)
    lines = queue_declare(connection, name, durable=True)
    _cleanup(broker, name)
    return lines


@scenario
def quorum_redeclare_without_type_passive(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name)
    lines = queue_declare(connection, name, passive=True)
    _cleanup(broker, name)
    return lines


@scenario
def quorum_delete_if_unused(broker: Broker, name: str) -> list[str]:
    connection = _quorum_queue(broker, name)
    consume(connection, name)
    lines = connection.call(1, commands.Queue.Delete(queue=name, if_unused=True))
    _cleanup(broker, name)
    return lines


@scenario
def quorum_message_ttl(broker: Broker, name: str) -> list[str]:
    """Expired by the clock: a TTL of 0 in a quorum queue is a race in RabbitMQ itself."""
    connection = _quorum_queue(broker, name, **{"x-message-ttl": 50})
    connection.publish(1, "", name)
    connection.sync()
    time.sleep(0.5)
    lines = get(connection, name)
    _cleanup(broker, name)
    return lines
