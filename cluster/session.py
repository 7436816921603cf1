"""One client connection on this node: AMQP events in, broker commands out, replies back.

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

import asyncio
import base64
import datetime
import ipaddress
import logging
import os
import re
import time
import typing

from pamqp import base, commands

from warrenmq.amqp.codec import unchecked
from warrenmq.amqp.events import (
    ChannelClosed,
    ChannelOpened,
    ConnectionClosed,
    ConnectionOpened,
    ContentReceived,
    Event,
    MethodReceived,
)
from warrenmq.amqp.properties import (
    EMPTY_PROPERTIES,
    PropertyError,
    PropertyList,
    encode_headers,
    encode_shortstr,
    parse_properties,
)
from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.logs import log_event
from warrenmq.cluster.passwords import verify_password
from warrenmq.cluster.plain import plain_table
from warrenmq.replication import commands as c
from warrenmq.replication.machine import (
    DELIVERY_CREDIT_BYTES,
    DELIVERY_CREDIT_MESSAGES,
    Permission,
)
from warrenmq.replication.replies import (
    Annotations,
    ChannelTimedOut,
    Death,
    Deliver,
    Effect,
    GetEmpty,
    GetOk,
    Ignored,
    MessageCount,
    QueueDeclared,
    Refused,
    Reply,
    Routed,
)

if typing.TYPE_CHECKING:
    from warrenmq.amqp.connection import Connection
    from warrenmq.amqp.server import AmqpServerProtocol
    from warrenmq.cluster.node import Node

__all__ = ["Session", "annotated", "check_login", "expiration_error", "is_loopback"]

log = logging.getLogger(__name__)

OnReply = typing.Callable[[Reply], None]

_REPLY_TO_BYTES = c.REPLY_TO.encode()
PERMISSION_CACHE_MAX = 256  # decisions remembered per connection (publishes check each time)
TX_COMMAND_BYTES = 256  # what a buffered publish, ack or nack costs beside its body
# a consumer's written deliveries are credited back in these steps: a quarter of what the
# machine lets it hold, so credit comes back long before it runs out
CREDIT_GRANT_MESSAGES = DELIVERY_CREDIT_MESSAGES // 4
CREDIT_GRANT_BYTES = DELIVERY_CREDIT_BYTES // 4


def _generated_name(prefix: str) -> str:
    """RabbitMQ's form for server-generated names: prefix, dash, 22 url-safe base64 characters."""
    return f"{prefix}-{base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip('=')}"


class ChannelSession:
    __slots__ = (
        "confirm",
        "confirm_tag",
        "confirmed_tag",
        "acked_tag",
        "last_queue",
        "number",
        "publish_count",
        "ref",
        "tx",
        "tx_bytes",
    )

    def __init__(self, number: int, ref: c.ChannelRef) -> None:
        self.number = number  # the wire channel number
        self.ref = ref  # the channel's identity in the broker
        self.confirm = False  # confirm.select was sent
        self.confirm_tag = 0  # delivery tag of the last publish since confirm.select
        self.confirmed_tag = 0  # every publish up to this tag is applied
        self.acked_tag = 0  # every publish up to this tag has had its basic.ack sent
        self.publish_count = 0  # every publish on the channel: the command's seq
        self.tx: list[tuple[c.Command, base.Frame, OnReply]] | None = None  # buffer in tx mode
        self.tx_bytes = 0  # what `tx` holds: bodies and a per-command allowance
        self.last_queue = ""  # the queue this channel declared last


class _ChannelError(Exception):
    def __init__(self, code: ReplyCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Session:
    def __init__(self, node: Node, protocol: AmqpServerProtocol) -> None:
        self.node = node
        self.protocol = protocol
        self.serial = node.next_connection_serial()
        self.incarnation = node.incarnation  # the node incarnation this session belongs to
        self.user = ""
        self.vhost = ""
        self.cancel_notify = False  # the client understands a server-sent basic.cancel
        self.blocked_notify = False  # the client understands connection.blocked/unblocked
        self.published = False  # has published: a resource alarm blocks this connection
        self.blocked_reason: str | None = None  # connection.blocked sent, reading paused
        self.channels: dict[int, ChannelSession] = {}
        self._by_serial: dict[int, ChannelSession] = {}
        self._next_channel_serial = 1
        self._in_flight = 0
        self._window_full = False  # proposals_in_flight_max reached, not yet half drained
        self._reading_paused = False
        self._ended = False
        self._confirming: dict[int, ChannelSession] = {}  # channels with confirms to send
        self._writing_paused = False  # the socket is backed up: credit is not granted back
        # (channel serial, consumer tag) -> [deliveries, bytes] written, not yet granted back
        self._written: dict[tuple[int, str], list[int]] = {}
        # (action, resource name) -> (the Permission it was decided by, allowed)
        self._permitted: dict[tuple[str, str], tuple[Permission | None, bool]] = {}
        self._handlers: dict[type, typing.Callable[[ChannelSession, typing.Any], None]] = {
            commands.Exchange.Declare: self.on_exchange_declare,
            commands.Exchange.Delete: self.on_exchange_delete,
            commands.Exchange.Bind: self.on_exchange_bind,
            commands.Exchange.Unbind: self.on_exchange_bind,
            commands.Queue.Declare: self.on_queue_declare,
            commands.Queue.Bind: self.on_queue_bind,
            commands.Queue.Unbind: self.on_queue_bind,
            commands.Queue.Purge: self.on_queue_purge,
            commands.Queue.Delete: self.on_queue_delete,
            commands.Basic.Qos: self.on_basic_qos,
            commands.Basic.Consume: self.on_basic_consume,
            commands.Basic.Cancel: self.on_basic_cancel,
            commands.Basic.Get: self.on_basic_get,
            commands.Basic.Ack: self.on_basic_ack,
            commands.Basic.Nack: self.on_basic_nack,
            commands.Basic.Reject: self.on_basic_reject,
            commands.Basic.Recover: self.on_basic_recover,
            commands.Basic.RecoverAsync: self.on_basic_recover,
            commands.Confirm.Select: self.on_confirm_select,
            commands.Tx.Select: self.on_tx_select,
            commands.Tx.Commit: self.on_tx_commit,
            commands.Tx.Rollback: self.on_tx_rollback,
        }

    @property
    def connection(self) -> Connection:
        """The protocol machine; the transport sets it before the first event."""
        connection = self.protocol.connection
        assert connection is not None
        return connection

    # --- Authenticator ------------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> bool:
        return check_login(self.node, username, password, self.protocol.peer, "amqp")

    def vhost_refusal(self, username: str, vhost: str) -> str | None:
        if not self.node.broker.query_vhost_exists(vhost):
            return f"vhost {vhost} not found"
        if self.node.broker.query_permission(username, vhost) is None:
            return f"access to vhost '{vhost}' refused for user '{username}'"
        return None

    def _permit(self, action: str, kind: str, name: str) -> None:
        """RabbitMQ's access control: `action` (configure, write or read) on a resource, checked
        against the user's permissions in this vhost as they are now (docs: access-control)."""
        permission = self.node.broker.query_permission(self.user, self.vhost)
        if kind == "exchange" and not name:
            name = "amq.default"
        cached = self._permitted.get((action, name))
        if cached is not None and cached[0] is permission:
            allowed = cached[1]
        else:
            allowed = permission is not None and permission.permits(action, name)
            if len(self._permitted) >= PERMISSION_CACHE_MAX:
                self._permitted.clear()
            self._permitted[(action, name)] = (permission, allowed)
        if not allowed:
            raise _ChannelError(
                ReplyCode.ACCESS_REFUSED,
                f"access to {kind} '{name}' in vhost '{self.vhost}' refused for user '{self.user}'",
            )

    # --- events from the connection machine --------------------------------------------------

    def events_received(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ContentReceived):
                self._on_content(event)
            elif isinstance(event, MethodReceived):
                self._on_method(event)
            elif isinstance(event, ChannelOpened):
                self._open_channel(event.channel)
            elif isinstance(event, ChannelClosed):
                self._end_channel(event.channel)
            elif isinstance(event, ConnectionOpened):
                self.user, self.vhost = event.user, event.vhost
                self.node.client_counters.connections_opened += 1
                capabilities = event.client_properties.get("capabilities") or {}
                self.cancel_notify = bool(capabilities.get("consumer_cancel_notify"))
                self.blocked_notify = bool(capabilities.get("connection.blocked"))
                log_event(
                    log,
                    "connection_opened",
                    f"connection {self.serial} opened: user {self.user!r}, vhost {self.vhost!r}",
                    **self._log_fields(),
                    tls=self.protocol.tls,
                )
                if not self.node.serving or self.incarnation != self.node.incarnation:
                    self.close(
                        ReplyCode.CONNECTION_FORCED, "node is not part of the cluster majority"
                    )
            elif isinstance(event, ConnectionClosed):
                log_event(
                    log,
                    "connection_closed",
                    f"connection {self.serial} closed: {event.reason}",
                    **self._log_fields(),
                    reason=event.reason,
                )
                self.connection_lost()

    def _log_fields(self) -> dict[str, typing.Any]:
        """Who this connection is, for its structured log events."""
        peer_host, peer_port = self.protocol.peer
        return {
            "connection": self.serial,
            "user": self.user,
            "vhost": self.vhost,
            "peer_host": peer_host,
            "peer_port": peer_port,
        }

    def connection_lost(self) -> None:
        if self._ended:
            return
        self._ended = True
        self.node.sessions.pop(self.serial, None)
        counters = self.node.client_counters
        counters.channels_closed += len(self.channels)
        counters.connections_closed += bool(self.vhost)  # opened ones: the rest never counted
        self.node.log.propose(
            c.SessionClosed(
                node=self.node.config.node_id, incarnation=self.incarnation, connection=self.serial
            )
        )

    def writing_paused(self, paused: bool) -> None:
        """Write-side back-pressure (shared/STYLE.md rule 10): while this connection's socket is
        backed up, its consumers' delivery credit is not granted back, so once they hold what
        the machine allows (DELIVERY_CREDIT_*), messages wait in their queues, not in this
        node's memory. When it drains, what was written meanwhile is granted at once."""
        self._writing_paused = paused
        if not paused:
            for key in list(self._written):
                self._grant_credit(key)

    def _count_written(self, channel: ChannelSession, consumer_tag: str, size: int) -> None:
        key = (channel.ref.channel, consumer_tag)
        written = self._written.setdefault(key, [0, 0])
        written[0] += 1
        written[1] += size
        if not self._writing_paused and (
            written[0] >= CREDIT_GRANT_MESSAGES or written[1] >= CREDIT_GRANT_BYTES
        ):
            self._grant_credit(key)

    def _grant_credit(self, key: tuple[int, str]) -> None:
        messages, size = self._written.pop(key)
        channel = self._by_serial.get(key[0])
        if channel is not None:
            self.node.log.propose(
                c.GrantCredit(
                    channel=channel.ref, consumer_tag=key[1], messages=messages, bytes=size
                )
            )

    def close(self, code: ReplyCode, text: str) -> None:
        """Close the connection from the server side (shutdown, lost majority)."""
        self.connection.close(code, text)
        self.protocol.flush_soon()

    def _open_channel(self, number: int) -> None:
        ref = c.ChannelRef(
            self.node.config.node_id, self.incarnation, self.serial, self._next_channel_serial
        )
        self._next_channel_serial += 1
        channel = ChannelSession(number, ref)
        self.channels[number] = channel
        self._by_serial[ref.channel] = channel
        self.node.client_counters.channels_opened += 1

    def _end_channel(self, number: int) -> None:
        channel = self.channels.pop(number, None)
        if channel is not None:
            del self._by_serial[channel.ref.channel]
            self.node.client_counters.channels_closed += 1
            self.node.log.propose(c.CloseChannel(channel=channel.ref))

    def _on_method(self, event: MethodReceived) -> None:
        channel = self.channels.get(event.channel)
        if channel is None:
            return  # the channel failed earlier in this read; AMQP ignores what follows
        handler = self._handlers.get(type(event.method))
        try:
            if handler is None:
                raise _ChannelError(
                    ReplyCode.NOT_IMPLEMENTED,
                    f"method '{event.method.name.lower()}' is not supported",
                )
            handler(channel, event.method)
        except _ChannelError as error:
            self._fail(channel, error.code, error.text, event.method)

    # --- proposing and replying ---------------------------------------------------------------

    def _propose(
        self, channel: ChannelSession, command: c.Command, method: base.Frame, on_reply: OnReply
    ) -> None:
        if channel.tx is not None and isinstance(command, (c.Publish, c.Settle, c.Reject)):
            channel.tx_bytes += len(getattr(command, "body", b"")) + TX_COMMAND_BYTES
            limit = self.node.config.tx_bytes_max
            if channel.tx_bytes > limit:
                text = f"transaction size {channel.tx_bytes} is larger than configured max {limit}"
                self._fail(channel, ReplyCode.PRECONDITION_FAILED, text, method)
                return
            channel.tx.append((command, method, on_reply))
            return
        self._in_flight += 1
        if self._in_flight >= self.node.config.proposals_in_flight_max:
            self._update_reading()

        def reply(result: Reply) -> None:
            self._in_flight -= 1
            if self._window_full:
                self._update_reading()
            if self.channels.get(channel.number) is not channel or isinstance(result, Ignored):
                return  # the channel ended meanwhile: nobody is waiting for this reply
            try:
                if isinstance(result, Refused):
                    self._fail(channel, ReplyCode(result.reply_code), result.reply_text, method)
                else:
                    on_reply(result)
            except Exception:
                log.exception("connection %s: answering %s failed", self.serial, method.name)
                self.connection.close(ReplyCode.INTERNAL_ERROR, "", method)
            self.protocol.flush_soon()

        self.node.log.propose(command, reply)

    def _update_reading(self) -> None:
        """Read the socket unless the proposal window is full (until it is half drained again)
        or the connection is blocked by a resource alarm."""
        window = self.node.config.proposals_in_flight_max
        if self._in_flight >= window:
            self._window_full = True
        elif self._in_flight <= window // 2:
            self._window_full = False
        paused = self._window_full or self.blocked_reason is not None
        if paused != self._reading_paused:
            self._reading_paused = paused
            if paused:
                self.protocol.pause_reading()
            else:
                self.protocol.resume_reading()

    def update_blocked(self) -> None:
        """RabbitMQ's flow control: while a memory or disk alarm is in effect anywhere in the
        cluster, a connection that publishes is sent connection.blocked and not read from,
        until every alarm clears (docs: connection blocked notifications)."""
        reason = self.node.blocked_reason if self.published else None
        if reason == self.blocked_reason:
            return
        if self.blocked_notify:
            self.connection.send_method(
                0,
                commands.Connection.Blocked(reason=reason)
                if reason is not None
                else commands.Connection.Unblocked(),
            )
            self.protocol.flush_soon()
        log_event(
            log,
            "connection_blocked" if reason else "connection_unblocked",
            f"connection {self.serial} {f'blocked: {reason}' if reason else 'unblocked'}",
            connection=self.serial,
            reason=reason,
        )
        self.blocked_reason = reason
        self._update_reading()

    def _send(self, channel: ChannelSession, method: base.Frame) -> None:
        self.connection.send_method(channel.number, method)

    def _reply_ok(self, channel: ChannelSession, method: base.Frame, ok: base.Frame) -> OnReply:
        def on_reply(_: Reply) -> None:
            if not getattr(method, "nowait", False):
                self._send(channel, ok)

        return on_reply

    def _fail(
        self, channel: ChannelSession, code: ReplyCode, text: str, method: base.Frame
    ) -> None:
        if code.is_connection_error:
            self.connection.close(code, text, method)
        else:
            self.connection.close_channel(channel.number, code, text, method)
            self._end_channel(channel.number)
        self.protocol.flush_soon()

    def _queue_name(self, channel: ChannelSession, queue: str) -> str:
        """AMQP 0-9-1: an empty queue name means the queue this channel declared last."""
        if queue:
            return queue
        if not channel.last_queue:
            raise _ChannelError(ReplyCode.NOT_FOUND, "no previously declared queue")
        return channel.last_queue

    # --- exchange class -----------------------------------------------------------------------

    def on_exchange_declare(
        self, channel: ChannelSession, method: commands.Exchange.Declare
    ) -> None:
        if not method.passive:
            self._permit("configure", "exchange", method.exchange)
            alternate = (method.arguments or {}).get("alternate-exchange")
            if isinstance(alternate, str):
                self._permit("read", "exchange", method.exchange)
                self._permit("write", "exchange", alternate)
        command = c.DeclareExchange(
            channel=channel.ref,
            vhost=self.vhost,
            exchange=method.exchange,
            type=method.exchange_type,
            passive=method.passive,
            durable=method.durable,
            auto_delete=method.auto_delete,
            internal=method.internal,
            arguments=plain_table(method.arguments),
        )
        self._propose(
            channel, command, method, self._reply_ok(channel, method, commands.Exchange.DeclareOk())
        )

    def on_exchange_delete(self, channel: ChannelSession, method: commands.Exchange.Delete) -> None:
        self._permit("configure", "exchange", method.exchange)
        command = c.DeleteExchange(
            channel=channel.ref,
            vhost=self.vhost,
            exchange=method.exchange,
            if_unused=method.if_unused,
        )
        self._propose(
            channel, command, method, self._reply_ok(channel, method, commands.Exchange.DeleteOk())
        )

    def on_exchange_bind(
        self, channel: ChannelSession, method: commands.Exchange.Bind | commands.Exchange.Unbind
    ) -> None:
        """exchange.bind and exchange.unbind: the same fields, a different verb."""
        bind = isinstance(method, commands.Exchange.Bind)
        self._permit("write", "exchange", method.destination)
        self._permit("read", "exchange", method.source)
        command = (c.BindExchange if bind else c.UnbindExchange)(
            channel=channel.ref,
            vhost=self.vhost,
            destination=method.destination,
            source=method.source,
            routing_key=method.routing_key,
            arguments=plain_table(method.arguments),
        )
        ok = commands.Exchange.BindOk() if bind else commands.Exchange.UnbindOk()
        self._propose(channel, command, method, self._reply_ok(channel, method, ok))

    # --- queue class --------------------------------------------------------------------------

    def on_queue_declare(self, channel: ChannelSession, method: commands.Queue.Declare) -> None:
        server_named = not method.queue and not method.passive
        queue = (
            _generated_name("amq.gen") if server_named else self._queue_name(channel, method.queue)
        )
        if not method.passive:
            self._permit("configure", "queue", queue)
            dead_letter_exchange = (method.arguments or {}).get("x-dead-letter-exchange")
            if isinstance(dead_letter_exchange, str):
                self._permit("read", "queue", queue)
                self._permit("write", "exchange", dead_letter_exchange)
        command = c.DeclareQueue(
            channel=channel.ref,
            vhost=self.vhost,
            queue=queue,
            server_named=server_named,
            passive=method.passive,
            durable=method.durable,
            exclusive=method.exclusive,
            auto_delete=method.auto_delete,
            arguments=plain_table(method.arguments),
        )

        def on_reply(result: Reply) -> None:
            assert isinstance(result, QueueDeclared)
            channel.last_queue = result.queue
            if not method.nowait:
                self._send(
                    channel,
                    unchecked(
                        commands.Queue.DeclareOk,
                        queue=result.queue,
                        message_count=result.message_count,
                        consumer_count=result.consumer_count,
                    ),
                )

        self._propose(channel, command, method, on_reply)

    def on_queue_bind(
        self, channel: ChannelSession, method: commands.Queue.Bind | commands.Queue.Unbind
    ) -> None:
        """queue.bind and queue.unbind; an empty queue and key mean the last declared queue."""
        bind = isinstance(method, commands.Queue.Bind)
        queue = self._queue_name(channel, method.queue)
        routing_key = method.routing_key if method.queue or method.routing_key else queue
        self._permit("write", "queue", queue)
        self._permit("read", "exchange", method.exchange)
        command = (c.BindQueue if bind else c.UnbindQueue)(
            channel=channel.ref,
            vhost=self.vhost,
            queue=queue,
            exchange=method.exchange,
            routing_key=routing_key,
            arguments=plain_table(method.arguments),
        )
        ok = commands.Queue.BindOk() if bind else commands.Queue.UnbindOk()
        self._propose(channel, command, method, self._reply_ok(channel, method, ok))

    def on_queue_purge(self, channel: ChannelSession, method: commands.Queue.Purge) -> None:
        queue = self._queue_name(channel, method.queue)
        self._permit("read", "queue", queue)
        command = c.PurgeQueue(channel=channel.ref, vhost=self.vhost, queue=queue)

        def on_reply(result: Reply) -> None:
            assert isinstance(result, MessageCount)
            if not method.nowait:
                self._send(channel, commands.Queue.PurgeOk(message_count=result.message_count))

        self._propose(channel, command, method, on_reply)

    def on_queue_delete(self, channel: ChannelSession, method: commands.Queue.Delete) -> None:
        queue = self._queue_name(channel, method.queue)
        self._permit("configure", "queue", queue)
        command = c.DeleteQueue(
            channel=channel.ref,
            vhost=self.vhost,
            queue=queue,
            if_unused=method.if_unused,
            if_empty=method.if_empty,
        )

        def on_reply(result: Reply) -> None:
            assert isinstance(result, MessageCount)
            if not method.nowait:
                self._send(channel, commands.Queue.DeleteOk(message_count=result.message_count))

        self._propose(channel, command, method, on_reply)

    # --- basic class ----------------------------------------------------------------------------

    def _on_content(self, event: ContentReceived) -> None:
        channel = self.channels.get(event.channel)
        if channel is None:
            return  # the channel failed earlier in this read; AMQP ignores what follows
        method = event.method
        if method.immediate:
            self.connection.close(ReplyCode.NOT_IMPLEMENTED, "immediate=true", method)
            self.protocol.flush_soon()
            return
        properties = event.properties
        expiration = properties.text("expiration")
        if expiration is not None:
            error = expiration_error(expiration)
            if error is not None:
                self._fail(
                    channel,
                    ReplyCode.PRECONDITION_FAILED,
                    f"invalid expiration '{expiration}': {error}",
                    method,
                )
                return
        try:
            self._permit("write", "exchange", method.exchange)
        except _ChannelError as error:
            self._fail(channel, error.code, error.text, method)
            return
        channel.publish_count += 1
        counters = self.node.counters
        counters.received += 1
        confirm_tag = 0
        if channel.confirm:
            channel.confirm_tag += 1
            confirm_tag = channel.confirm_tag
            counters.received_confirm += 1
        replies_to_channel = properties.shortstr("reply_to") == _REPLY_TO_BYTES
        command = c.Publish(
            channel=channel.ref,
            seq=channel.publish_count,
            vhost=self.vhost,
            exchange=method.exchange,
            routing_key=method.routing_key,
            mandatory=method.mandatory,
            headers=plain_table(properties.headers) if properties.headers else None,
            properties=_outgoing_properties(properties, channel.ref, replies_to_channel),
            body=event.body,
            now_ms=int(time.time() * 1000),
            expiration=expiration,
            replies_to_channel=replies_to_channel,
            priority=properties.priority,
        )

        def on_reply(result: Reply) -> None:
            assert isinstance(result, Routed)
            if result.queue_count:
                counters.routed += 1
            elif method.mandatory:
                counters.unroutable_returned += 1
            else:
                counters.unroutable_dropped += 1
            if not result.queue_count and method.mandatory:
                self.connection.send_content(
                    channel.number,
                    unchecked(
                        commands.Basic.Return,
                        reply_code=int(ReplyCode.NO_ROUTE),
                        reply_text="NO_ROUTE",
                        exchange=method.exchange,
                        routing_key=method.routing_key,
                    ),
                    properties.raw,
                    event.body,
                )
            if confirm_tag and result.rejected:
                self._nack_publish(channel, confirm_tag)
            elif confirm_tag:
                self._confirm(channel, confirm_tag)

        self._propose(channel, command, method, on_reply)
        if not self.published:
            self.published = True
            if self.node.blocked_reason is not None:
                self.update_blocked()

    def _confirm(self, channel: ChannelSession, confirm_tag: int) -> None:
        """Replies come in publish order: collect this turn's confirms for one multiple ack."""
        channel.confirmed_tag = confirm_tag
        if not self._confirming:
            asyncio.get_running_loop().call_soon(self._send_confirms)
        self._confirming[channel.number] = channel

    def _send_confirms(self) -> None:
        confirming, self._confirming = self._confirming, {}
        for number, channel in confirming.items():
            if self.channels.get(number) is channel:  # else its publishes stay unconfirmed
                self._send_acks(channel)
        self.protocol.flush_soon()

    def _send_acks(self, channel: ChannelSession) -> None:
        if channel.confirmed_tag > channel.acked_tag:
            self.node.counters.confirmed += channel.confirmed_tag - channel.acked_tag
            multiple = channel.confirmed_tag - channel.acked_tag > 1
            self._send(
                channel, commands.Basic.Ack(delivery_tag=channel.confirmed_tag, multiple=multiple)
            )
            channel.acked_tag = channel.confirmed_tag

    def _nack_publish(self, channel: ChannelSession, confirm_tag: int) -> None:
        """A queue at its limit refused the message (reject-publish): the acks collected so far
        go out first, then basic.nack for this one."""
        self._send_acks(channel)
        self._send(
            channel, commands.Basic.Nack(delivery_tag=confirm_tag, multiple=False, requeue=False)
        )
        channel.confirmed_tag = channel.acked_tag = confirm_tag
        self.protocol.flush_soon()

    def on_basic_qos(self, channel: ChannelSession, method: commands.Basic.Qos) -> None:
        if method.prefetch_size:
            raise _ChannelError(
                ReplyCode.NOT_IMPLEMENTED, f"prefetch_size!=0 ({method.prefetch_size})"
            )
        command = c.Qos(
            channel=channel.ref, prefetch_count=method.prefetch_count, global_=method.global_
        )
        self._propose(
            channel, command, method, self._reply_ok(channel, method, commands.Basic.QosOk())
        )

    def on_basic_consume(self, channel: ChannelSession, method: commands.Basic.Consume) -> None:
        consumer_tag = method.consumer_tag or _generated_name("amq.ctag")
        queue = self._queue_name(channel, method.queue)
        if queue != c.REPLY_TO:
            self._permit("read", "queue", queue)
        command = c.Consume(
            channel=channel.ref,
            vhost=self.vhost,
            queue=queue,
            consumer_tag=consumer_tag,
            no_ack=method.no_ack,
            exclusive=method.exclusive,
            arguments=plain_table(method.arguments),
        )
        self._propose(
            channel,
            command,
            method,
            self._reply_ok(channel, method, commands.Basic.ConsumeOk(consumer_tag=consumer_tag)),
        )

    def on_basic_cancel(self, channel: ChannelSession, method: commands.Basic.Cancel) -> None:
        command = c.Cancel(channel=channel.ref, consumer_tag=method.consumer_tag or "")
        self._propose(
            channel,
            command,
            method,
            self._reply_ok(
                channel, method, commands.Basic.CancelOk(consumer_tag=method.consumer_tag)
            ),
        )

    def on_basic_get(self, channel: ChannelSession, method: commands.Basic.Get) -> None:
        queue = self._queue_name(channel, method.queue)
        self._permit("read", "queue", queue)
        command = c.Get(channel=channel.ref, vhost=self.vhost, queue=queue, no_ack=method.no_ack)

        def on_reply(result: Reply) -> None:
            if isinstance(result, GetEmpty):
                self.node.counters.get_empty += 1
                self._send(channel, commands.Basic.GetEmpty())
                return
            assert isinstance(result, GetOk)
            self._count_delivery(result.redelivered)
            self.connection.send_content(
                channel.number,
                unchecked(
                    commands.Basic.GetOk,
                    delivery_tag=result.delivery_tag,
                    redelivered=result.redelivered,
                    exchange=result.exchange,
                    routing_key=result.routing_key,
                    message_count=result.message_count,
                ),
                annotated(result.properties, result.annotations),
                result.body,
            )

        self._propose(channel, command, method, on_reply)

    def on_basic_ack(self, channel: ChannelSession, method: commands.Basic.Ack) -> None:
        command = c.Settle(
            channel=channel.ref, delivery_tag=method.delivery_tag, multiple=method.multiple
        )

        def on_reply(result: Reply) -> None:
            assert isinstance(result, MessageCount)
            self.node.counters.acknowledged += result.message_count

        self._propose(channel, command, method, on_reply)

    def on_basic_nack(self, channel: ChannelSession, method: commands.Basic.Nack) -> None:
        command = c.Reject(
            channel=channel.ref,
            delivery_tag=method.delivery_tag,
            multiple=method.multiple,
            requeue=method.requeue,
            now_ms=int(time.time() * 1000),
        )
        self._propose(channel, command, method, _no_reply)

    def on_basic_reject(self, channel: ChannelSession, method: commands.Basic.Reject) -> None:
        command = c.Reject(
            channel=channel.ref,
            delivery_tag=method.delivery_tag or 0,
            multiple=False,
            requeue=method.requeue,
            now_ms=int(time.time() * 1000),
        )
        self._propose(channel, command, method, _no_reply)

    def on_basic_recover(
        self, channel: ChannelSession, method: commands.Basic.Recover | commands.Basic.RecoverAsync
    ) -> None:
        if not method.requeue:
            raise _ChannelError(ReplyCode.NOT_IMPLEMENTED, "requeue=false")
        ok = commands.Basic.RecoverOk() if isinstance(method, commands.Basic.Recover) else None

        def on_reply(_: Reply) -> None:
            if ok is not None:
                self._send(channel, ok)

        self._propose(channel, c.Recover(channel=channel.ref), method, on_reply)

    # --- confirm and tx classes -----------------------------------------------------------------

    def on_confirm_select(self, channel: ChannelSession, method: commands.Confirm.Select) -> None:
        if channel.tx is not None:
            raise _ChannelError(
                ReplyCode.PRECONDITION_FAILED, "cannot switch from tx to confirm mode"
            )
        channel.confirm = True
        if not method.nowait:
            self._send(channel, commands.Confirm.SelectOk())

    def on_tx_select(self, channel: ChannelSession, method: commands.Tx.Select) -> None:
        if channel.confirm:
            raise _ChannelError(
                ReplyCode.PRECONDITION_FAILED, "cannot switch from confirm to tx mode"
            )
        if channel.tx is None:
            channel.tx = []
        self._send(channel, commands.Tx.SelectOk())

    def on_tx_commit(self, channel: ChannelSession, method: commands.Tx.Commit) -> None:
        if channel.tx is None:
            raise _ChannelError(ReplyCode.PRECONDITION_FAILED, "channel is not transactional")
        buffered, channel.tx = channel.tx, None  # propose for real, then return to tx mode
        channel.tx_bytes = 0
        remaining = len(buffered)

        def on_one_reply(on_reply: OnReply) -> OnReply:
            def reply(result: Reply) -> None:
                nonlocal remaining
                on_reply(result)
                remaining -= 1
                if not remaining:
                    self._send(channel, commands.Tx.CommitOk())

            return reply

        for command, buffered_method, on_reply in buffered:
            self._propose(channel, command, buffered_method, on_one_reply(on_reply))
        channel.tx = []
        if not buffered:
            self._send(channel, commands.Tx.CommitOk())

    def on_tx_rollback(self, channel: ChannelSession, method: commands.Tx.Rollback) -> None:
        if channel.tx is None:
            raise _ChannelError(ReplyCode.PRECONDITION_FAILED, "channel is not transactional")
        channel.tx, channel.tx_bytes = [], 0
        self._send(channel, commands.Tx.RollbackOk())

    def _count_delivery(self, redelivered: bool) -> None:
        counters = self.node.counters
        counters.delivered += 1
        counters.redelivered += redelivered

    # --- effects this node owns -------------------------------------------------------------------

    def deliver(self, effect: Effect) -> None:
        channel = self._by_serial.get(effect.owner.channel)
        if channel is None:
            return  # the channel closed; its CloseChannel returns the message to the queue
        if isinstance(effect, Deliver):
            self._count_delivery(effect.redelivered)
            self.connection.send_content(
                channel.number,
                unchecked(
                    commands.Basic.Deliver,
                    consumer_tag=effect.consumer_tag,
                    delivery_tag=effect.delivery_tag,
                    redelivered=effect.redelivered,
                    exchange=effect.exchange,
                    routing_key=effect.routing_key,
                ),
                annotated(effect.properties, effect.annotations),
                effect.body,
            )
            self._count_written(channel, effect.consumer_tag, len(effect.body))
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
            self._send(
                channel, commands.Basic.Cancel(consumer_tag=effect.consumer_tag, nowait=True)
            )
        self.protocol.flush_soon()


def _outgoing_properties(
    properties: PropertyList, sender: c.ChannelRef, replies_to_channel: bool
) -> bytes:
    """The properties as receivers see them: BCC routes the message but no receiver sees it
    (RabbitMQ docs, "Sender-selected distribution"), and a reply-to of amq.rabbitmq.reply-to
    becomes this channel's own address (RabbitMQ docs, "Direct Reply-to")."""
    changes: dict[str, bytes | None] = {}
    if properties.headers is not None and "BCC" in properties.headers:
        changes["headers"] = encode_headers(
            {name: value for name, value in properties.headers.items() if name != "BCC"}
        )
    if replies_to_channel:
        changes["reply_to"] = encode_shortstr(sender.reply_to.encode())
    return properties.replaced(**changes) if changes else properties.raw


def expiration_error(expiration: str) -> str | None:
    """RabbitMQ's objection to an expiration property, as it words it; None if it is valid."""
    digits = re.match(r"[+-]?[0-9]+", expiration)
    if digits is None:
        return "no_integer"
    if digits.end() < len(expiration):
        return f'{{leftover_string,"{expiration[digits.end() :]}"}}'
    if int(expiration) < 0:
        return f"{{value_negative,{int(expiration)}}}"
    return None


def annotated(properties: bytes, annotations: Annotations | None) -> bytes:
    """The message's properties with the headers the broker adds (RabbitMQ docs: quorum queues,
    "Poison Message Handling"; dead letter exchanges, "Dead-Lettered Effects on Messages").
    Every other property is copied byte for byte."""
    if annotations is None:
        return properties
    try:
        parsed = parse_properties(properties)
    except PropertyError:
        # only a log written before publishes were checked can hold such a list: deliver the
        # annotations without it rather than nothing
        log.warning("a stored message's properties do not parse; delivered without them")
        parsed = parse_properties(EMPTY_PROPERTIES)
    headers = dict(parsed.headers or {})
    if annotations.delivery_count:
        headers["x-delivery-count"] = annotations.delivery_count
    if annotations.deaths:
        headers["x-death"] = [_death_table(death) for death in annotations.deaths]
    for which, death in (("first", annotations.first_death), ("last", annotations.last_death)):
        if death is not None:
            headers[f"x-{which}-death-queue"] = death.queue
            headers[f"x-{which}-death-reason"] = death.reason
            headers[f"x-{which}-death-exchange"] = death.exchange
    changes: dict[str, bytes | None] = {"headers": encode_headers(headers)}
    if annotations.deaths:
        changes["expiration"] = None  # removed on dead-lettering, kept as original-expiration
    return parsed.replaced(**changes)


def _death_table(death: Death) -> dict[str, object]:
    table: dict[str, object] = {
        "count": death.count,
        "reason": death.reason,
        "queue": death.queue,
        "time": datetime.datetime.fromtimestamp(death.time_ms // 1000, datetime.UTC),
        "exchange": death.exchange,
        "routing-keys": list(death.routing_keys),
    }
    if death.original_expiration is not None:
        table["original-expiration"] = death.original_expiration
    return table


def _no_reply(_: Reply) -> None:
    """basic.ack, nack and reject have no reply; only a refusal (unknown tag) is answered."""


def check_login(
    node: Node, username: str, password: str, peer: tuple[str, int], protocol: str
) -> bool:
    """The user exists, the password matches, and a loopback-only user (guest) is local."""
    user = node.broker.query_user(username)
    if username in node.config.loopback_users and not is_loopback(peer[0]):
        reason = "user may only connect over loopback"
    elif user is None or not verify_password(password, user.password_hash):
        reason = "unknown user or wrong password"
    else:
        return True
    log_event(
        log,
        "login_refused",
        f"login refused: user {username!r} from {peer[0]}: {reason}",
        logging.WARNING,
        user=username,
        peer_host=peer[0],
        peer_port=peer[1],
        protocol=protocol,
        reason=reason,
    )
    return False


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
