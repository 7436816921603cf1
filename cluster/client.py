"""What every protocol front needs of one client connection, in words of the broker, not of
frames: who the client is and what it may do, proposing its commands with back-pressure,
turning a refusal into the close its protocol sends, crediting deliveries back as they are
written, and what the broker must hear when the connection ends.

The AMQP 0-9-1 front (session.py, with its method handlers in methods/) is a `ClientSession`;
an AMQP 1.0 front is another, with its sessions and links as the `Conversation`s (a link's
ChannelRef is what a channel's is: the owner of its consumers, deliveries and unacked
messages in the broker). A front implements four things: `refuse` (how its protocol closes a
channel or connection for a reply code), `internal_error`, `notify_blocked` and `deliver`
(owned effects in its own frames).
"""

from __future__ import annotations

import collections
import logging
import typing

from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.auth import Access, check_login, vhost_refusal
from warrenmq.cluster.logs import log_event
from warrenmq.replication import commands as c
from warrenmq.replication.machine import DELIVERY_CREDIT_BYTES, DELIVERY_CREDIT_MESSAGES
from warrenmq.replication.replies import Effect, Ignored, Refused, Reply

if typing.TYPE_CHECKING:
    from warrenmq.cluster.node import Node

__all__ = [
    "ChannelError",
    "ClientSession",
    "Conversation",
    "OnReply",
    "PermissionRefused",
    "Transport",
]

log = logging.getLogger(__name__)

OnReply = typing.Callable[[Reply], None]

# a consumer's written deliveries are credited back in these steps: a quarter of what the
# machine lets it hold, so credit comes back long before it runs out
CREDIT_GRANT_MESSAGES = DELIVERY_CREDIT_MESSAGES // 4
CREDIT_GRANT_BYTES = DELIVERY_CREDIT_BYTES // 4


class Transport(typing.Protocol):
    """The socket side of a connection, as the session sees it."""

    peer: tuple[str, int]
    tls: bool

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def flush_soon(self) -> None: ...

    def recheck(self) -> None:
        """Have the protocol machine decide its held login again (`hold_refusal`)."""


class ChannelError(Exception):
    """A rule the session checks itself (permissions, protocol state) is broken: the front
    closes the channel, or the connection for a connection-level code."""

    def __init__(self, code: ReplyCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class PermissionRefused(ChannelError):
    """What `ClientSession.permit` raises: a refusal the front may hold (`hold_refusal`)."""


class Conversation:
    """A channel (AMQP 0-9-1) or link (AMQP 1.0): what acts in the broker as `ref`."""

    __slots__ = ("answered", "deferred", "open", "proposed", "ref")

    def __init__(self, ref: c.ChannelRef) -> None:
        self.ref = ref
        self.open = True  # False once ended: replies still on their way find nobody waiting
        self.proposed = 0  # commands proposed so far
        self.answered = 0  # of those, how many have had their reply (they come in order)
        # local answers held back until the replies to everything proposed before them are out:
        # (proposals to wait for, the answer)
        self.deferred: collections.deque[tuple[int, typing.Callable[[], None]]] = (
            collections.deque()
        )

    def in_order(self, answer: typing.Callable[[], None]) -> None:
        """Run `answer` once every command proposed before it has been answered: a channel's
        methods are handled in order (AMQP 0-9-1 §2.3.4), so a locally answered method never
        overtakes a replicated one's reply, return or confirm."""
        if self.answered >= self.proposed:
            answer()
        else:
            self.deferred.append((self.proposed, answer))

    def reply_arrived(self) -> None:
        self.answered += 1
        if not self.open:  # the reply ended it (a refusal): what waited behind it is void
            self.deferred.clear()
            return
        while self.deferred and self.deferred[0][0] <= self.answered:
            self.deferred.popleft()[1]()


class ClientSession:
    protocol_name = ""  # for the login_refused log event
    # a resource alarm stops reading a publisher's socket (RabbitMQ's 0-9-1 flow control); a
    # front that can hold publishers back by itself (AMQP 1.0: no link credit) says False
    alarm_pauses_reading = True
    # written deliveries are granted back as message credit too; a front whose clients grant
    # message credit themselves (AMQP 1.0 link credit) says False: only bytes come back
    grants_message_credit = True

    def __init__(self, node: Node, protocol: Transport) -> None:
        self.node = node
        self.protocol = protocol
        self.serial = node.next_connection_serial()
        self.incarnation = node.incarnation  # the node incarnation this session belongs to
        self.access = Access(node)
        self.published = False  # has published: a resource alarm blocks this connection
        self.blocked_reason: str | None = None  # blocked by a resource alarm, reading paused
        self.conversations: dict[int, Conversation] = {}  # by ChannelRef.channel
        self._next_channel_serial = 1
        self._in_flight = 0
        self._window_full = False  # proposals_in_flight_max reached, not yet half drained
        self._reading_paused = False
        self._catching_up = False  # a refusal waits for the node to catch up: not reading
        self._refusal_stands = False  # caught up since the refusal: the answer is final
        self._held_events: list[typing.Any] | None = None  # a held event and those after it
        self._ended = False
        self._writing_paused = False  # the socket is backed up: credit is not granted back
        # (channel serial, consumer tag) -> [deliveries, bytes] written, not yet granted back
        self._written: dict[tuple[int, str], list[int]] = {}

    @property
    def user(self) -> str:
        return self.access.user

    @property
    def vhost(self) -> str:
        return self.access.vhost

    # --- the front's part -----------------------------------------------------------------

    def refuse(
        self, conversation: Conversation, code: ReplyCode, text: str, context: object
    ) -> None:
        """Close the conversation, or the connection for a connection-level code; `context` is
        what the front proposed the command for (an AMQP 0-9-1 method names it in its close)."""
        raise NotImplementedError

    def internal_error(self, context: object) -> None:
        raise NotImplementedError

    def notify_blocked(self, reason: str | None) -> None:
        """Tell the client it is blocked for `reason`, or unblocked (None), if it listens."""
        raise NotImplementedError

    def deliver(self, effect: Effect) -> None:
        """An effect this connection owns: a delivery, a cancelled consumer, a timed-out
        channel."""
        raise NotImplementedError

    def close(self, code: ReplyCode, text: str) -> None:
        """Close the connection from the server side (shutdown, lost majority)."""
        raise NotImplementedError

    # --- login and permissions ------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> bool:
        return check_login(
            self.node,
            username,
            password,
            self.protocol.peer,
            self.protocol_name,
            final=self._refusal_stands,  # else hold_refusal asks again after catching up
        )

    def vhost_refusal(self, username: str, vhost: str) -> str | None:
        return vhost_refusal(self.node, username, vhost)

    def hold_refusal(self) -> bool:
        """A refusal read from this node's state may miss a user, vhost or permission the
        cluster has just added through another node, which the client, told so, uses at once
        (RabbitMQ's metadata changes are seen on every node when they return). So the first
        answer no waits for the node to catch up with the log (`Node.catch_up`), reading
        paused; then the front decides again (`recheck`), and that answer stands."""
        if self._refusal_stands:
            self._refusal_stands = False
            return False
        self._catching_up = True
        self._update_reading()
        self.node.catch_up(self._caught_up)
        return True

    def _caught_up(self) -> None:
        self._catching_up = False
        if self._ended:
            return
        self._update_reading()
        self._refusal_stands = True
        self.recheck()
        self._refusal_stands = False  # allowed this time: the next refusal waits again
        self.protocol.flush_soon()

    def recheck(self) -> None:
        """Decide the held refusal again (`hold_refusal`): a held event, or the login or open
        the protocol machine holds."""
        held, self._held_events = self._held_events, None
        if held is None:
            self.protocol.recheck()
        else:
            self.events_received(held)

    def take_events(
        self, events: list[typing.Any], on_event: typing.Callable[[typing.Any], None]
    ) -> None:
        """Hand the protocol machine's events to `on_event` in order, until one is held
        (`hold_event`): it and all that follow wait for `recheck`."""
        for position, event in enumerate(events):
            if self._held_events is not None:
                self._held_events += events[position:]
                return
            on_event(event)

    def hold_event(self, event: object) -> None:
        """`event` was refused and `hold_refusal` said to wait: it comes again in `recheck`."""
        self._held_events = [event]

    def events_received(self, events: list[typing.Any]) -> None:
        raise NotImplementedError

    def permit(self, action: str, kind: str, name: str) -> None:
        refusal = self.access.refusal(action, kind, name)
        if refusal is not None:
            raise PermissionRefused(ReplyCode.ACCESS_REFUSED, refusal)

    def opened(self, user: str, vhost: str) -> None:
        """The client logged in to `vhost`: count and log it, and refuse it if this node has
        lost the cluster's majority meanwhile."""
        self.access.user, self.access.vhost = user, vhost
        self.node.client_counters.connections_opened += 1
        log_event(
            log,
            "connection_opened",
            f"connection {self.serial} opened: user {user!r}, vhost {vhost!r}",
            **self.log_fields(),
            tls=self.protocol.tls,
            protocol=self.protocol_name,
        )
        if not self.node.serving or self.incarnation != self.node.incarnation:
            self.close(ReplyCode.CONNECTION_FORCED, "node is not part of the cluster majority")

    def log_fields(self) -> dict[str, typing.Any]:
        """Who this connection is, for its structured log events."""
        peer_host, peer_port = self.protocol.peer
        return {
            "connection": self.serial,
            "user": self.user,
            "vhost": self.vhost,
            "peer_host": peer_host,
            "peer_port": peer_port,
        }

    # --- conversations --------------------------------------------------------------------

    def next_ref(self, link: bool = False) -> c.ChannelRef:
        """A new conversation's identity; an AMQP 1.0 link's (`link`) survives refusals."""
        serial = self._next_channel_serial + (c.LINK_CHANNEL_BASE if link else 0)
        ref = c.ChannelRef(self.node.config.node_id, self.incarnation, self.serial, serial)
        self._next_channel_serial += 1
        return ref

    def begin(self, conversation: Conversation) -> None:
        self.conversations[conversation.ref.channel] = conversation
        self.node.client_counters.channels_opened += 1

    def end(self, conversation: Conversation) -> None:
        """The conversation is over: the broker releases its consumers and unacked messages."""
        conversation.open = False
        del self.conversations[conversation.ref.channel]
        self.node.client_counters.channels_closed += 1
        self.node.log.propose(c.CloseChannel(channel=conversation.ref))

    def closed_for(self, reason: str) -> None:
        """The protocol machine has closed the connection: say why, and end the session."""
        log_event(
            log,
            "connection_closed",
            f"connection {self.serial} closed: {reason}",
            **self.log_fields(),
            reason=reason,
        )
        self.connection_lost()

    def connection_lost(self) -> None:
        if self._ended:
            return
        self._ended = True
        self.node.sessions.pop(self.serial, None)
        counters = self.node.client_counters
        counters.channels_closed += len(self.conversations)
        counters.connections_closed += bool(self.vhost)  # opened ones: the rest never counted
        self.node.log.propose(
            c.SessionClosed(
                node=self.node.config.node_id, incarnation=self.incarnation, connection=self.serial
            )
        )

    # --- proposing, with back-pressure ------------------------------------------------------

    def propose(
        self, conversation: Conversation, command: c.Command, context: object, on_reply: OnReply
    ) -> None:
        """Send `command` through the log; `on_reply` gets its reply unless it is a refusal
        (then `refuse`) or the conversation has ended. Reading pauses while
        proposals_in_flight_max replies are outstanding, until half have come."""
        self._in_flight += 1
        conversation.proposed += 1
        if self._in_flight >= self.node.config.proposals_in_flight_max:
            self._update_reading()

        def reply(result: Reply) -> None:
            self._in_flight -= 1
            if self._window_full:
                self._update_reading()
            if not conversation.open or isinstance(result, Ignored):
                return  # the channel ended meanwhile: nobody is waiting for this reply
            try:
                if isinstance(result, Refused):
                    self.refuse(
                        conversation, ReplyCode(result.reply_code), result.reply_text, context
                    )
                else:
                    on_reply(result)
                conversation.reply_arrived()
            except Exception:
                what = getattr(context, "name", context)
                log.exception("connection %s: answering %s failed", self.serial, what)
                self.internal_error(context)
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
        blocked = self.blocked_reason is not None and self.alarm_pauses_reading
        paused = self._window_full or blocked or self._catching_up
        if paused != self._reading_paused:
            self._reading_paused = paused
            if paused:
                self.protocol.pause_reading()
            else:
                self.protocol.resume_reading()

    def update_blocked(self) -> None:
        """RabbitMQ's flow control: while a memory or disk alarm is in effect anywhere in the
        cluster, a connection that publishes is told so and not read from, until every alarm
        clears (docs: connection blocked notifications)."""
        reason = self.node.blocked_reason if self.published else None
        if reason == self.blocked_reason:
            return
        self.blocked_reason = reason
        self.notify_blocked(reason)
        log_event(
            log,
            "connection_blocked" if reason else "connection_unblocked",
            f"connection {self.serial} {f'blocked: {reason}' if reason else 'unblocked'}",
            connection=self.serial,
            reason=reason,
        )
        self._update_reading()

    def publishing(self) -> None:
        """The client publishes: from now on a resource alarm blocks it."""
        if not self.published:
            self.published = True
            if self.node.blocked_reason is not None:
                self.update_blocked()

    # --- delivery credit ------------------------------------------------------------------

    def writing_paused(self, paused: bool) -> None:
        """Write-side back-pressure (shared/STYLE.md rule 10): while this connection's socket is
        backed up, its consumers' delivery credit is not granted back, so once they hold what
        the machine allows (DELIVERY_CREDIT_*), messages wait in their queues, not in this
        node's memory. When it drains, what was written meanwhile is granted at once."""
        self._writing_paused = paused
        if not paused:
            for key in list(self._written):
                self._grant_credit(key)

    def count_written(self, conversation: Conversation, consumer_tag: str, size: int) -> None:
        key = (conversation.ref.channel, consumer_tag)
        written = self._written.setdefault(key, [0, 0])
        written[0] += 1
        written[1] += size
        if not self._writing_paused and (
            written[0] >= CREDIT_GRANT_MESSAGES or written[1] >= CREDIT_GRANT_BYTES
        ):
            self._grant_credit(key)

    def _grant_credit(self, key: tuple[int, str]) -> None:
        messages, size = self._written.pop(key)
        conversation = self.conversations.get(key[0])
        if conversation is not None:
            messages = messages if self.grants_message_credit else 0
            self.node.log.propose(
                c.GrantCredit(
                    channel=conversation.ref, consumer_tag=key[1], messages=messages, bytes=size
                )
            )
