"""Queues: list, one, declare, delete, purge, and get messages from one."""

from __future__ import annotations

import logging

from aiohttp import web

from warrenmq.cluster import definitions, http_messages
from warrenmq.cluster.management import shapes
from warrenmq.cluster.management.api import (
    GET_COUNT_MAX,
    Json,
    ManagementApi,
    api_integer,
    bad_request,
    json_response,
    not_found,
    read_body,
)
from warrenmq.replication import commands as c
from warrenmq.replication.queries import QueueView
from warrenmq.replication.replies import GetOk

log = logging.getLogger(__name__)


async def queues(api: ManagementApi, request: web.Request) -> web.Response:
    placement = shapes.placement(api.node)
    return json_response(
        [
            shapes.queue_json(placement, queue)
            for _, vhost in api.vhosts(request)
            for queue in vhost.queues.values()
        ]
    )


def _queue(api: ManagementApi, request: web.Request) -> QueueView:
    _, vhost = api.vhost(request)
    queue = vhost.queues.get(request.match_info["queue"])
    if queue is None:
        raise not_found()
    return queue


async def one_queue(api: ManagementApi, request: web.Request) -> web.Response:
    return json_response(shapes.queue_json(shapes.placement(api.node), _queue(api, request)))


async def put_queue(api: ManagementApi, request: web.Request) -> web.Response:
    _, vhost = api.vhost(request)
    return await api.declare(
        request, request.match_info["queue"], vhost.queues, definitions.declare_queue_command
    )


async def delete_queue(api: ManagementApi, request: web.Request) -> web.Response:
    queue = _queue(api, request)
    api.permit(request, queue.vhost, "configure", queue.name)
    await api.submit(
        c.DeleteQueue(
            channel=api.node.management_channel(),
            vhost=queue.vhost,
            queue=queue.name,
            if_unused=request.query.get("if-unused") == "true",
            if_empty=request.query.get("if-empty") == "true",
        )
    )
    return web.Response(status=204)


async def get_messages(api: ManagementApi, request: web.Request) -> web.Response:
    """POST /api/queues/V/Q/get: up to `count` messages, then settled as `ackmode` says."""
    queue = _queue(api, request)
    api.permit(request, queue.vhost, "read", queue.name)
    body = await read_body(request)
    ackmode = body.get("ackmode")
    if ackmode not in http_messages.ACK_MODES:
        raise bad_request(f"ackmode must be one of {', '.join(http_messages.ACK_MODES)}")
    held, requeue = http_messages.ACK_MODES[ackmode]
    count = min(api_integer(body.get("count", 1)), GET_COUNT_MAX)
    truncate = body.get("truncate")
    if truncate is not None:
        truncate = api_integer(truncate)
        if truncate < 0:
            raise bad_request(f"{{value_negative,{truncate}}}")
    encoding = body.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise bad_request("Unsupported encoding. Please use auto or base64.")
    channel = api.node.management_channel()
    messages: list[Json] = []
    last_tag = 0
    try:
        for _ in range(count):
            reply = await api.submit(
                c.Get(channel=channel, vhost=queue.vhost, queue=queue.name, no_ack=not held)
            )
            if not isinstance(reply, GetOk):
                break
            last_tag = reply.delivery_tag
            messages.append(http_messages.message_json(reply, encoding, truncate))
        if held and last_tag:
            await api.submit(
                c.Reject(channel=channel, delivery_tag=last_tag, multiple=True, requeue=requeue)
            )
    finally:
        await api.node.submit(c.CloseChannel(channel=channel))
    return json_response(messages)


async def purge_queue(api: ManagementApi, request: web.Request) -> web.Response:
    queue = _queue(api, request)
    api.permit(request, queue.vhost, "read", queue.name)
    await api.submit(
        c.PurgeQueue(channel=api.node.management_channel(), vhost=queue.vhost, queue=queue.name)
    )
    return web.Response(status=204)
