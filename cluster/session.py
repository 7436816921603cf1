"""One AMQP 0-9-1 client connection on this node: AMQP events in, broker commands out, replies
back. The handler of every method is in `methods.HANDLERS` (methods/<class>.py); this file is
what they share: the channels, the transaction buffer, and the owned effects as frames. What
any protocol front needs (login, permissions, back-pressure, credit) is `ClientSession`.

Each broker method becomes exactly one command, carrying what `apply` must not invent (generated
names, the proposer's identity); existence, equivalence and exclusivity are checked by `apply` on
committed state (DESIGN.md §2 step 2). Replies arrive in log order, which for one channel is the
order the client sent its methods in, so ok-frames and confirms go out in that order too.

What is purely about this channel's conversation stays here and never reaches the log: publisher
confirm numbering, the transaction buffer (tx.select/commit/rollback), the "last declared queue"
shortcut of AMQP 0-9-1 §1.8.3.2 (queue.declare's 'queue' field), and checks RabbitMQ makes in the
channel process (immediate=true, prefetch_size, recover with requeue=false, tx versus confirm).
"""

from __future__ import annotations

import typing

from pamqp import base, commands

from warrenmq.amqp.codec import encode_deliver
from warrenmq.amqp.events import (
    ChannelClosed,
    ChannelCloseReceived,
    ChannelOpened,
    ConnectionClosed,
    ConnectionOpened,
    ContentReceived,
    Event,
    MethodReceived,
)
from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.client import (
    ChannelError,
    ClientSession,
    Conversation,
    OnReply,
    PermissionRefused,
)
from warrenmq.cluster.methods import HANDLERS
from warrenmq.cluster.methods.basic import AcksReceived, join_acks
from warrenmq.cluster.plain import plain_table
from warrenmq.cluster.rewriting import annotated, as_0_9_1
from warrenmq.replication import commands as broker
from warrenmq.replication.replies import ChannelTimedOut, Deliver, Effect, GetOk

if typing.TYPE_CHECKING:
    from warrenmq.amqp.connection import Connection
    from warrenmq.amqp.server import AmqpServerProtocol
    from warrenmq.cluster.node import Node

__all__ = ["ChannelSession", "Session"]


TX_COMMAND_BYTES = 256  # what a buffered publish, ack or nack costs beside its body


class ChannelSession(Conversation):
    __slots__ = (
        "acked_tag",
        "confirm",
        "confirm_tag",
        "confirmed_tag",
        "last_queue",
        "number",
        "tx",
        "tx_bytes",
    )

    def __init__(self, number: int, ref: broker.ChannelRef) -> None:
        super().__init__(ref)  # the channel's identity in the broker
        self.number = number  # the wire channel number
        self.confirm = False  # confirm.select was sent
        self.confirm_tag = 0  # delivery tag of the last publish since confirm.select
        self.confirmed_tag = 0  # every publish up to this tag is applied
        self.acked_tag = 0  # every publish up to this tag has had its basic.ack sent
        self.tx: list[tuple[broker.Command, base.Frame, OnReply]] | None = None  # buffer in tx mode
        self.tx_bytes = 0  # what `tx` holds: bodies and a per-command allowance
        self.last_queue = ""  # the queue this channel declared last


class Session(ClientSession):
    protocol_name = "amqp"
    protocol: AmqpServerProtocol

    def __init__(self, node: Node, protocol: AmqpServerProtocol) -> None:
        super().__init__(node, protocol)
        self.cancel_notify = False  # the client understands a server-sent basic.cancel
        self.blocked_notify = False  # the client understands connection.blocked/unblocked
        self.channels: dict[int, ChannelSession] = {}  # by wire channel number
        self.confirming: dict[int, ChannelSession] = {}  # channels with confirms to send

    @property
    def connection(self) -> Connection:
        """The protocol machine; the transport sets it before the first event."""
        connection = self.protocol.connection
        assert connection is not None
        return connection

    # --- events from the connection machine --------------------------------------------------

    def events_received(self, events: list[Event]) -> None:
        self.take_events(join_acks(events), self._on_event)

    def _on_event(self, event: Event | AcksReceived) -> None:
        if isinstance(event, (ContentReceived, MethodReceived, AcksReceived)):
            self._on_method(event)
        elif isinstance(event, ChannelOpened):
            channel = ChannelSession(event.channel, self.next_ref())
            self.channels[event.channel] = channel
            self.begin(channel)
        elif isinstance(event, ChannelCloseReceived):
            self._close_when_answered(event.channel)
        elif isinstance(event, ChannelClosed):
            self._end_channel(event.channel)
        elif isinstance(event, ConnectionOpened):
            capabilities = event.client_properties.get("capabilities") or {}
            self.cancel_notify = bool(capabilities.get("consumer_cancel_notify"))
            self.blocked_notify = bool(capabilities.get("connection.blocked"))
            self.opened(event.user, event.vhost)
        elif isinstance(event, ConnectionClosed):
            self.closed_for(event.reason)

    def _on_method(self, event: MethodReceived | ContentReceived | AcksReceived) -> None:
        """Run the method's handler with the method, or for basic.publish the whole
        ContentReceived, for basic.ack the AcksReceived. A refused permission may wait for the
        node to catch up."""
        method = event.method
        argument = event if isinstance(event, (ContentReceived, AcksReceived)) else method
        channel = self.channels.get(event.channel)
        if channel is None:
            return  # the channel failed earlier in this read; AMQP ignores what follows
        handler = HANDLERS.get(type(method))
        try:
            if handler is None:
                raise ChannelError(
                    ReplyCode.NOT_IMPLEMENTED, f"method '{method.name.lower()}' is not supported"
                )
            handler(self, channel, argument)
        except PermissionRefused as error:
            if self.hold_refusal():
                self.hold_event(event)
            else:
                self.refuse(channel, error.code, error.text, method)
        except ChannelError as error:
            self.refuse(channel, error.code, error.text, method)

    def _close_when_answered(self, number: int) -> None:
        """The client's channel.close: close-ok once the replies to what came before it are
        out, then the channel ends (its unacknowledged messages go back)."""
        channel = self.channels.get(number)
        if channel is None:
            self.connection.answer_channel_close(number)
            return

        def answer() -> None:
            self.connection.answer_channel_close(number)
            self._end_channel(number)
            self.protocol.flush_soon()

        channel.in_order(answer)

    def _end_channel(self, number: int) -> None:
        channel = self.channels.pop(number, None)
        if channel is not None:
            self.end(channel)

    # --- proposing and replying ---------------------------------------------------------------

    def propose(
        self,
        conversation: Conversation,
        command: broker.Command,
        context: object,
        on_reply: OnReply,
    ) -> None:
        """As ClientSession.propose, but a transactional channel's publishes and settlements
        wait in its buffer for tx.commit."""
        channel = typing.cast(ChannelSession, conversation)
        if channel.tx is not None and isinstance(
            command, (broker.Publish, broker.Settle, broker.Reject)
        ):
            method = typing.cast(base.Frame, context)
            acks = 1 + len(getattr(command, "more", ()))  # each ack of a Settle counts alone
            channel.tx_bytes += len(getattr(command, "body", b"")) + TX_COMMAND_BYTES * acks
            limit = self.node.config.tx_bytes_max
            if channel.tx_bytes > limit:
                text = f"transaction size {channel.tx_bytes} is larger than configured max {limit}"
                self.refuse(channel, ReplyCode.PRECONDITION_FAILED, text, method)
                return
            channel.tx.append((command, method, on_reply))
            return
        super().propose(channel, command, context, on_reply)

    def refuse(
        self, conversation: Conversation, code: ReplyCode, text: str, context: object
    ) -> None:
        channel = typing.cast(ChannelSession, conversation)
        method = typing.cast(base.Frame, context)
        if code.is_connection_error:
            self.connection.close(code, text, method)
        else:
            self.connection.close_channel(channel.number, code, text, method)
            self._end_channel(channel.number)
        self.protocol.flush_soon()

    def internal_error(self, context: object) -> None:
        self.connection.close(ReplyCode.INTERNAL_ERROR, "", typing.cast(base.Frame, context))

    def close(self, code: ReplyCode, text: str) -> None:
        self.connection.close(code, text)
        self.protocol.flush_soon()

    def connection_details(self) -> dict[str, typing.Any]:
        """What the management API shows of this connection's protocol."""
        connection = self.connection
        return {
            "protocol": "AMQP 0-9-1",
            "auth_mechanism": connection.mechanism,
            "client_properties": plain_table(connection.client_properties),
            "timeout": connection.heartbeat_s,
            "frame_max": connection.frame_max_bytes,
            "channel_max": connection.channel_max,
        }

    def notify_blocked(self, reason: str | None) -> None:
        if self.blocked_notify:
            self.connection.send_method(
                0,
                commands.Connection.Blocked(reason=reason)
                if reason is not None
                else commands.Connection.Unblocked(),
            )
            self.protocol.flush_soon()

    def send(self, channel: ChannelSession, method: base.Frame) -> None:
        self.connection.send_method(channel.number, method)

    def send_in_order(self, channel: ChannelSession, method: base.Frame) -> None:
        """Send a locally made answer after the replies to what the channel sent before it."""
        channel.in_order(lambda: self.send(channel, method))

    def reply_ok(self, channel: ChannelSession, method: base.Frame, ok: base.Frame) -> OnReply:
        """Answer with `ok`, unless the method asked for no answer (nowait)."""

        def on_reply(_: object) -> None:
            if not getattr(method, "nowait", False):
                self.send(channel, ok)

        return on_reply

    def send_message(
        self, channel: ChannelSession, method: base.Frame | bytes, message: Deliver | GetOk
    ) -> None:
        """basic.deliver or basic.get-ok with the message, the broker's headers added."""
        counters = self.node.counters
        counters.delivered += 1
        counters.redelivered += message.redelivered
        properties, body = as_0_9_1(message.properties, message.body.read())
        properties = annotated(properties, message.annotations)
        self.connection.send_content(channel.number, method, properties, body)

    # --- effects this node owns -------------------------------------------------------------------

    def deliver(self, effect: Effect) -> None:
        channel = typing.cast("ChannelSession | None", self.conversations.get(effect.owner.channel))
        if channel is None:
            return  # the channel closed; its CloseChannel returns the message to the queue
        if isinstance(effect, Deliver):
            deliver = encode_deliver(
                channel.number,
                effect.consumer_tag,
                effect.delivery_tag,
                effect.redelivered,
                effect.exchange,
                effect.routing_key,
            )
            self.send_message(channel, deliver, effect)
            self.count_written(channel, effect.consumer_tag, len(effect.body))
        elif isinstance(effect, ChannelTimedOut):
            self.connection.close_channel(
                channel.number,
                ReplyCode.PRECONDITION_FAILED,
                f"delivery acknowledgement on channel {channel.number} timed out. Timeout value "
                f"used: {effect.timeout_ms} ms. This timeout value can be configured, see "
                "consumers doc guide to learn more",
            )
            self._end_channel(channel.number)
        elif self.cancel_notify:
            self.send(channel, commands.Basic.Cancel(consumer_tag=effect.consumer_tag, nowait=True))
        self.protocol.flush_soon()
