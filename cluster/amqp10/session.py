"""One AMQP 1.0 client connection on this node: links in, broker commands out, outcomes back.

Every link the client attaches is a `Conversation` with its own ChannelRef, so a consumer
link owns its deliveries in the broker as a 0-9-1 channel does, and detaching it (or losing
the connection) returns what it held. Links are of three kinds:

- a publisher (the client sends): each transfer is one Publish to the link's target, or to
  the message's `to` on the anonymous terminus; an unsettled one is answered accepted once
  the entry is committed on a majority, rejected where 0-9-1 would nack, released where it
  would be returned (unroutable). Publishers get RabbitMQ's link credit: 170, topped up below
  85 while fewer than 170 are unconfirmed, and none while a resource alarm is in effect.
- a consumer (the client receives from `/queues/:queue`): a Consume in link-credit mode, so
  the queue hands the link no more than the credit the client gave it (drain included); the
  client's outcomes settle, requeue or dead-letter as RabbitMQ's table says.
- the `/management` pair: HTTP over AMQP (management.py).
"""

from __future__ import annotations

import collections
import logging
import time
import typing

from proton import Condition, Delivery, Link, symbol

from warrenmq.amqp.properties import PropertyError, parse_properties
from warrenmq.amqp.spec import ReplyCode
from warrenmq.amqp.v1.address import AddressError, Target, parse_source, parse_target
from warrenmq.amqp.v1.engine import (
    Closed,
    DeliveryUpdated,
    Engine,
    Flow,
    LinkClosed,
    LinkOpened,
    Opened,
    SessionClosed,
    SessionOpened,
    Transfer,
    V1Event,
)
from warrenmq.amqp.v1.message import (
    MessageError,
    Sections,
    consumer_payload,
    from_0_9_1,
    headers_of,
    parse_message,
)
from warrenmq.amqp.v1.sasl import Login
from warrenmq.cluster.amqp10 import management
from warrenmq.cluster.amqp10.outcomes import condition_of, death_annotations
from warrenmq.cluster.client import ChannelError, ClientSession, Conversation, PermissionRefused
from warrenmq.replication import commands as broker
from warrenmq.replication.replies import ChannelTimedOut, Deliver, Effect, Reply, Routed

if typing.TYPE_CHECKING:
    from warrenmq.amqp.v1.transport import V1Protocol
    from warrenmq.cluster.node import Node

__all__ = ["LinkState", "V1Session"]

log = logging.getLogger(__name__)

PUBLISHER_CREDIT = 170  # RabbitMQ's max_link_credit
PUBLISHER_TOP_UP_BELOW = PUBLISHER_CREDIT // 2
MANAGEMENT_ADDRESS = "/management"


class LinkState(Conversation):
    """What Warren keeps of one attached link."""

    __slots__ = (
        "buffer",
        "consumer_tag",
        "kind",
        "link",
        "machine_credit",
        "target",
        "unconfirmed",
    )

    def __init__(self, ref: broker.ChannelRef, link: Link, kind: str) -> None:
        super().__init__(ref)
        self.link = link
        self.kind = kind  # "publisher", "consumer" or "management"
        self.target: Target | None = None  # a publisher's fixed target (None: anonymous)
        self.unconfirmed = 0  # a publisher's transfers not yet answered
        self.consumer_tag = ""
        self.machine_credit = 0  # a consumer's credit the queue may still use
        self.buffer: collections.deque[Deliver] = collections.deque()  # beyond link credit

    @property
    def number(self) -> int:
        """How the management API numbers it: its serial among the connection's links."""
        return self.ref.channel


class V1Session(ClientSession):
    protocol_name = "amqp1.0"
    protocol: V1Protocol
    # an alarm withholds publishers' link credit; the socket is read on, so consumers on the
    # same connection settle (RabbitMQ closes the session's incoming window to the same end)
    alarm_pauses_reading = False
    grants_message_credit = False  # message credit is the client's link credit (_on_flow)

    def __init__(self, node: Node, protocol: V1Protocol) -> None:
        super().__init__(node, protocol)
        self.links: dict[Link, LinkState] = {}
        self.management = management.ManagementNode(self)
        self.client_properties: dict[str, typing.Any] = {}

    @property
    def mechanisms(self) -> tuple[str, ...]:
        return ("PLAIN", "ANONYMOUS") if self.node.config.anonymous_login_user else ("PLAIN",)

    @property
    def engine(self) -> Engine:
        engine = self.protocol.engine
        assert engine is not None
        return engine

    # --- login -------------------------------------------------------------------------------

    def check_login(self, login: Login) -> str | None:
        if login.mechanism == "ANONYMOUS":
            config = self.node.config
            user, password = config.anonymous_login_user, config.anonymous_login_pass
        else:
            user, password = login.username, login.password
        return user if user and self.authenticate(user, password) else None

    # --- events -------------------------------------------------------------------------------

    def events_received(self, events: list[V1Event]) -> None:
        self.take_events(events, self._on_guarded_event)
        self.protocol.flush_soon()

    def _on_guarded_event(self, event: V1Event) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("connection %s: AMQP 1.0 %s failed", self.serial, event)
            self.engine.close("amqp:internal-error", "internal error")

    def _on_event(self, event: V1Event) -> None:
        if isinstance(event, Transfer):
            link = event.delivery.link
            state = self.links.get(link)
            if state is not None:
                self._on_transfer(state, event.delivery, event.message)
            elif self.management.owns(link):
                self.management.request(link, event.delivery, event.message)
        elif isinstance(event, DeliveryUpdated):
            state = self.links.get(event.delivery.link)
            if state is not None and state.kind == "consumer":
                self._on_outcome(state, event.delivery)
        elif isinstance(event, Flow):
            state = self.links.get(event.link)
            if state is not None:
                self._on_flow(state)
            elif self.management.owns(event.link):
                self.management.flow(event.link)
        elif isinstance(event, LinkOpened):
            self._on_attach(event.link)
        elif isinstance(event, LinkClosed):
            self._on_detach(event.link)
        elif isinstance(event, SessionOpened):
            event.session.open()
        elif isinstance(event, SessionClosed):
            for state in list(self.links.values()):
                if state.link.session == event.session:
                    self._end_link(state)
        elif isinstance(event, Opened):
            self._on_open(event)
        elif isinstance(event, Closed):
            self.closed_for(event.reason)

    def _on_open(self, event: Opened) -> None:
        user = self.engine.user
        vhost = self.node.config.default_vhost
        if event.hostname.startswith("vhost:"):
            vhost = event.hostname[len("vhost:") :]
        self.client_properties = event.properties
        refusal = self.vhost_refusal(user, vhost)
        if not self.node.broker.query_vhost_exists(vhost):
            refusal = f"AMQP 1.0 connection failed: virtual host '{vhost}' does not exist"
        if refusal is not None and self.hold_refusal():
            self.hold_event(event)
            return
        if refusal is not None:  # RabbitMQ closes the socket, in the handshake, with no frame
            for closed in self.engine.refuse_open("amqp:unauthorized-access", refusal):
                self._on_event(closed)
            return
        self.engine.accept()
        self.opened(user, vhost)

    # --- links ----------------------------------------------------------------------------

    def _on_attach(self, link: Link) -> None:
        source, target = link.remote_source, link.remote_target
        link.source.copy(source)
        link.target.copy(target)
        address = (target.address if link.is_receiver else source.address) or None
        if (
            link.remote_rcv_settle_mode == Link.RCV_SECOND
            and link.remote_snd_settle_mode != Link.SND_SETTLED
        ):
            self.link_error(link, "amqp:not-implemented", "rcv-settle-mode second not supported")
            return
        if address == MANAGEMENT_ADDRESS:
            self.management.attach(link)
            return
        state = LinkState(
            self.next_ref(link=True), link, "publisher" if link.is_receiver else "consumer"
        )
        try:
            if link.is_receiver:
                self._attach_publisher(state, address)
            else:
                self._attach_consumer(state, address)
        except PermissionRefused as error:
            if self.hold_refusal():
                self.hold_event(LinkOpened(link))
            else:
                self.link_error(link, condition_of(error.code), error_text(error))
        except (AddressError, ChannelError) as error:
            code = error.code if isinstance(error, ChannelError) else ReplyCode.NOT_FOUND
            condition = "amqp:invalid-field" if isinstance(error, AddressError) else None
            self.link_error(link, condition or condition_of(code), error_text(error))

    def link_error(self, link: Link, condition: str, description: str) -> None:
        """Refuse or end a link: attach (if not yet) and detach it with the error."""
        if not link.state & Link.LOCAL_ACTIVE:
            link.open()
        link.condition = Condition(condition, description)
        link.close()
        state = self.links.get(link)
        if state is not None:
            self._end_link(state)

    def _attach_publisher(self, state: LinkState, address: str | None) -> None:
        if address is not None:
            state.target = parse_target(address)
            self.permit("write", "exchange", state.target.exchange)
            if state.target.queue is not None and not self._queue_exists(state.target.queue):
                raise ChannelError(ReplyCode.NOT_FOUND, self._no_queue(state.target.queue))
            if state.target.queue is None and not self._exchange_exists(state.target.exchange):
                raise ChannelError(ReplyCode.NOT_FOUND, self._no_exchange(state.target.exchange))
        link = state.link
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = Link.RCV_FIRST
        self._begin_link(state)
        link.open()
        self.publishing()  # blocked now if an alarm is in effect: then no credit yet
        self._top_up(state)

    def _attach_consumer(self, state: LinkState, address: str | None) -> None:
        queue = parse_source(address or "")
        self.permit("read", "queue", queue)
        link = state.link
        settled = link.remote_snd_settle_mode == Link.SND_SETTLED
        link.snd_settle_mode = Link.SND_SETTLED if settled else Link.SND_UNSETTLED
        link.rcv_settle_mode = Link.RCV_FIRST
        state.consumer_tag = f"amq.ctag-{state.ref.connection}-{state.ref.channel}"
        self._begin_link(state)
        command = broker.Consume(
            channel=state.ref,
            vhost=self.vhost,
            queue=queue,
            consumer_tag=state.consumer_tag,
            no_ack=settled,
            exclusive=False,
            arguments=_consumer_arguments(link),
            credit=0,
        )

        def on_reply(_: Reply) -> None:
            link.open()
            self._on_flow(state)

        self.propose(state, command, link, on_reply)

    @property
    def channels(self) -> dict[int, LinkState]:
        """Consumer and publisher links by number, as the management API lists channels."""
        return {state.number: state for state in self.links.values()}

    def _begin_link(self, state: LinkState) -> None:
        self.links[state.link] = state
        self.begin(state)

    def _on_detach(self, link: Link) -> None:
        if self.management.owns(link):
            self.management.detach(link)
            return
        state = self.links.get(link)
        if state is not None:
            self._end_link(state)

    def _end_link(self, state: LinkState) -> None:
        """The link is gone: what it held goes back to its queue (CloseChannel)."""
        if self.links.pop(state.link, None) is not None:
            self.end(state)

    # --- publishing -----------------------------------------------------------------------

    def _on_transfer(self, state: LinkState, delivery: Delivery, payload: bytes) -> None:
        try:
            sections = parse_message(payload)
            target = state.target or self._anonymous_target(sections)
        except MessageError as error:
            self._reject(delivery, "amqp:decode-error", str(error))
            return
        except AddressError as error:
            self._reject(delivery, "amqp:invalid-field", str(error))
            return
        except ChannelError as error:
            self._reject(delivery, condition_of(error.code), error.text)
            return
        counters = self.node.counters
        counters.received += 1
        command = self._publish(state, target, sections, payload)
        presettled = delivery.settled
        if not presettled:
            counters.received_confirm += 1
            state.unconfirmed += 1

        def on_reply(result: Reply) -> None:
            assert isinstance(result, Routed)
            self._confirmed(state, presettled)
            if not result.queue_count:
                counters.unroutable_returned += not presettled
                self._settle(delivery, Delivery.RELEASED)
            elif result.rejected:
                counters.routed += 1
                self._reject(delivery, "amqp:resource-limit-exceeded", "queue full")
            else:
                counters.routed += 1
                self._settle(delivery, Delivery.ACCEPTED)

        self.propose(state, command, delivery, on_reply)
        self._top_up(state)

    def _anonymous_target(self, sections: Sections) -> Target:
        to = sections.message.address
        if not to:
            raise AddressError("anonymous terminus: the message has no 'to'")
        target = parse_target(str(to))
        self.permit("write", "exchange", target.exchange)
        if target.queue is None and not self._exchange_exists(target.exchange):
            raise ChannelError(ReplyCode.NOT_FOUND, self._no_exchange(target.exchange))
        return target

    def _publish(
        self, state: LinkState, target: Target, sections: Sections, payload: bytes
    ) -> broker.Publish:
        headers = headers_of(sections)
        cc = sections.annotations.get("x-cc")
        if isinstance(cc, list):
            headers = {**(headers or {}), "CC": [str(key) for key in cc]}
        ttl = sections.message.ttl if sections.has_header else 0
        return broker.Publish(
            channel=state.ref,
            vhost=self.vhost,
            exchange=target.exchange,
            routing_key=target.routing_key,
            headers=headers,
            properties=broker.AMQP_1_0_PROPERTIES,
            body=payload,
            now_ms=int(time.time() * 1000),
            expiration=str(int(ttl * 1000)) if ttl else None,
            priority=sections.priority if sections.has_header else 0,
        )

    def _confirmed(self, state: LinkState, presettled: bool) -> None:
        if not presettled:
            state.unconfirmed -= 1
        self._top_up(state)

    def _top_up(self, state: LinkState) -> None:
        """RabbitMQ's publisher credit: back to 170 once below 85 and fewer than 170 are
        unconfirmed; none while this connection is blocked by a resource alarm."""
        link = state.link
        if self.blocked_reason is not None or not state.open or not link.state & Link.LOCAL_ACTIVE:
            return
        if link.credit < PUBLISHER_TOP_UP_BELOW and state.unconfirmed < PUBLISHER_CREDIT:
            link.flow(PUBLISHER_CREDIT - link.credit)

    def _settle(self, delivery: Delivery, outcome: int) -> None:
        """Settle a transfer, with `outcome` unless the client sent it settled."""
        if not delivery.settled:
            delivery.update(outcome)
        delivery.settle()

    def _reject(self, delivery: Delivery, condition: str, description: str) -> None:
        if not delivery.settled:
            delivery.local.condition = Condition(condition, description)
        self._settle(delivery, Delivery.REJECTED)

    # --- consuming ----------------------------------------------------------------------------

    def _on_flow(self, state: LinkState) -> None:
        if state.kind != "consumer" or not state.open:
            if state.kind == "publisher":
                self._top_up(state)
            return
        link = state.link
        while state.buffer and link.credit > 0:
            self._send(state, state.buffer.popleft())
        wanted = link.credit - state.machine_credit
        if wanted > 0:
            state.machine_credit += wanted
            self.node.log.propose(
                broker.GrantCredit(
                    channel=state.ref, consumer_tag=state.consumer_tag, messages=wanted, bytes=0
                )
            )
        if link.drain_mode and link.credit > 0:
            command = broker.DrainCredit(channel=state.ref, consumer_tag=state.consumer_tag)

            def drained(_: Reply) -> None:
                while state.buffer and link.credit > 0:
                    self._send(state, state.buffer.popleft())
                state.machine_credit = 0
                if link.drain_mode:
                    link.drained()

            self.propose(state, command, link, drained)

    def deliver(self, effect: Effect) -> None:
        state = typing.cast("LinkState | None", self.conversations.get(effect.owner.channel))
        if state is None or state.kind != "consumer":
            return
        if isinstance(effect, Deliver):
            state.machine_credit = max(0, state.machine_credit - 1)
            if state.link.credit > 0 and not state.buffer:
                self._send(state, effect)
            else:
                state.buffer.append(effect)
        elif isinstance(effect, ChannelTimedOut):  # its unsettled messages go back, counted
            self.link_error(
                state.link,
                "amqp:precondition-failed",
                f"delivery acknowledgement timed out. Timeout value used: {effect.timeout_ms} ms",
            )
        else:  # CancelConsumer: the queue was deleted
            self.link_error(state.link, "amqp:resource-deleted", "the queue was deleted")
        self.protocol.flush_soon()

    def _send(self, state: LinkState, effect: Deliver) -> None:
        link = state.link
        payload = consumer_message(effect)
        delivery = link.delivery(str(effect.delivery_tag))
        link.send(payload)
        link.advance()
        if link.snd_settle_mode == Link.SND_SETTLED:
            delivery.settle()
        counters = self.node.counters
        counters.delivered += 1
        counters.redelivered += effect.redelivered
        self.count_written(state, state.consumer_tag, len(effect.body))

    def _on_outcome(self, state: LinkState, delivery: Delivery) -> None:
        if not delivery.settled:
            return  # an outcome without settling: RabbitMQ waits for the settlement too
        tag = int(delivery.tag)
        outcome = delivery.remote_state
        now_ms = int(time.time() * 1000)
        command: broker.Command
        if outcome == Delivery.ACCEPTED:
            command = broker.Settle(channel=state.ref, delivery_tag=tag, multiple=False)
        elif outcome == Delivery.REJECTED:
            command = broker.Reject(
                channel=state.ref, delivery_tag=tag, multiple=False, requeue=False, now_ms=now_ms
            )
        elif outcome == Delivery.MODIFIED:
            modified = delivery.remote
            command = broker.Reject(
                channel=state.ref,
                delivery_tag=tag,
                multiple=False,
                requeue=not modified.undeliverable,
                now_ms=now_ms,
                count_delivery=bool(modified.failed),
            )
        else:  # released, and a settlement with no outcome: the link's default, released
            command = broker.Reject(
                channel=state.ref,
                delivery_tag=tag,
                multiple=False,
                requeue=True,
                now_ms=now_ms,
                count_delivery=False,
            )
        delivery.settle()
        self.propose(state, command, delivery, _no_reply)

    # --- the front's part -------------------------------------------------------------------

    def refuse(
        self, conversation: Conversation, code: ReplyCode, text: str, context: object
    ) -> None:
        state = typing.cast(LinkState, conversation)
        if code.is_connection_error:
            self.engine.close(condition_of(code), text)
        elif isinstance(context, Delivery) and state.kind == "publisher":
            self._confirmed(state, context.settled)
            self._reject(context, condition_of(code), text)
        else:
            self.link_error(state.link, condition_of(code), text)
        self.protocol.flush_soon()

    def internal_error(self, context: object) -> None:
        self.engine.close("amqp:internal-error", "internal error")

    def close(self, code: ReplyCode, text: str) -> None:
        self.engine.close(
            "amqp:connection:forced" if code == ReplyCode.CONNECTION_FORCED else condition_of(code),
            text,
        )
        self.protocol.flush_soon()

    def notify_blocked(self, reason: str | None) -> None:
        """AMQP 1.0 has no connection.blocked: publishers get no more link credit meanwhile."""
        if reason is None:
            for state in list(self.links.values()):
                if state.kind == "publisher":
                    self._top_up(state)
            self.protocol.flush_soon()

    def connection_details(self) -> dict[str, typing.Any]:
        engine = self.engine
        return {
            "protocol": "AMQP 1-0",
            "auth_mechanism": engine.sasl.mechanism,
            "client_properties": {
                key: value if isinstance(value, (str, int, float, bool)) else str(value)
                for key, value in self.client_properties.items()
            },
            "timeout": int(engine.settings.idle_timeout_s),
            "frame_max": engine.settings.max_frame_bytes,
            "channel_max": engine.settings.channel_max,
        }

    # --- lookups ----------------------------------------------------------------------------

    def _queue_exists(self, queue: str) -> bool:
        return self.node.broker.query_queue(self.vhost, queue) is not None

    def _exchange_exists(self, exchange: str) -> bool:
        vhost = self.node.broker.query_vhost(self.vhost)
        return vhost is not None and exchange in vhost.exchanges

    def _no_queue(self, queue: str) -> str:
        return f"no queue '{queue}' in vhost '{self.vhost}'"

    def _no_exchange(self, exchange: str) -> str:
        return f"no exchange '{exchange}' in vhost '{self.vhost}'"


def consumer_message(effect: Deliver) -> bytes:
    """What a 1.0 consumer receives: a 1.0 message's bare message as published, or a 0-9-1
    message mapped, with RabbitMQ's header and annotations (x-exchange, x-routing-key, deaths)."""
    annotations: dict[str, object] = {}
    if effect.properties == broker.AMQP_1_0_PROPERTIES:
        sections = parse_message(effect.body.read())
        durable, priority, bare = sections.durable, sections.priority, sections.bare
        annotations.update(
            (name, value)
            for name, value in sections.annotations.items()
            if name.startswith("x-") and name not in ("x-exchange", "x-routing-key")
        )
    else:
        try:
            properties = parse_properties(effect.properties)
        except PropertyError:
            properties = parse_properties(b"\x00\x00")
        durable, priority, mapped, bare = from_0_9_1(properties, effect.body.read())
        annotations.update(mapped)
    annotations["x-exchange"] = effect.exchange
    annotations["x-routing-key"] = effect.routing_key
    delivery_count = 0
    if effect.annotations is not None:
        delivery_count = effect.annotations.delivery_count
        annotations.update(death_annotations(effect.annotations))
    return consumer_payload(
        durable=durable,
        priority=priority,
        delivery_count=delivery_count,
        first_acquirer=not effect.redelivered,
        annotations=annotations,
        bare=bare,
    )


def _consumer_arguments(link: Link) -> dict[str, typing.Any]:
    """RabbitMQ's consumer link property: `rabbitmq:priority` (an int) is x-priority."""
    priority = (link.remote_properties or {}).get(symbol("rabbitmq:priority"))
    if isinstance(priority, int) and not isinstance(priority, bool):
        return {"x-priority": int(priority)}
    return {}


def error_text(error: Exception) -> str:
    return error.text if isinstance(error, ChannelError) else str(error)


def _no_reply(_: Reply) -> None:
    """A settlement has no reply; only a refusal (unknown delivery) is answered."""
