"""Dead-lettering: the x-death and x-*-death-* headers for each reason, and routing keys."""

from __future__ import annotations

import time

from pamqp import commands

from ..probe import Broker
from ..registry import get, get_eventually, queue_declare, quorum, scenario


def _pair(broker: Broker, name: str, queue_type: dict | None = None, **arguments):
    """A source queue whose dead letters go to the exclusive `name.dlq` by the default exchange."""
    connection = broker.connect()
    queue_declare(connection, f"{name}.dlq", exclusive=True)
    arguments = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": f"{name}.dlq",
        **arguments,
    }
    queue_declare(connection, name, durable=True, arguments={**(queue_type or {}), **arguments})
    return connection


def _cleanup(broker: Broker, name: str) -> None:
    broker.connect().call(1, commands.Queue.Delete(queue=name))


def _rejected(queue_type: dict | None):
    def run(broker: Broker, name: str) -> list[str]:
        connection = _pair(broker, name, queue_type)
        properties = commands.Basic.Properties(expiration="60000", headers={"h": 1})
        connection.publish(1, "", name, b"m", properties=properties)
        connection.sync()
        get(connection, name, no_ack=False)
        connection.send(1, commands.Basic.Reject(delivery_tag=1, requeue=False))
        connection.sync()
        lines = get_eventually(connection, f"{name}.dlq")
        _cleanup(broker, name)
        return lines

    return run


@scenario
def dead_letter_rejected_classic(broker: Broker, name: str) -> list[str]:
    return _rejected(None)(broker, name)


@scenario
def dead_letter_rejected_quorum(broker: Broker, name: str) -> list[str]:
    return _rejected(quorum())(broker, name)


@scenario
def dead_letter_expired(broker: Broker, name: str) -> list[str]:
    connection = _pair(broker, name, None, **{"x-message-ttl": 10})
    connection.publish(1, "amq.direct", "unbound")
    connection.publish(1, "", name, b"m")
    connection.sync()
    time.sleep(0.3)
    lines = get_eventually(connection, f"{name}.dlq")
    _cleanup(broker, name)
    return lines


@scenario
def dead_letter_expired_per_message(broker: Broker, name: str) -> list[str]:
    connection = _pair(broker, name)
    connection.publish(1, "", name, b"m", properties=commands.Basic.Properties(expiration="10"))
    connection.sync()
    time.sleep(0.3)
    get(connection, name)  # expiry at the head happens when the queue looks
    time.sleep(0.1)
    lines = get_eventually(connection, f"{name}.dlq")
    _cleanup(broker, name)
    return lines


@scenario
def dead_letter_maxlen(broker: Broker, name: str) -> list[str]:
    connection = _pair(broker, name, None, **{"x-max-length": 1})
    connection.publish(1, "", name, b"1")
    connection.publish(1, "", name, b"2")
    connection.sync()
    lines = get_eventually(connection, f"{name}.dlq")
    _cleanup(broker, name)
    return lines


@scenario
def dead_letter_keeps_routing_key(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, f"{name}.dlq", exclusive=True)
    connection.call(1, commands.Queue.Bind(queue=f"{name}.dlq", exchange="amq.fanout"))
    queue_declare(
        connection, name, durable=True, arguments={"x-dead-letter-exchange": "amq.fanout"}
    )
    connection.publish(1, "", name, b"m")
    connection.sync()
    get(connection, name, no_ack=False)
    connection.send(1, commands.Basic.Nack(delivery_tag=1, requeue=False))
    connection.sync()
    lines = get_eventually(connection, f"{name}.dlq")
    connection.call(1, commands.Queue.Unbind(queue=f"{name}.dlq", exchange="amq.fanout"))
    _cleanup(broker, name)
    return lines


@scenario
def dead_letter_twice(broker: Broker, name: str) -> list[str]:
    """Rejected from the source, then rejected again from the dead-letter queue back to it."""
    connection = broker.connect()
    queue_declare(
        connection,
        f"{name}.dlq",
        exclusive=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name},
    )
    queue_declare(
        connection,
        name,
        exclusive=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{name}.dlq"},
    )
    connection.publish(1, "", name, b"m")
    connection.sync()
    for tag, queue in ((1, name), (2, f"{name}.dlq"), (3, name)):
        get(connection, queue, no_ack=False)
        connection.send(1, commands.Basic.Reject(delivery_tag=tag, requeue=False))
        connection.sync()
    return get_eventually(connection, f"{name}.dlq")


@scenario
def dead_letter_missing_exchange(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(
        connection, name, exclusive=True, arguments={"x-dead-letter-exchange": f"{name}.none"}
    )
    connection.publish(1, "", name, b"m")
    connection.sync()
    get(connection, name, no_ack=False)
    connection.send(1, commands.Basic.Reject(delivery_tag=1, requeue=False))
    return connection.sync() + get(connection, name)


@scenario
def dead_letter_republished_x_death(broker: Broker, name: str) -> list[str]:
    """A client republishing a dead letter's headers: RabbitMQ 4.x does not merge them."""
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    death = {
        "count": 1,
        "reason": "rejected",
        "queue": "elsewhere",
        "exchange": "",
        "routing-keys": ["elsewhere"],
    }
    headers = {"x-death": [death], "x-first-death-reason": "rejected"}
    connection.publish(1, "", name, b"m", properties=commands.Basic.Properties(headers=headers))
    connection.sync()
    return get(connection, name)
