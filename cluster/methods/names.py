"""Names a channel fills in: server-generated names and the last declared queue."""

from __future__ import annotations

import base64
import os
import typing

from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.client import ChannelError

if typing.TYPE_CHECKING:
    from warrenmq.cluster.session import ChannelSession


def generated_name(prefix: str) -> str:
    """RabbitMQ's form for server-generated names: prefix, dash, 22 url-safe base64 characters."""
    return f"{prefix}-{base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip('=')}"


def queue_name(channel: ChannelSession, queue: str) -> str:
    """AMQP 0-9-1: an empty queue name means the queue this channel declared last."""
    if queue:
        return queue
    if not channel.last_queue:
        raise ChannelError(ReplyCode.NOT_FOUND, "no previously declared queue")
    return channel.last_queue
