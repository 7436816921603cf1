"""Queue declare/delete/purge rules, argument checks, exclusivity and auto-delete."""

from __future__ import annotations

from pamqp import commands

from ..probe import CLOSE_CHANNEL, CLOSE_CONNECTION, Broker
from ..registry import (
    bind,
    confirmed,
    consume,
    filled,
    get,
    queue_declare,
    quorum,
    register,
    scenario,
)


@scenario
def queue_declare_server_named(broker: Broker, name: str) -> list[str]:
    return queue_declare(broker.connect(), "", exclusive=True)


@scenario
def queue_declare_counts(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name, b"m", b"m", b"m")
    consume(connection, name, channel=1, no_ack=False)
    connection.expect(3)
    return queue_declare(connection, name, exclusive=True)


@scenario
def queue_declare_passive_missing(broker: Broker, name: str) -> list[str]:
    return queue_declare(broker.connect(), name, passive=True)


@scenario
def queue_declare_passive_counts(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name)
    return queue_declare(connection, name, passive=True)


@scenario
def queue_declare_reserved_prefix(broker: Broker, name: str) -> list[str]:
    return queue_declare(broker.connect(), "amq.c-queue")


@scenario
def queue_declare_passive_reserved_prefix(broker: Broker, name: str) -> list[str]:
    return queue_declare(broker.connect(), "amq.c-queue", passive=True)


REDECLARES = {  # first declare's fields, second declare's fields
    "durable": ({"durable": True}, {"durable": False}),
    "auto_delete": ({"auto_delete": True}, {"auto_delete": False}),
    "exclusive": ({"exclusive": True}, {"exclusive": False}),
    "exclusive_to_exclusive": ({}, {"exclusive": True}),
    "arguments": ({"arguments": {"x-max-length": 1}}, {"arguments": {"x-max-length": 2}}),
    "arguments_added": ({}, {"arguments": {"x-max-length": 2}}),
    "arguments_removed": ({"arguments": {"x-max-length": 1}}, {}),
    "unknown_argument": ({"arguments": {"x-foo": 1}}, {"arguments": {"x-foo": 2}}),
    "queue_type": ({}, {"arguments": {"x-queue-type": "quorum"}}),
    "queue_type_classic": ({}, {"arguments": {"x-queue-type": "classic"}}),
    "ttl_type": ({"arguments": {"x-message-ttl": 1000}}, {"arguments": {"x-message-ttl": "1000"}}),
    "dlx": (
        {"arguments": {"x-dead-letter-exchange": "a"}},
        {"arguments": {"x-dead-letter-exchange": "b"}},
    ),
}


def _redeclare(first: dict, second: dict):
    def run(broker: Broker, name: str) -> list[str]:
        connection = broker.connect()
        lines = queue_declare(connection, name, **first)
        lines += queue_declare(connection, name, **second)
        other = broker.connect()
        other.call(1, commands.Queue.Delete(queue=name))
        return lines

    return run


for _name, (_first, _second) in REDECLARES.items():
    register(f"queue_redeclare_{_name}", _redeclare(_first, _second))

ARGUMENTS = {  # argument checks on declare: one bad value each
    "max_length_string": {"x-max-length": "10"},
    "max_length_negative": {"x-max-length": -1},
    "max_length_bytes_negative": {"x-max-length-bytes": -5},
    "message_ttl_negative": {"x-message-ttl": -1},
    "message_ttl_string": {"x-message-ttl": "soon"},
    "message_ttl_float": {"x-message-ttl": 1.5},
    "expires_zero": {"x-expires": 0},
    "expires_negative": {"x-expires": -1},
    "overflow_unknown": {"x-overflow": "drop-tail"},
    "overflow_int": {"x-overflow": 1},
    "queue_type_unknown": {"x-queue-type": "fifo"},
    "max_priority_over_255": {"x-max-priority": 256},
    "max_priority_negative": {"x-max-priority": -1},
    "max_priority_string": {"x-max-priority": "5"},
    "dlx_int": {"x-dead-letter-exchange": 5},
    "dlrk_without_dlx": {"x-dead-letter-routing-key": "k"},
    "single_active_string": {"x-single-active-consumer": "yes"},
    "queue_mode_unknown": {"x-queue-mode": "fast"},
    "queue_mode_lazy": {"x-queue-mode": "lazy"},
    "max_length_zero": {"x-max-length": 0},
    "unknown_argument": {"x-no-such-argument": 1},
    "delivery_limit_classic": {"x-delivery-limit": 3},
    "consumer_timeout_string": {"x-consumer-timeout": "1"},
}


def _argument(arguments: dict, queue_arguments: dict | None = None):
    def run(broker: Broker, name: str) -> list[str]:
        connection = broker.connect()
        all_arguments = {**(queue_arguments or {}), **arguments}
        lines = queue_declare(connection, name, durable=True, arguments=all_arguments)
        if lines and "DeclareOk" in lines[-1]:
            connection.call(1, commands.Queue.Delete(queue=name))
        return lines

    return run


for _name, _arguments in ARGUMENTS.items():
    register(f"queue_argument_{_name}", _argument(_arguments))

QUORUM_ARGUMENTS = {
    "delivery_limit_string": {"x-delivery-limit": "3"},
    "delivery_limit_negative": {"x-delivery-limit": -2},
    "overflow_reject_publish_dlx": {"x-overflow": "reject-publish-dlx"},
    "dead_letter_strategy_unknown": {"x-dead-letter-strategy": "always"},
    "max_priority": {"x-max-priority": 10},
    "queue_mode_lazy": {"x-queue-mode": "lazy"},
    "max_age": {"x-max-age": "1D"},
    "quorum_initial_group_size": {"x-quorum-initial-group-size": 3},
    "quorum_initial_group_size_zero": {"x-quorum-initial-group-size": 0},
    "leader_locator_unknown": {"x-queue-leader-locator": "random"},
    "leader_locator_balanced": {"x-queue-leader-locator": "balanced"},
    "single_active": {"x-single-active-consumer": True},
}
for _name, _arguments in QUORUM_ARGUMENTS.items():
    register(f"quorum_argument_{_name}", _argument(_arguments, quorum()))


@scenario
def quorum_exclusive(broker: Broker, name: str) -> list[str]:
    return queue_declare(broker.connect(), name, durable=True, exclusive=True, arguments=quorum())


@scenario
def quorum_non_durable(broker: Broker, name: str) -> list[str]:
    return queue_declare(broker.connect(), name, durable=False, arguments=quorum())


@scenario
def quorum_auto_delete(broker: Broker, name: str) -> list[str]:
    return queue_declare(broker.connect(), name, durable=True, auto_delete=True, arguments=quorum())


@scenario
def quorum_server_named(broker: Broker, name: str) -> list[str]:
    return queue_declare(broker.connect(), "", durable=True, arguments=quorum())


OTHER_CONNECTION_ACTIONS = {
    "declare": lambda c, q: queue_declare(c, q),
    "declare_passive": lambda c, q: queue_declare(c, q, passive=True),
    "declare_exclusive": lambda c, q: queue_declare(c, q, exclusive=True),
    "consume": lambda c, q: consume(c, q),
    "get": lambda c, q: get(c, q),
    "bind": lambda c, q: bind(c, q, "amq.direct", "k"),
    "unbind": lambda c, q: c.call(1, commands.Queue.Unbind(queue=q, exchange="amq.direct")),
    "purge": lambda c, q: c.call(1, commands.Queue.Purge(queue=q)),
    "delete": lambda c, q: c.call(1, commands.Queue.Delete(queue=q)),
    "publish": lambda c, q: (c.publish(1, "", q), c.sync())[1],
}


def _exclusive_other(action):
    def run(broker: Broker, name: str) -> list[str]:
        owner = broker.connect()
        queue_declare(owner, name, exclusive=True)
        return action(broker.connect(), name)

    return run


for _name, _action in OTHER_CONNECTION_ACTIONS.items():
    register(f"exclusive_other_connection_{_name}", _exclusive_other(_action))


@scenario
def exclusive_other_channel_same_connection(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.call(2, commands.Channel.Open())
    return queue_declare(connection, name, channel=2, exclusive=True)


@scenario
def exclusive_deleted_with_connection(broker: Broker, name: str) -> list[str]:
    owner = broker.connect()
    queue_declare(owner, name, exclusive=True)
    owner.call(0, CLOSE_CONNECTION)
    return queue_declare(broker.connect(), name, passive=True)


@scenario
def exclusive_survives_channel_close(broker: Broker, name: str) -> list[str]:
    owner = broker.connect()
    queue_declare(owner, name, exclusive=True)
    owner.call(1, CLOSE_CHANNEL)
    owner.call(2, commands.Channel.Open())
    return queue_declare(owner, name, channel=2, passive=True)


@scenario
def auto_delete_after_last_consumer(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, auto_delete=True)
    consume(connection, name, consumer_tag="a")
    consume(connection, name, consumer_tag="b")
    lines = connection.call(1, commands.Basic.Cancel(consumer_tag="a"))
    lines += queue_declare(connection, name, passive=True)
    lines += connection.call(1, commands.Basic.Cancel(consumer_tag="b"))
    return lines + queue_declare(connection, name, passive=True)


@scenario
def auto_delete_never_consumed(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, auto_delete=True)
    lines = queue_declare(connection, name, passive=True)
    connection.call(1, commands.Queue.Delete(queue=name))
    return lines


@scenario
def auto_delete_after_channel_close(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, auto_delete=True)
    consume(connection, name)
    connection.call(1, CLOSE_CHANNEL)
    connection.call(2, commands.Channel.Open())
    return queue_declare(connection, name, channel=2, passive=True)


@scenario
def queue_purge_count(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name, b"m", b"m", b"m", b"m")
    return connection.call(1, commands.Queue.Purge(queue=name))


@scenario
def queue_purge_keeps_unacked(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name, b"m", b"m")
    get(connection, name, no_ack=False)
    lines = connection.call(1, commands.Queue.Purge(queue=name))
    connection.call(1, commands.Basic.Recover(requeue=True))
    return lines + get(connection, name)


@scenario
def queue_purge_missing(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Queue.Purge(queue=name))


@scenario
def queue_delete_missing(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Queue.Delete(queue=name))


@scenario
def queue_delete_count(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name)
    for _ in range(3):
        connection.publish(1, "", name)
    connection.sync()
    return connection.call(1, commands.Queue.Delete(queue=name))


@scenario
def queue_delete_if_empty(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name)
    return connection.call(1, commands.Queue.Delete(queue=name, if_empty=True))


@scenario
def queue_delete_if_unused(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    consume(connection, name)
    return connection.call(1, commands.Queue.Delete(queue=name, if_unused=True))


@scenario
def queue_delete_cancels_consumer(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    consume(connection, name)
    connection.call(2, commands.Channel.Open())
    lines = connection.call(2, commands.Queue.Delete(queue=name)) + connection.drain()
    return sorted(lines)  # two channels: RabbitMQ sends the cancel before or after delete-ok


@scenario
def queue_empty_name_uses_last_declared(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    lines = bind(connection, "", "amq.direct", name)
    connection.publish(1, "amq.direct", name)
    connection.sync()
    lines += get(connection, "")
    lines += connection.call(1, commands.Queue.Purge(queue=""))
    return lines + connection.call(1, commands.Queue.Delete(queue=""))


@scenario
def queue_empty_name_without_declare(broker: Broker, name: str) -> list[str]:
    return bind(broker.connect(), "", "amq.direct", name)


@scenario
def queue_empty_name_get_without_declare(broker: Broker, name: str) -> list[str]:
    return get(broker.connect(), "")


@scenario
def queue_bind_missing_queue(broker: Broker, name: str) -> list[str]:
    return bind(broker.connect(), name, "amq.direct", "k")


@scenario
def queue_bind_missing_exchange(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    return bind(connection, name, f"{name}.none", "k")


@scenario
def queue_bind_default_exchange(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    return bind(connection, name, "", "k")


@scenario
def queue_unbind_default_exchange(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    return connection.call(1, commands.Queue.Unbind(queue=name, exchange="", routing_key=name))


@scenario
def queue_unbind_missing(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    return connection.call(
        1, commands.Queue.Unbind(queue=name, exchange="amq.direct", routing_key="never")
    )


@scenario
def queue_unbind_missing_queue(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(
        1, commands.Queue.Unbind(queue=name, exchange="amq.direct", routing_key="never")
    )


@scenario
def queue_max_length_drop_head(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True, arguments={"x-max-length": 2})
    for body in (b"1", b"2", b"3"):
        connection.publish(1, "", name, body)
    connection.sync()
    return get(connection, name) + get(connection, name) + get(connection, name)


@scenario
def queue_max_length_reject_publish(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
    queue_declare(connection, name, exclusive=True, arguments=arguments)
    connection.call(1, commands.Confirm.Select())
    for body in (b"1", b"2"):
        connection.publish(1, "", name, body)
    return confirmed(connection, 2) + get(connection, name) + get(connection, name)


@scenario
def queue_max_length_bytes(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True, arguments={"x-max-length-bytes": 5})
    for body in (b"123", b"456", b"7"):
        connection.publish(1, "", name, body)
    connection.sync()
    return get(connection, name) + get(connection, name) + get(connection, name)


@scenario
def queue_message_ttl_zero(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True, arguments={"x-message-ttl": 0})
    connection.publish(1, "", name)
    connection.sync()
    return get(connection, name)


@scenario
def queue_expiration_property_invalid(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.publish(1, "", name, properties=commands.Basic.Properties(expiration="soon"))
    return connection.sync()


@scenario
def queue_expiration_property_negative(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.publish(1, "", name, properties=commands.Basic.Properties(expiration="-1"))
    return connection.sync()


@scenario
def queue_expiration_zero(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.publish(1, "", name, properties=commands.Basic.Properties(expiration="0"))
    connection.sync()
    return get(connection, name)


@scenario
def queue_priority_order(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True, arguments={"x-max-priority": 5})
    for priority in (1, 5, 3, 9, 0):
        properties = commands.Basic.Properties(priority=priority)
        connection.publish(1, "", name, str(priority).encode(), properties=properties)
    connection.sync()
    return [line for _ in range(5) for line in get(connection, name)]
