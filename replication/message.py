"""A message as the replicated state holds it: what routing, delivery and dead-lettering read.

Its own module so that `queue.py`, which builds messages back from a queue's columns, and
`state.py`, which imports `queue.py`, can both use it. Snapshots name the class as
`warrenmq.replication.state.Message` (and, before that, `...machine.Message`): both modules
still have it.
"""

from __future__ import annotations

from dataclasses import dataclass

from warrenmq.replication import commands as c
from warrenmq.replication.body import Body
from warrenmq.replication.replies import Death

__all__ = ["Message"]


@dataclass(slots=True)
class Message:
    exchange: str  # exchange the publisher named (the dead-letter exchange, once dead-lettered)
    routing_key: str  # routing key the publisher gave (or the dead-letter routing key)
    properties: bytes  # encoded content properties, delivered as received
    body: Body  # the bytes are in the node's body store (body.py)
    headers: c.Arguments | None = None  # the headers table, plain, for headers-exchange routing
    deaths: tuple[Death, ...] = ()  # x-death, most recent first
    first_death: Death | None = None  # the first dead-lettering (x-first-death-*)
    last_death: Death | None = None  # the latest (x-last-death-*)
    expiration: str | None = None  # the expiration property (ms), until dead-lettered
    priority: int = 0  # the priority property
