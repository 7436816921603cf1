"""The tx class: a transactional channel's publishes, acks and nacks wait in its buffer
(Session.propose) until tx.commit proposes them, or tx.rollback drops them."""

from __future__ import annotations

import typing

from pamqp import commands

from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.client import ChannelError, OnReply
from warrenmq.replication.replies import Reply

if typing.TYPE_CHECKING:
    from warrenmq.cluster.session import ChannelSession, Session


def on_tx_select(session: Session, channel: ChannelSession, method: commands.Tx.Select) -> None:
    if channel.confirm:
        raise ChannelError(ReplyCode.PRECONDITION_FAILED, "cannot switch from confirm to tx mode")
    if channel.tx is None:
        channel.tx = []
    session.send_in_order(channel, commands.Tx.SelectOk())


def on_tx_commit(session: Session, channel: ChannelSession, method: commands.Tx.Commit) -> None:
    if channel.tx is None:
        raise ChannelError(ReplyCode.PRECONDITION_FAILED, "channel is not transactional")
    buffered, channel.tx = channel.tx, None  # propose for real, then return to tx mode
    channel.tx_bytes = 0
    remaining = len(buffered)

    def on_one_reply(on_reply: OnReply) -> OnReply:
        def reply(result: Reply) -> None:
            nonlocal remaining
            on_reply(result)
            remaining -= 1
            if not remaining:
                session.send(channel, commands.Tx.CommitOk())

        return reply

    for command, buffered_method, on_reply in buffered:
        session.propose(channel, command, buffered_method, on_one_reply(on_reply))
    channel.tx = []
    if not buffered:
        session.send_in_order(channel, commands.Tx.CommitOk())


def on_tx_rollback(session: Session, channel: ChannelSession, method: commands.Tx.Rollback) -> None:
    if channel.tx is None:
        raise ChannelError(ReplyCode.PRECONDITION_FAILED, "channel is not transactional")
    channel.tx, channel.tx_bytes = [], 0
    session.send_in_order(channel, commands.Tx.RollbackOk())
