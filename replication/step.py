"""What every `apply_<command>` function works with: the `Step` of one command over the state,
the refusals it raises, and the lookups that refuse as RabbitMQ does.

A handler refuses by raising `Refusal(refused)`; `Broker.apply` (machine.py) catches it and
returns the `Refused` reply, so a rule deep in a helper ends the command where it breaks.
"""

from __future__ import annotations

import enum

from warrenmq.replication import commands as c
from warrenmq.replication.body import Body, Keeper
from warrenmq.replication.queue import Queue
from warrenmq.replication.replies import Effect, Refused
from warrenmq.replication.state import BrokerState, Channel, Exchange, Vhost


class ReplyCode(enum.IntEnum):
    """The AMQP 0-9-1 reply codes that broker rules produce (the protocol layer has the rest)."""

    ACCESS_REFUSED = 403
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    PRECONDITION_FAILED = 406
    COMMAND_INVALID = 503
    NOT_ALLOWED = 530
    NOT_IMPLEMENTED = 540
    INTERNAL_ERROR = 541

    @property
    def is_connection_error(self) -> bool:
        return self >= 500


INTERNAL_ERROR = Refused(int(ReplyCode.INTERNAL_ERROR), "")  # RabbitMQ's bare INTERNAL_ERROR


class Refusal(Exception):
    """Raised inside a handler to return a refusal; never leaves `Broker.apply`."""

    def __init__(self, refused: Refused) -> None:
        self.refused = refused


def refusal(code: ReplyCode, text: str) -> Refusal:
    return Refusal(Refused(int(code), text))


def not_found(kind: str, name: str, vhost: str) -> Refusal:
    return refusal(ReplyCode.NOT_FOUND, f"no {kind} '{name}' in vhost '{vhost}'")


def locked(queue: Queue) -> Refusal:
    return refusal(
        ReplyCode.RESOURCE_LOCKED,
        f"cannot obtain exclusive access to locked queue '{queue.name}' in vhost '{queue.vhost}'. "
        "It could be originally declared on another connection or the exclusive property value "
        "does not match that of the original declaration.",
    )


def default_exchange_refused() -> Refusal:
    return refusal(ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange")


def check_exclusive_access(channel: c.ChannelRef, queue: Queue) -> None:
    if queue.exclusive_owner is not None and queue.exclusive_owner != channel.connection_ref:
        raise locked(queue)


class Step:
    """One command being applied: the state it changes and the effects it has emitted."""

    def __init__(
        self, state: BrokerState, bodies: Keeper | None = None, node_id: str | None = None
    ) -> None:
        self.state = state
        self.effects: list[Effect] = []
        self._bodies = bodies  # the node's body store; without one, bodies stay in memory
        self._node_id = node_id  # the node applying; None: one that carries out every effect

    def carries_out(self, owner: c.ChannelRef) -> bool:
        """Whether the node applying carries out `owner`'s effects: every other node drops
        them, so the hot ones (deliveries) are not built for it."""
        return self._node_id is None or owner.node == self._node_id

    def keep(self, body: Body) -> None:
        """The state holds a message with this body: the store writes it down."""
        if self._bodies is not None:
            self._bodies.keep(body)

    def vhost(self, name: str) -> Vhost:
        vhost = self.state.vhosts.get(name)
        if vhost is None:
            raise refusal(ReplyCode.NOT_ALLOWED, f"vhost '{name}' not found")
        return vhost

    def exchange(self, vhost: str, name: str) -> Exchange:
        exchange = self.vhost(vhost).exchanges.get(name)
        if exchange is None:
            raise not_found("exchange", name, vhost)
        return exchange

    def queue(self, channel: c.ChannelRef, vhost: str, name: str) -> Queue:
        """The queue `channel` names, if it exists and `channel` may use it."""
        queue = self.vhost(vhost).queues.get(name)
        if queue is None:
            raise not_found("queue", name, vhost)
        check_exclusive_access(channel, queue)
        return queue

    def channel(self, ref: c.ChannelRef) -> Channel:
        """The channel's replicated part, made on first use."""
        channel = self.state.channels.get(ref)
        if channel is None:
            channel = self.state.channels[ref] = Channel(ref)
        return channel
