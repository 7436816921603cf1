"""The basic class: publish, consume and cancel, get, qos, ack, nack and reject, recover."""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass

from pamqp import commands

from warrenmq.amqp.codec import unchecked
from warrenmq.amqp.events import ContentReceived, Event, MethodReceived
from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.client import ChannelError
from warrenmq.cluster.methods import confirm
from warrenmq.cluster.methods.names import generated_name, queue_name
from warrenmq.cluster.plain import plain_table
from warrenmq.cluster.rewriting import (
    REPLY_TO_BYTES,
    expiration_error,
    outgoing_properties,
)
from warrenmq.replication import commands as broker
from warrenmq.replication.replies import GetEmpty, GetOk, MessageCount, Reply, Routed

if typing.TYPE_CHECKING:
    from warrenmq.cluster.session import ChannelSession, Session

# single acks joined to the ack before them into one Settle, at most: a read of 64 KiB holds
# about 3,000 ack frames
JOINED_ACKS_MAX = 1024


@dataclass(frozen=True, slots=True)
class AcksReceived:
    """A basic.ack (`method`) and the single acks that came right after it on its channel in
    the same read (`more`, their delivery tags in order): what basic.ack's handler gets."""

    channel: int
    method: commands.Basic.Ack
    more: tuple[int, ...] = ()


def join_acks(events: list[Event]) -> list[Event | AcksReceived]:
    """The events of one read, each basic.ack as an AcksReceived that carries the single acks
    following it back to back on the same channel, up to JOINED_ACKS_MAX of them. A consumer
    that acks every message then costs the log one command per read, not one per message."""
    joined: list[Event | AcksReceived] = []
    run: tuple[int, commands.Basic.Ack, list[int]] | None = None  # the AcksReceived growing
    for event in events:
        if type(event) is MethodReceived and type(event.method) is commands.Basic.Ack:
            ack = event.method
            if (
                run is not None
                and run[0] == event.channel
                and not ack.multiple
                and len(run[2]) < JOINED_ACKS_MAX
            ):
                run[2].append(ack.delivery_tag)
                continue
            if run is not None:
                joined.append(AcksReceived(run[0], run[1], tuple(run[2])))
            run = (event.channel, ack, [])
            continue
        if run is not None:
            joined.append(AcksReceived(run[0], run[1], tuple(run[2])))
            run = None
        joined.append(event)
    if run is not None:
        joined.append(AcksReceived(run[0], run[1], tuple(run[2])))
    return joined


def on_basic_publish(session: Session, channel: ChannelSession, event: ContentReceived) -> None:
    method = typing.cast(commands.Basic.Publish, event.method)  # HANDLERS chose it by type
    if method.immediate:
        raise ChannelError(ReplyCode.NOT_IMPLEMENTED, "immediate=true")
    properties = event.properties
    session.permit("write", "exchange", method.exchange)
    # RabbitMQ's order: write permission, then the validated user-id, then the expiration
    user_id = properties.text("user_id")
    if user_id is not None and user_id != session.user:
        raise ChannelError(
            ReplyCode.PRECONDITION_FAILED,
            f"user_id property set to '{user_id}' but authenticated user was '{session.user}'",
        )
    expiration = properties.text("expiration")
    if expiration is not None:
        error = expiration_error(expiration)
        if error is not None:
            raise ChannelError(
                ReplyCode.PRECONDITION_FAILED, f"invalid expiration '{expiration}': {error}"
            )
    counters = session.node.counters
    counters.received += 1
    confirm_tag = 0
    if channel.confirm:
        channel.confirm_tag += 1
        confirm_tag = channel.confirm_tag
        counters.received_confirm += 1
    replies_to_channel = properties.shortstr("reply_to") == REPLY_TO_BYTES
    command = broker.Publish(
        channel=channel.ref,
        vhost=session.vhost,
        exchange=method.exchange,
        routing_key=method.routing_key,
        headers=plain_table(properties.headers) if properties.headers else None,
        properties=outgoing_properties(properties, channel.ref, replies_to_channel),
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
            session.connection.send_content(
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
            confirm.nack_publish(session, channel, confirm_tag)
        elif confirm_tag:
            confirm.confirm_publish(session, channel, confirm_tag)

    session.propose(channel, command, method, on_reply)
    session.publishing()


def on_basic_qos(session: Session, channel: ChannelSession, method: commands.Basic.Qos) -> None:
    if method.prefetch_size:
        raise ChannelError(ReplyCode.NOT_IMPLEMENTED, f"prefetch_size!=0 ({method.prefetch_size})")
    # global QoS denied (deprecated_features.permit.global_qos = false): RabbitMQ takes the
    # prefetch as per consumer
    global_ = method.global_ and session.node.config.permit_global_qos
    command = broker.Qos(channel=channel.ref, prefetch_count=method.prefetch_count, global_=global_)
    ok = session.reply_ok(channel, method, commands.Basic.QosOk())
    session.propose(channel, command, method, ok)


def on_basic_consume(
    session: Session, channel: ChannelSession, method: commands.Basic.Consume
) -> None:
    consumer_tag = method.consumer_tag or generated_name("amq.ctag")
    queue = queue_name(channel, method.queue)
    if queue != broker.REPLY_TO:
        session.permit("read", "queue", queue)
    command = broker.Consume(
        channel=channel.ref,
        vhost=session.vhost,
        queue=queue,
        consumer_tag=consumer_tag,
        no_ack=method.no_ack,
        exclusive=method.exclusive,
        arguments=plain_table(method.arguments),
    )
    ok = session.reply_ok(channel, method, commands.Basic.ConsumeOk(consumer_tag=consumer_tag))
    session.propose(channel, command, method, ok)


def on_basic_cancel(
    session: Session, channel: ChannelSession, method: commands.Basic.Cancel
) -> None:
    command = broker.Cancel(channel=channel.ref, consumer_tag=method.consumer_tag or "")
    ok = session.reply_ok(
        channel, method, commands.Basic.CancelOk(consumer_tag=method.consumer_tag)
    )
    session.propose(channel, command, method, ok)


def on_basic_get(session: Session, channel: ChannelSession, method: commands.Basic.Get) -> None:
    queue = queue_name(channel, method.queue)
    session.permit("read", "queue", queue)
    command = broker.Get(
        channel=channel.ref, vhost=session.vhost, queue=queue, no_ack=method.no_ack
    )

    def on_reply(result: Reply) -> None:
        if isinstance(result, GetEmpty):
            session.node.counters.get_empty += 1
            session.send(channel, commands.Basic.GetEmpty())
            return
        assert isinstance(result, GetOk)
        get_ok = unchecked(
            commands.Basic.GetOk,
            delivery_tag=result.delivery_tag,
            redelivered=result.redelivered,
            exchange=result.exchange,
            routing_key=result.routing_key,
            message_count=result.message_count,
        )
        session.send_message(channel, get_ok, result)

    session.propose(channel, command, method, on_reply)


def on_basic_ack(session: Session, channel: ChannelSession, acks: AcksReceived) -> None:
    method = acks.method
    command = broker.Settle(
        channel=channel.ref,
        delivery_tag=method.delivery_tag,
        multiple=method.multiple,
        more=acks.more,
    )

    def on_reply(result: Reply) -> None:
        assert isinstance(result, MessageCount)
        session.node.counters.acknowledged += result.message_count

    session.propose(channel, command, method, on_reply)


def on_basic_nack(session: Session, channel: ChannelSession, method: commands.Basic.Nack) -> None:
    command = broker.Reject(
        channel=channel.ref,
        delivery_tag=method.delivery_tag,
        multiple=method.multiple,
        requeue=method.requeue,
        now_ms=int(time.time() * 1000),
    )
    session.propose(channel, command, method, _no_reply)


def on_basic_reject(
    session: Session, channel: ChannelSession, method: commands.Basic.Reject
) -> None:
    command = broker.Reject(
        channel=channel.ref,
        delivery_tag=method.delivery_tag or 0,
        multiple=False,
        requeue=method.requeue,
        now_ms=int(time.time() * 1000),
    )
    session.propose(channel, command, method, _no_reply)


def on_basic_recover(
    session: Session,
    channel: ChannelSession,
    method: commands.Basic.Recover | commands.Basic.RecoverAsync,
) -> None:
    if not method.requeue:
        raise ChannelError(ReplyCode.NOT_IMPLEMENTED, "requeue=false")
    ok = commands.Basic.RecoverOk() if isinstance(method, commands.Basic.Recover) else None

    def on_reply(_: Reply) -> None:
        if ok is not None:
            session.send(channel, ok)

    session.propose(channel, broker.Recover(channel=channel.ref), method, on_reply)


def _no_reply(_: Reply) -> None:
    """basic.ack, nack and reject have no reply; only a refusal (unknown tag) is answered."""
