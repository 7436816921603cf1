"""Exchange declare/delete rules, bindings, and each exchange type's matching edge cases."""

from __future__ import annotations

from pamqp import commands

from ..probe import Broker, Connection
from ..registry import (
    bind,
    confirm,
    confirmed,
    exchange_declare,
    get,
    queue_declare,
    register,
    scenario,
)


def routed(connection: Connection, exchange: str, routing_key: str, queue: str, **publish) -> str:
    """'routed' or 'unroutable' for one mandatory publish, and whether `queue` got it."""
    connection.publish(1, exchange, routing_key, b"probe", mandatory=True, **publish)
    returned = any("Basic.Return" in line for line in connection.sync())
    got = get(connection, queue)
    delivered = any("Basic.GetOk" in line for line in got)
    return ("returned" if returned else "routed") + (" delivered" if delivered else " empty")


def _routing_scenario(exchange_type: str, binding_key: str, routing_key: str, arguments=None):
    def run(broker: Broker, name: str) -> list[str]:
        connection = broker.connect()
        exchange_declare(connection, name, exchange_type, auto_delete=True)
        queue_declare(connection, name, exclusive=True)
        lines = bind(connection, name, name, binding_key, arguments=arguments or {})
        if lines != ["ch1 Queue.BindOk()"]:
            return lines
        headers = {"headers": routing_key} if exchange_type == "headers" else {}
        key = "" if exchange_type == "headers" else routing_key
        properties = commands.Basic.Properties(**headers) if headers else None
        outcome = routed(connection, name, key, name, properties=properties)
        return [f"{binding_key!r} {arguments or ''} ~ {routing_key!r}: {outcome}"]

    return run


TOPIC_CASES = [
    ("#", ""),
    ("#", "a"),
    ("#", "a.b"),
    ("#", "."),
    ("*", ""),
    ("*", "a"),
    ("*", "a.b"),
    ("*", "."),
    ("*.#", ""),
    ("*.#", "a"),
    ("*.#", "a.b"),
    ("#.*", ""),
    ("#.*", "a"),
    ("a.#", "a"),
    ("a.#", "a.b.c"),
    ("a.#", "ab"),
    ("a.*", "a"),
    ("a.*", "a."),
    ("a.*", "a.b"),
    ("a.*.c", "a..c"),
    ("*.*", "a."),
    ("*.*", "."),
    ("#.#", ""),
    ("#.#", "a.b"),
    ("a.#.b", "a.b"),
    ("a.#.b", "a.x.y.b"),
    ("a.#.#.b", "a.b"),
    ("", ""),
    ("", "."),
    (".", "."),
    ("a..b", "a..b"),
    ("a.*.*", "a.b"),
    ("#.a", "a"),
    ("#.a", "b.a"),
    ("#.a.#", "a"),
    ("*.a.*", "x.a.y"),
    ("a", "A"),
    ("a*", "ab"),
    ("a#", "a#"),
    ("a.b", "a.b."),
    ("*.b.#", "a.b"),
    ("#.b.*", "b"),
    ("a.#.*.c", "a.c"),
    ("a.#.*.c", "a.b.c"),
]
for _index, (_binding, _key) in enumerate(TOPIC_CASES):
    register(f"topic_{_index:02d}", _routing_scenario("topic", _binding, _key))

DIRECT_CASES = [("", ""), ("a", "a"), ("a", "A"), ("a", "a "), ("a.b", "a.b"), ("*", "a")]
for _index, (_binding, _key) in enumerate(DIRECT_CASES):
    register(f"direct_{_index}", _routing_scenario("direct", _binding, _key))

register("fanout_ignores_key", _routing_scenario("fanout", "a", "b"))

HEADERS_CASES = [  # (binding arguments, message headers)
    ({"x-match": "all", "a": 1}, {"a": 1}),
    ({"x-match": "all", "a": 1}, {"a": "1"}),
    ({"x-match": "all", "a": 1}, {"a": 2}),
    ({"x-match": "all", "a": 1, "b": 2}, {"a": 1}),
    ({"x-match": "all", "a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}),
    ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}),
    ({"x-match": "any", "a": 1, "b": 2}, {"c": 2}),
    ({"a": 1}, {"a": 1}),
    ({"a": 1, "b": 2}, {"a": 1}),
    ({"x-match": "all"}, {"z": 1}),
    ({"x-match": "all"}, None),
    ({"x-match": "any"}, {"z": 1}),
    ({"x-match": "all", "x-k": 1}, {"x-k": 1}),
    ({"x-match": "all", "x-k": 1}, {}),
    ({"x-match": "all-with-x", "x-k": 1}, {"x-k": 1}),
    ({"x-match": "all-with-x", "x-k": 1}, {}),
    ({"x-match": "any-with-x", "x-k": 1}, {"x-k": 1}),
    ({"x-match": "any", "x-k": 1}, {"x-k": 1}),
    ({"x-match": "all", "a": True}, {"a": 1}),
    ({"x-match": "all", "a": 1}, {"a": 1.0}),
    ({"x-match": "all", "a": "s"}, {"a": "s"}),
    ({"x-match": "all", "a": {"n": 1}}, {"a": {"n": 1}}),
    ({"x-match": "all", "a": [1, 2]}, {"a": [1, 2]}),
    ({"x-match": "all", "a": [1, 2]}, {"a": [2, 1]}),
    ({"x-match": "foo", "a": 1}, {"a": 1}),
    ({"x-match": 1, "a": 1}, {"a": 1}),
    ({"x-match": "ALL", "a": 1}, {"a": 1}),
    ({"x-match": "any"}, None),
]
for _index, (_arguments, _headers) in enumerate(HEADERS_CASES):
    register(f"headers_{_index:02d}", _routing_scenario("headers", "", _headers, _arguments))


@scenario
def exchange_declare_each_type(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    lines = []
    for kind in ("direct", "fanout", "topic", "headers"):
        lines += exchange_declare(connection, f"{name}.{kind}", kind, auto_delete=True)
    return lines


@scenario
def exchange_declare_unknown_type(broker: Broker, name: str) -> list[str]:
    return exchange_declare(broker.connect(), name, "no-such-type")


@scenario
def exchange_redeclare_other_type(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True)
    return exchange_declare(connection, name, "topic", auto_delete=True)


@scenario
def exchange_redeclare_other_durable(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True)
    return exchange_declare(connection, name, "direct", auto_delete=True, durable=True)


@scenario
def exchange_redeclare_other_auto_delete(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True)
    lines = exchange_declare(connection, name, "direct")
    connection.call(1, commands.Exchange.Delete(exchange=name))
    return lines


@scenario
def exchange_redeclare_other_internal(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True)
    return exchange_declare(connection, name, "direct", auto_delete=True, internal=True)


@scenario
def exchange_redeclare_other_arguments(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True, arguments={"x-a": 1})
    return exchange_declare(connection, name, "direct", auto_delete=True, arguments={"x-a": 2})


@scenario
def exchange_redeclare_other_alternate(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    arguments = {"alternate-exchange": "a"}
    exchange_declare(connection, name, "direct", auto_delete=True, arguments=arguments)
    other = {"alternate-exchange": "b"}
    return exchange_declare(connection, name, "direct", auto_delete=True, arguments=other)


@scenario
def exchange_declare_reserved_prefix(broker: Broker, name: str) -> list[str]:
    return exchange_declare(broker.connect(), "amq.c-reserved", "direct")


@scenario
def exchange_declare_amq_direct_again(broker: Broker, name: str) -> list[str]:
    return exchange_declare(broker.connect(), "amq.direct", "direct", durable=True)


@scenario
def exchange_declare_default(broker: Broker, name: str) -> list[str]:
    return exchange_declare(broker.connect(), "", "direct", durable=True)


@scenario
def exchange_passive_default(broker: Broker, name: str) -> list[str]:
    return exchange_declare(broker.connect(), "", "direct", passive=True)


@scenario
def exchange_passive_missing(broker: Broker, name: str) -> list[str]:
    return exchange_declare(broker.connect(), name, "direct", passive=True)


@scenario
def exchange_passive_other_type(broker: Broker, name: str) -> list[str]:
    return exchange_declare(broker.connect(), "amq.topic", "direct", passive=True)


@scenario
def exchange_delete_missing(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Exchange.Delete(exchange=name))


@scenario
def exchange_delete_amq_direct(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Exchange.Delete(exchange="amq.direct"))


@scenario
def exchange_delete_default(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Exchange.Delete(exchange=""))


@scenario
def exchange_delete_if_unused(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True)
    queue_declare(connection, name, exclusive=True)
    bind(connection, name, name, "k")
    return connection.call(1, commands.Exchange.Delete(exchange=name, if_unused=True))


@scenario
def exchange_delete_if_unused_unbound(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct")
    return connection.call(1, commands.Exchange.Delete(exchange=name, if_unused=True))


@scenario
def exchange_auto_delete_after_last_unbind(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True)
    queue_declare(connection, name, exclusive=True)
    bind(connection, name, name, "k")
    connection.call(1, commands.Queue.Unbind(queue=name, exchange=name, routing_key="k"))
    return exchange_declare(connection, name, "direct", passive=True)


@scenario
def exchange_auto_delete_never_bound(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True)
    return exchange_declare(connection, name, "direct", passive=True)


@scenario
def exchange_internal_publish(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "fanout", auto_delete=True, internal=True)
    connection.publish(1, name, "k")
    return connection.sync()


@scenario
def exchange_publish_missing(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.publish(1, name, "k")
    return connection.sync()


@scenario
def exchange_publish_missing_then_next_channel(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.publish(1, name, "k")
    lines = connection.sync()
    return lines + connection.call(2, commands.Channel.Open())


@scenario
def exchange_to_exchange(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, f"{name}.src", "topic", auto_delete=True)
    exchange_declare(connection, f"{name}.dst", "direct", auto_delete=True)
    queue_declare(connection, name, exclusive=True)
    bind(connection, name, f"{name}.dst", "a.b")
    lines = connection.call(
        1,
        commands.Exchange.Bind(destination=f"{name}.dst", source=f"{name}.src", routing_key="a.*"),
    )
    return lines + [routed(connection, f"{name}.src", "a.b", name)]


@scenario
def exchange_bind_missing_source(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True)
    return connection.call(
        1, commands.Exchange.Bind(destination=name, source=f"{name}.none", routing_key="k")
    )


@scenario
def exchange_bind_missing_destination(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, name, "direct", auto_delete=True)
    return connection.call(
        1, commands.Exchange.Bind(destination=f"{name}.none", source=name, routing_key="k")
    )


@scenario
def exchange_unbind_missing_binding(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, f"{name}.a", "direct", auto_delete=True)
    exchange_declare(connection, f"{name}.b", "direct", auto_delete=True)
    return connection.call(
        1, commands.Exchange.Unbind(destination=f"{name}.a", source=f"{name}.b", routing_key="k")
    )


@scenario
def exchange_alternate(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    exchange_declare(connection, f"{name}.ae", "fanout", auto_delete=True)
    queue_declare(connection, name, exclusive=True)
    bind(connection, name, f"{name}.ae")
    arguments = {"alternate-exchange": f"{name}.ae"}
    exchange_declare(connection, name, "direct", auto_delete=True, arguments=arguments)
    bind(connection, name, name, "bound")  # keeps the auto-delete exchange alive
    return [routed(connection, name, "unbound", name)]


@scenario
def exchange_alternate_missing(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    arguments = {"alternate-exchange": f"{name}.none"}
    exchange_declare(connection, name, "direct", arguments=arguments)
    queue_declare(connection, name, exclusive=True)
    lines = [routed(connection, name, "unbound", name)]
    connection.call(1, commands.Exchange.Delete(exchange=name))
    return lines


@scenario
def exchange_bind_twice(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    lines = bind(connection, name, "amq.direct", name) + bind(connection, name, "amq.direct", name)
    connection.publish(1, "amq.direct", name)
    connection.sync()
    return lines + get(connection, name) + get(connection, name)


@scenario
def exchange_fanout_two_queues(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    for suffix in ("a", "b"):
        queue_declare(connection, f"{name}.{suffix}", exclusive=True)
        bind(connection, f"{name}.{suffix}", "amq.fanout")
    connection.publish(1, "amq.fanout", "any")
    connection.sync()
    lines = get(connection, f"{name}.a") + get(connection, f"{name}.b")
    for suffix in ("a", "b"):
        connection.call(1, commands.Queue.Unbind(queue=f"{name}.{suffix}", exchange="amq.fanout"))
    return lines


@scenario
def exchange_confirm_routed_to_nothing(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    confirm(connection)
    connection.publish(1, "amq.direct", name)
    return confirmed(connection, 1)
