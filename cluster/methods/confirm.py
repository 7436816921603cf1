"""The confirm class, and publisher confirms as they go out: replies come in publish order, so
the confirms of one event-loop turn go out as one basic.ack with multiple=true."""

from __future__ import annotations

import asyncio
import typing

from pamqp import commands

from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.client import ChannelError

if typing.TYPE_CHECKING:
    from warrenmq.cluster.session import ChannelSession, Session


def on_confirm_select(
    session: Session, channel: ChannelSession, method: commands.Confirm.Select
) -> None:
    if channel.tx is not None:
        raise ChannelError(ReplyCode.PRECONDITION_FAILED, "cannot switch from tx to confirm mode")
    channel.confirm = True
    if not method.nowait:
        session.send_in_order(channel, commands.Confirm.SelectOk())


def confirm_publish(session: Session, channel: ChannelSession, confirm_tag: int) -> None:
    """The publish `confirm_tag` is applied: its ack goes out with this turn's others."""
    channel.confirmed_tag = confirm_tag
    if not session.confirming:
        asyncio.get_running_loop().call_soon(_send_confirms, session)
    session.confirming[channel.number] = channel


def nack_publish(session: Session, channel: ChannelSession, confirm_tag: int) -> None:
    """A queue at its limit refused the message (reject-publish): the acks collected so far go
    out first, then basic.nack for this one. Its requeue flag is set, as RabbitMQ sends it (the
    field's default; a client ignores it)."""
    _send_acks(session, channel)
    session.send(
        channel, commands.Basic.Nack(delivery_tag=confirm_tag, multiple=False, requeue=True)
    )
    channel.confirmed_tag = channel.acked_tag = confirm_tag
    session.protocol.flush_soon()


def _send_confirms(session: Session) -> None:
    confirming, session.confirming = session.confirming, {}
    for number, channel in confirming.items():
        if session.channels.get(number) is channel:  # else its publishes stay unconfirmed
            _send_acks(session, channel)
    session.protocol.flush_soon()


def _send_acks(session: Session, channel: ChannelSession) -> None:
    if channel.confirmed_tag > channel.acked_tag:
        session.node.counters.confirmed += channel.confirmed_tag - channel.acked_tag
        multiple = channel.confirmed_tag - channel.acked_tag > 1
        session.send(
            channel, commands.Basic.Ack(delivery_tag=channel.confirmed_tag, multiple=multiple)
        )
        channel.acked_tag = channel.confirmed_tag
