"""The scenarios by name, and the few steps most of them take.

A scenario is a function of (broker, name) returning the lines it observed; `name` is unique
to the scenario and prefixes every queue and exchange it declares, so that scenarios never
share a resource and a broker need not be reset between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pamqp import commands

from .probe import Broker, Connection

Scenario = Callable[[Broker, str], list[str]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(function: Scenario) -> Scenario:
    register(function.__name__, function)
    return function


def register(name: str, function: Scenario) -> None:
    assert name not in SCENARIOS, name
    SCENARIOS[name] = function


def queue_declare(connection: Connection, queue: str, channel: int = 1, **fields) -> list[str]:
    return connection.call(channel, commands.Queue.Declare(queue=queue, **fields))


def filled(connection: Connection, queue: str, *bodies: bytes, **fields) -> None:
    """An exclusive queue (unless `fields` say otherwise) holding `bodies` (one b"m" if none)."""
    fields.setdefault("exclusive", True)
    queue_declare(connection, queue, **fields)
    for body in bodies or (b"m",):
        connection.publish(1, "", queue, body)
    connection.sync()


def quorum(**arguments) -> dict:
    return {"x-queue-type": "quorum", **arguments}


def exchange_declare(
    connection: Connection, exchange: str, exchange_type: str = "direct", **fields
) -> list[str]:
    return connection.call(
        1, commands.Exchange.Declare(exchange=exchange, exchange_type=exchange_type, **fields)
    )


def bind(connection: Connection, queue: str, exchange: str, routing_key: str = "", **fields):
    return connection.call(
        1,
        commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key, **fields),
    )


def get(connection: Connection, queue: str, no_ack: bool = True, channel: int = 1) -> list[str]:
    return connection.call(channel, commands.Basic.Get(queue=queue, no_ack=no_ack))


def consume(connection: Connection, queue: str, channel: int = 1, **fields) -> list[str]:
    fields.setdefault("consumer_tag", "ctag")
    return connection.call(channel, commands.Basic.Consume(queue=queue, **fields))


def confirm(connection: Connection, channel: int = 1) -> list[str]:
    return connection.call(channel, commands.Confirm.Select())


def get_eventually(connection: Connection, queue: str, wait_s: float = 3.0) -> list[str]:
    """basic.get until a message comes (or wait_s passes): for what reaches a queue on its own
    time, such as a dead letter (RabbitMQ moves those asynchronously)."""
    deadline = time.monotonic() + wait_s
    while True:
        lines = get(connection, queue)
        if not any("Basic.GetEmpty" in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def confirmed(connection: Connection, delivery_tag: int, channel: int = 1) -> list[str]:
    """Everything up to the publisher confirm (ack or nack) that covers `delivery_tag`:
    confirms come on their own time, after the replies sent before them."""
    lines: list[str] = []
    while True:
        more = connection.read(("Basic.Ack", "Basic.Nack"), channel)
        lines += more
        last = more[-1] if more else ""
        if "Basic.Ack" not in last and "Basic.Nack" not in last:
            return lines
        if f"delivery_tag={delivery_tag}," in last or "multiple=True" in last:
            if int(last.split("delivery_tag=")[1].split(",")[0]) >= delivery_tag:
                return lines
