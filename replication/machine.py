"""The broker as one deterministic state machine: `Broker.apply(meta, command) -> Applied`.

Theory of operation
-------------------
Every node applies the same commands in the same log order and so holds the same broker: vhosts,
users, exchanges with their bindings, queues with their messages, and every channel that consumes
or holds unacknowledged messages. `apply` reads no clock, no randomness, no environment and does
not know which node runs it; whatever is not a function of the log arrives inside the command.

`apply` never raises on client input: a broken rule becomes `Refused(code, text)` with RabbitMQ's
reply code. A refusal with a channel-level code (4xx, AMQP 0-9-1 §1.2 "soft errors") marks that
channel failed; a connection-level code marks the whole connection failed. Commands that were
already in flight from a failed channel or connection are `Ignored`, as RabbitMQ ignores what a
closed channel sent after its error, until `CloseChannel` / `SessionClosed` clears the mark.

Nor does `apply` raise on a bug: an exception a handler did not mean (anything but a refusal) is
logged with the command's type and becomes `Refused(541, "INTERNAL_ERROR")` for that one
command, which fails its connection as RabbitMQ's does when a channel process crashes. Every node
runs the same code on the same state, so every node fails the same command the same way, keeps
what the handler changed before it failed and the effects it emitted, and goes on with the next
command: a bug can cost one client its connection, never the log.

Queues dispatch round-robin among their consumers within prefetch credit (per consumer, and per
channel when basic.qos was global). Delivery tags are counted per channel here, so acks, nacks
and "multiple" resolve against replicated state. Messages returned to a queue keep their position
(they sort back in by their sequence number) and come back `redelivered`.

Deliveries are effects that name their owning channel; only the node that holds that channel's
connection sends them, so replaying the log sends nothing twice.

Where things are
----------------
`HANDLERS` below maps every command to its `apply_<command>` function, one file per concept:
membership.py (nodes, channels and connections ending), access.py (vhosts, users,
permissions, alarms), exchanges.py (exchanges and bindings), queues.py (queues and their
arguments), publish.py, consumers.py (consume, cancel, qos, get, credit), settle.py (ack, nack,
reject, recover) and clock.py (Tick). They share delivery.py (enqueue and dispatch),
dead_letter.py, routing.py, and step.py (the `Step` a handler works on, and its refusals).
The state's classes are in state.py and queue.py; queries.py holds the reads the node makes.
"""

from __future__ import annotations

import logging
import typing

from warrenmq.replication import (
    access,
    clock,
    consumers,
    exchanges,
    membership,
    policy_changes,
    publish,
    queues,
    settle,
)
from warrenmq.replication import commands as c
from warrenmq.replication.body import Keeper
from warrenmq.replication.delivery import DELIVERY_CREDIT_BYTES, DELIVERY_CREDIT_MESSAGES
from warrenmq.replication.exchanges import EXCHANGE_TYPES
from warrenmq.replication.queries import Queries

# The state's classes live in state.py and queue.py. They are imported here by name because
# snapshots pickled before that split refer to them as warrenmq.replication.machine.<Name>.
from warrenmq.replication.queue import Entry, Limits, Queue
from warrenmq.replication.replies import Applied, Ignored, Refused, Reply
from warrenmq.replication.state import (
    FULL_ACCESS,
    Binding,
    BrokerState,
    Channel,
    Consumer,
    DeadLetter,
    Exchange,
    Message,
    Meta,
    Permission,
    Unacked,
    User,
    Vhost,
    bodies_held,
    upgrade_state,
)
from warrenmq.replication.step import INTERNAL_ERROR, Refusal, ReplyCode, Step

__all__ = [
    "DELIVERY_CREDIT_BYTES",
    "DELIVERY_CREDIT_MESSAGES",
    "EXCHANGE_TYPES",
    "FULL_ACCESS",
    "HANDLERS",
    "INTERNAL_ERROR",
    "Binding",
    "Broker",
    "BrokerState",
    "Channel",
    "Consumer",
    "DeadLetter",
    "Entry",
    "Exchange",
    "Limits",
    "Message",
    "Meta",
    "Permission",
    "Queue",
    "ReplyCode",
    "Unacked",
    "User",
    "Vhost",
    "upgrade_state",
]

log = logging.getLogger(__name__)

Handler = typing.Callable[[Step, typing.Any], Reply]

# The only handler table: every command of the log, and the function that applies it.
HANDLERS: dict[type, Handler] = {
    c.NodeUp: membership.apply_node_up,
    c.NodeDown: membership.apply_node_down,
    c.CloseChannel: membership.apply_close_channel,
    c.SessionClosed: membership.apply_session_closed,
    c.BootstrapDefaults: access.apply_bootstrap_defaults,
    c.AddVhost: access.apply_add_vhost,
    c.DeleteVhost: access.apply_delete_vhost,
    c.AddUser: access.apply_add_user,
    c.DeleteUser: access.apply_delete_user,
    c.SetPermissions: access.apply_set_permissions,
    c.ClearPermissions: access.apply_clear_permissions,
    c.SetAlarm: access.apply_set_alarm,
    c.Barrier: access.apply_barrier,
    c.SetPolicy: policy_changes.apply_set_policy,
    c.ClearPolicy: policy_changes.apply_clear_policy,
    c.Tick: clock.apply_tick,
    c.DeclareExchange: exchanges.apply_declare_exchange,
    c.DeleteExchange: exchanges.apply_delete_exchange,
    c.BindExchange: exchanges.apply_bind_exchange,
    c.UnbindExchange: exchanges.apply_unbind_exchange,
    c.DeclareQueue: queues.apply_declare_queue,
    c.BindQueue: queues.apply_bind_queue,
    c.UnbindQueue: queues.apply_unbind_queue,
    c.PurgeQueue: queues.apply_purge_queue,
    c.DeleteQueue: queues.apply_delete_queue,
    c.Publish: publish.apply_publish,
    c.Consume: consumers.apply_consume,
    c.Cancel: consumers.apply_cancel,
    c.Qos: consumers.apply_qos,
    c.Get: consumers.apply_get,
    c.GrantCredit: consumers.apply_grant_credit,
    c.DrainCredit: consumers.apply_drain_credit,
    c.Settle: settle.apply_settle,
    c.Reject: settle.apply_reject,
    c.Recover: settle.apply_recover,
}


class Broker(Queries):
    def __init__(
        self,
        state: BrokerState | None = None,
        bodies: Keeper | None = None,
        node_id: str | None = None,
    ) -> None:
        self.state = state or BrokerState()
        self.bodies = bodies  # the node's body store (body_store.py); None keeps them in memory
        # the node it runs on: deliveries to other nodes' channels are not built, as that
        # node alone sends them (None: every effect is, as in the pure tests)
        self.node_id = node_id

    def install(self, state: BrokerState) -> None:
        """Take a whole state (a snapshot); the body store learns which bodies it holds."""
        self.state = state
        if self.bodies is not None:
            self.bodies.adopt(bodies_held(state))

    def apply(self, meta: Meta, command: c.Command) -> Applied:
        """The one entry point: apply `command`, the log's entry `meta.index`."""
        state = self.state
        state.last_index = meta.index
        channel = getattr(command, "channel", None)
        if channel is not None and not membership.is_live(state, channel.node, channel.incarnation):
            return Applied(Ignored())  # a lost or replaced node incarnation may no longer act
        if isinstance(command, c.SessionClosed) and not membership.is_live(
            state, command.node, command.incarnation
        ):
            return Applied(Ignored())
        if (
            channel is not None
            and not isinstance(command, c.CloseChannel)
            and (
                channel in state.failed_channels
                or channel.connection_ref in state.failed_connections
            )
        ):
            return Applied(Ignored())
        step = Step(state, self.bodies, self.node_id)
        try:
            reply = HANDLERS[type(command)](step, command)
        except Refusal as refusal:
            reply = refusal.refused
            self._mark_failed(channel, reply)
        except Exception:  # a bug, not a client's mistake: see "apply never raises" above
            log.exception("applying %s failed: refused with 541", type(command).__name__)
            reply = INTERNAL_ERROR
            self._mark_failed(channel, reply)
        return Applied(reply, step.effects)

    def _mark_failed(self, channel: c.ChannelRef | None, refused: Refused) -> None:
        if channel is None or channel.connection == c.MANAGEMENT_CONNECTION:
            return  # a management operation is one command: nothing follows it to ignore
        if channel.survives_refusals:
            return
        if ReplyCode(refused.reply_code).is_connection_error:
            self.state.failed_connections.add(channel.connection_ref)
        else:
            self.state.failed_channels.add(channel)

    def admit_entry(self, node: str, incarnation: int, seq: int) -> bool:
        """Log entries of one node incarnation are admitted once each, in increasing order.

        A proposer may send an entry again when it cannot tell whether the first copy arrived;
        the copy that comes second is not applied.
        """
        last = self.state.entry_seqs.get(node)
        if last is not None and (incarnation, seq) <= last:
            return False
        self.state.entry_seqs[node] = (incarnation, seq)
        return True


def _check_handler_table() -> None:
    """Every command has a handler: a command type added to the log's union without one would
    otherwise be found only when the first such entry is applied."""
    missing = set(typing.get_args(c.Command)) - set(HANDLERS)
    if missing:
        raise ImportError(f"no apply handler for {sorted(each.__name__ for each in missing)}")


_check_handler_table()
