"""The exchange class: declare, delete, bind and unbind."""

from __future__ import annotations

import typing

from pamqp import commands

from warrenmq.cluster.plain import plain_table
from warrenmq.replication import commands as broker

if typing.TYPE_CHECKING:
    from warrenmq.cluster.session import ChannelSession, Session


def on_exchange_declare(
    session: Session, channel: ChannelSession, method: commands.Exchange.Declare
) -> None:
    if not method.passive:
        session.permit("configure", "exchange", method.exchange)
        alternate = (method.arguments or {}).get("alternate-exchange")
        if isinstance(alternate, str):
            session.permit("read", "exchange", method.exchange)
            session.permit("write", "exchange", alternate)
    command = broker.DeclareExchange(
        channel=channel.ref,
        vhost=session.vhost,
        exchange=method.exchange,
        type=method.exchange_type,
        passive=method.passive,
        durable=method.durable,
        auto_delete=method.auto_delete,
        internal=method.internal,
        arguments=plain_table(method.arguments),
    )
    ok = session.reply_ok(channel, method, commands.Exchange.DeclareOk())
    session.propose(channel, command, method, ok)


def on_exchange_delete(
    session: Session, channel: ChannelSession, method: commands.Exchange.Delete
) -> None:
    session.permit("configure", "exchange", method.exchange)
    command = broker.DeleteExchange(
        channel=channel.ref,
        vhost=session.vhost,
        exchange=method.exchange,
        if_unused=method.if_unused,
    )
    ok = session.reply_ok(channel, method, commands.Exchange.DeleteOk())
    session.propose(channel, command, method, ok)


def on_exchange_bind(
    session: Session,
    channel: ChannelSession,
    method: commands.Exchange.Bind | commands.Exchange.Unbind,
) -> None:
    """exchange.bind and exchange.unbind: the same fields, a different verb."""
    bind = isinstance(method, commands.Exchange.Bind)
    session.permit("write", "exchange", method.destination)
    session.permit("read", "exchange", method.source)
    command = (broker.BindExchange if bind else broker.UnbindExchange)(
        channel=channel.ref,
        vhost=session.vhost,
        destination=method.destination,
        source=method.source,
        routing_key=method.routing_key,
        arguments=plain_table(method.arguments),
    )
    ok = commands.Exchange.BindOk() if bind else commands.Exchange.UnbindOk()
    session.propose(channel, command, method, session.reply_ok(channel, method, ok))
