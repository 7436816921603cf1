"""The queue class: declare, bind and unbind, purge, delete."""

from __future__ import annotations

import typing

from pamqp import commands

from warrenmq.amqp.codec import unchecked
from warrenmq.cluster.methods.names import generated_name, queue_name
from warrenmq.cluster.plain import plain_table
from warrenmq.replication import commands as broker
from warrenmq.replication.replies import MessageCount, QueueDeclared, Reply

if typing.TYPE_CHECKING:
    from warrenmq.cluster.session import ChannelSession, Session


def on_queue_declare(
    session: Session, channel: ChannelSession, method: commands.Queue.Declare
) -> None:
    server_named = not method.passive and not method.queue
    queue = generated_name("amq.gen") if server_named else queue_name(channel, method.queue)
    if not method.passive:
        session.permit("configure", "queue", queue)
        dead_letter_exchange = (method.arguments or {}).get("x-dead-letter-exchange")
        if isinstance(dead_letter_exchange, str):
            session.permit("read", "queue", queue)
            session.permit("write", "exchange", dead_letter_exchange)
    command = broker.DeclareQueue(
        channel=channel.ref,
        vhost=session.vhost,
        queue=queue,
        server_named=server_named,
        passive=method.passive,
        durable=method.durable,
        exclusive=method.exclusive,
        auto_delete=method.auto_delete,
        arguments=plain_table(method.arguments),
        permit_transient=session.node.config.permit_transient_nonexcl_queues,
    )

    def on_reply(result: Reply) -> None:
        assert isinstance(result, QueueDeclared)
        channel.last_queue = result.queue
        if not method.nowait:
            session.send(
                channel,
                unchecked(
                    commands.Queue.DeclareOk,
                    queue=result.queue,
                    message_count=result.message_count,
                    consumer_count=result.consumer_count,
                ),
            )

    session.propose(channel, command, method, on_reply)


def on_queue_bind(
    session: Session, channel: ChannelSession, method: commands.Queue.Bind | commands.Queue.Unbind
) -> None:
    """queue.bind and queue.unbind; an empty queue and key mean the last declared queue."""
    bind = isinstance(method, commands.Queue.Bind)
    queue = queue_name(channel, method.queue)
    routing_key = method.routing_key if method.queue or method.routing_key else queue
    session.permit("write", "queue", queue)
    session.permit("read", "exchange", method.exchange)
    command = (broker.BindQueue if bind else broker.UnbindQueue)(
        channel=channel.ref,
        vhost=session.vhost,
        queue=queue,
        exchange=method.exchange,
        routing_key=routing_key,
        arguments=plain_table(method.arguments),
    )
    ok = commands.Queue.BindOk() if bind else commands.Queue.UnbindOk()
    session.propose(channel, command, method, session.reply_ok(channel, method, ok))


def on_queue_purge(session: Session, channel: ChannelSession, method: commands.Queue.Purge) -> None:
    queue = queue_name(channel, method.queue)
    session.permit("read", "queue", queue)
    command = broker.PurgeQueue(channel=channel.ref, vhost=session.vhost, queue=queue)

    def on_reply(result: Reply) -> None:
        assert isinstance(result, MessageCount)
        if not method.nowait:
            session.send(channel, commands.Queue.PurgeOk(message_count=result.message_count))

    session.propose(channel, command, method, on_reply)


def on_queue_delete(
    session: Session, channel: ChannelSession, method: commands.Queue.Delete
) -> None:
    queue = queue_name(channel, method.queue)
    session.permit("configure", "queue", queue)
    command = broker.DeleteQueue(
        channel=channel.ref,
        vhost=session.vhost,
        queue=queue,
        if_unused=method.if_unused,
        if_empty=method.if_empty,
    )

    def on_reply(result: Reply) -> None:
        assert isinstance(result, MessageCount)
        if not method.nowait:
            session.send(channel, commands.Queue.DeleteOk(message_count=result.message_count))

    session.propose(channel, command, method, on_reply)
