"""Policies and operator policies: what they set on matching queues and exchanges, and how
they combine with queue arguments (RabbitMQ docs: Policies, 'Effective value' rules)."""

from __future__ import annotations

import time

from pamqp import commands

from ..probe import Broker, quote
from ..registry import get, get_eventually, queue_declare, quorum, scenario

# RabbitMQ's management API shows a queue's policy with its statistics, emitted every 5 s
STATS_WAIT_S = 8.0


def _policy(broker: Broker, name: str, definition: dict, kind: str = "policies", **fields):
    document = {"pattern": f"^{name.replace('.', '[.]')}", "definition": definition, **fields}
    status, _ = broker.api("PUT", f"/api/{kind}/%2F/{quote(name)}", document)
    return status


def _drop(broker: Broker, name: str, kind: str = "policies") -> None:
    broker.api("DELETE", f"/api/{kind}/%2F/{quote(name)}")
    broker.connect().call(1, commands.Queue.Delete(queue=name))


def _effective(broker: Broker, queue: str, applies: bool = True) -> str:
    """What the management API says applies to the queue (policy names and definitions),
    once a policy applies (or, applies=False, none does): RabbitMQ applies policies to
    existing queues asynchronously."""
    deadline = time.monotonic() + STATS_WAIT_S
    while True:
        status, document = broker.api("GET", f"/api/queues/%2F/{quote(queue)}")
        if status != 200 or not isinstance(document, dict):
            return f"status {status}"
        named = document.get("policy") or document.get("operator_policy")
        if bool(named) == applies or time.monotonic() > deadline:
            definition = document.get("effective_policy_definition") or {}
            return (
                f"policy={document.get('policy')!r} "
                f"operator_policy={document.get('operator_policy')!r} definition={definition!r}"
            )
        time.sleep(0.05)


@scenario
def policy_put_answer(broker: Broker, name: str) -> list[str]:
    status = _policy(broker, name, {"max-length": 1}, **{"apply-to": "queues"})
    _drop(broker, name)
    return [f"status {status}"]


@scenario
def policy_put_invalid_pattern(broker: Broker, name: str) -> list[str]:
    document = {"pattern": "(", "definition": {"max-length": 1}}
    status, _ = broker.api("PUT", f"/api/policies/%2F/{quote(name)}", document)
    _drop(broker, name)
    return [f"status {status}"]


@scenario
def policy_put_unknown_key(broker: Broker, name: str) -> list[str]:
    status = _policy(broker, name, {"no-such-key": 1})
    _drop(broker, name)
    return [f"status {status}"]


@scenario
def policy_put_bad_value(broker: Broker, name: str) -> list[str]:
    status = _policy(broker, name, {"max-length": "ten"})
    _drop(broker, name)
    return [f"status {status}"]


@scenario
def policy_put_bad_apply_to(broker: Broker, name: str) -> list[str]:
    status = _policy(broker, name, {"max-length": 1}, **{"apply-to": "streams-only"})
    _drop(broker, name)
    return [f"status {status}"]


@scenario
def policy_max_length_applies(broker: Broker, name: str) -> list[str]:
    _policy(broker, name, {"max-length": 1}, **{"apply-to": "queues"})
    connection = broker.connect()
    queue_declare(connection, name, durable=True)
    for body in (b"1", b"2", b"3"):
        connection.publish(1, "", name, body)
    connection.sync()
    lines = [_effective(broker, name)] + get(connection, name) + get(connection, name)
    _drop(broker, name)
    return lines


@scenario
def policy_applies_to_existing_queue(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, durable=True)
    _policy(broker, name, {"max-length": 1})
    lines = [_effective(broker, name)]
    for body in (b"1", b"2"):
        connection.publish(1, "", name, body)
    connection.sync()
    lines += get(connection, name) + get(connection, name)
    _drop(broker, name)
    return lines


@scenario
def policy_argument_wins(broker: Broker, name: str) -> list[str]:
    _policy(broker, name, {"max-length": 1})
    connection = broker.connect()
    queue_declare(connection, name, durable=True, arguments={"x-max-length": 2})
    for body in (b"1", b"2", b"3"):
        connection.publish(1, "", name, body)
    connection.sync()
    lines = [line for _ in range(3) for line in get(connection, name)]
    _drop(broker, name)
    return lines


@scenario
def operator_policy_caps_argument(broker: Broker, name: str) -> list[str]:
    _policy(broker, name, {"max-length": 1}, kind="operator-policies")
    connection = broker.connect()
    queue_declare(connection, name, durable=True, arguments={"x-max-length": 5})
    for body in (b"1", b"2", b"3"):
        connection.publish(1, "", name, body)
    connection.sync()
    lines = [_effective(broker, name)]
    lines += [line for _ in range(2) for line in get(connection, name)]
    _drop(broker, name, kind="operator-policies")
    return lines


@scenario
def policy_priority_highest_wins(broker: Broker, name: str) -> list[str]:
    _policy(broker, f"{name}.low", {"max-length": 3}, priority=1)
    _policy(broker, name, {"max-length": 1}, priority=5)
    connection = broker.connect()
    queue_declare(connection, f"{name}.low", durable=True)
    lines = [_effective(broker, f"{name}.low")]
    _drop(broker, f"{name}.low")
    _drop(broker, name)
    return lines


@scenario
def policy_apply_to_exchanges_skips_queues(broker: Broker, name: str) -> list[str]:
    _policy(broker, name, {"alternate-exchange": "amq.fanout"}, **{"apply-to": "exchanges"})
    connection = broker.connect()
    queue_declare(connection, name, durable=True)
    lines = [_effective(broker, name, applies=False)]
    _drop(broker, name)
    return lines


@scenario
def policy_apply_to_quorum_only(broker: Broker, name: str) -> list[str]:
    _policy(broker, name, {"delivery-limit": 2}, **{"apply-to": "quorum_queues"})
    connection = broker.connect()
    queue_declare(connection, f"{name}.classic", durable=True)
    queue_declare(connection, f"{name}.quorum", durable=True, arguments=quorum())
    lines = [
        _effective(broker, f"{name}.classic", applies=False),
        _effective(broker, f"{name}.quorum"),
    ]
    _drop(broker, f"{name}.classic")
    _drop(broker, f"{name}.quorum")
    _drop(broker, name)
    return lines


@scenario
def policy_dead_letter_exchange(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, f"{name}.dlq", exclusive=True)
    definition = {"dead-letter-exchange": "", "dead-letter-routing-key": f"{name}.dlq"}
    _policy(broker, f"{name}.src", definition)
    queue_declare(connection, f"{name}.src", durable=True)
    _effective(broker, f"{name}.src")
    connection.publish(1, "", f"{name}.src", b"m")
    connection.sync()
    get(connection, f"{name}.src", no_ack=False)
    connection.send(1, commands.Basic.Reject(delivery_tag=1, requeue=False))
    connection.sync()
    lines = get_eventually(connection, f"{name}.dlq")
    _drop(broker, f"{name}.src")
    return lines


@scenario
def policy_message_ttl(broker: Broker, name: str) -> list[str]:
    _policy(broker, name, {"message-ttl": 0})
    connection = broker.connect()
    queue_declare(connection, name, durable=True)
    _effective(broker, name)
    connection.publish(1, "", name, b"m")
    connection.sync()
    lines = get(connection, name)
    _drop(broker, name)
    return lines


@scenario
def policy_alternate_exchange(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.call(1, commands.Exchange.Declare(exchange=f"{name}.ae", exchange_type="fanout"))
    connection.call(1, commands.Queue.Bind(queue=name, exchange=f"{name}.ae"))
    _policy(broker, f"{name}.x", {"alternate-exchange": f"{name}.ae"}, **{"apply-to": "exchanges"})
    connection.call(1, commands.Exchange.Declare(exchange=f"{name}.x", exchange_type="direct"))
    time.sleep(0.2)
    connection.publish(1, f"{name}.x", "unbound", mandatory=True)
    lines = connection.sync() + get(connection, name)
    connection.call(1, commands.Exchange.Delete(exchange=f"{name}.x"))
    connection.call(1, commands.Exchange.Delete(exchange=f"{name}.ae"))
    broker.api("DELETE", f"/api/policies/%2F/{quote(name + '.x')}")
    return lines


@scenario
def policy_deleted_stops_applying(broker: Broker, name: str) -> list[str]:
    _policy(broker, name, {"max-length": 1})
    connection = broker.connect()
    queue_declare(connection, name, durable=True)
    _effective(broker, name)
    broker.api("DELETE", f"/api/policies/%2F/{quote(name)}")
    time.sleep(0.3)
    for body in (b"1", b"2"):
        connection.publish(1, "", name, body)
    connection.sync()
    lines = [_effective(broker, name, applies=False)]
    lines += queue_declare(connection, name, passive=True)
    _drop(broker, name)
    return lines
