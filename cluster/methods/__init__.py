"""AMQP 0-9-1 methods, one file per class: the one table from a method to its handler.

A handler is `on_<class>_<method>(session, channel, method)`: it checks what the channel
checks itself, turns the method into one broker command and says what to send back when the
command's reply comes (session.py's `Session` proposes it). basic.publish gets the whole
ContentReceived: the method with its properties and body; basic.ack an AcksReceived: the ack
with the single acks right behind it (basic.py's `join_acks`).
"""

from __future__ import annotations

import typing

from pamqp import commands

from warrenmq.cluster.methods import basic, confirm, exchange, queue, tx

if typing.TYPE_CHECKING:
    from warrenmq.cluster.session import ChannelSession, Session

__all__ = ["HANDLERS"]

Handler = typing.Callable[["Session", "ChannelSession", typing.Any], None]

HANDLERS: dict[type, Handler] = {
    commands.Exchange.Declare: exchange.on_exchange_declare,
    commands.Exchange.Delete: exchange.on_exchange_delete,
    commands.Exchange.Bind: exchange.on_exchange_bind,
    commands.Exchange.Unbind: exchange.on_exchange_bind,
    commands.Queue.Declare: queue.on_queue_declare,
    commands.Queue.Bind: queue.on_queue_bind,
    commands.Queue.Unbind: queue.on_queue_bind,
    commands.Queue.Purge: queue.on_queue_purge,
    commands.Queue.Delete: queue.on_queue_delete,
    commands.Basic.Publish: basic.on_basic_publish,
    commands.Basic.Qos: basic.on_basic_qos,
    commands.Basic.Consume: basic.on_basic_consume,
    commands.Basic.Cancel: basic.on_basic_cancel,
    commands.Basic.Get: basic.on_basic_get,
    commands.Basic.Ack: basic.on_basic_ack,
    commands.Basic.Nack: basic.on_basic_nack,
    commands.Basic.Reject: basic.on_basic_reject,
    commands.Basic.Recover: basic.on_basic_recover,
    commands.Basic.RecoverAsync: basic.on_basic_recover,
    commands.Confirm.Select: confirm.on_confirm_select,
    commands.Tx.Select: tx.on_tx_select,
    commands.Tx.Commit: tx.on_tx_commit,
    commands.Tx.Rollback: tx.on_tx_rollback,
}
