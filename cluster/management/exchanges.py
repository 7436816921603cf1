"""Exchanges: list, one, declare, delete, and publish through one."""

from __future__ import annotations

import logging

from aiohttp import web

from warrenmq.cluster import definitions, http_messages
from warrenmq.cluster.management import shapes
from warrenmq.cluster.management.api import (
    ManagementApi,
    bad_request,
    json_response,
    not_found,
    read_body,
)
from warrenmq.replication import commands as c
from warrenmq.replication.replies import Routed

log = logging.getLogger(__name__)


async def exchanges(api: ManagementApi, request: web.Request) -> web.Response:
    return json_response(
        [
            shapes.exchange_json(exchange)
            for _, vhost in api.vhosts(request)
            for exchange in vhost.exchanges.values()
        ]
    )


def _exchange_name(request: web.Request) -> str:
    name = request.match_info["exchange"]
    return "" if name == "amq.default" else name


async def one_exchange(api: ManagementApi, request: web.Request) -> web.Response:
    vhost_name, vhost = api.vhost(request)
    exchange = vhost.exchanges.get(_exchange_name(request))
    if exchange is None:
        raise not_found()
    return json_response(shapes.exchange_json(exchange))


async def put_exchange(api: ManagementApi, request: web.Request) -> web.Response:
    _, vhost = api.vhost(request)
    return await api.declare(
        request,
        _exchange_name(request),
        vhost.exchanges,
        definitions.declare_exchange_command,
    )


async def delete_exchange(api: ManagementApi, request: web.Request) -> web.Response:
    vhost_name, vhost = api.vhost(request)
    name = _exchange_name(request)
    api.permit(request, vhost_name, "configure", name)
    if name not in vhost.exchanges:
        raise not_found()
    await api.submit(
        c.DeleteExchange(
            channel=api.node.management_channel(),
            vhost=vhost_name,
            exchange=name,
            if_unused=request.query.get("if-unused") == "true",
        )
    )
    return web.Response(status=204)


async def publish(api: ManagementApi, request: web.Request) -> web.Response:
    """POST /api/exchanges/V/E/publish: RabbitMQ's answer is whether it was routed."""
    vhost_name, vhost = api.vhost(request)
    name = _exchange_name(request)
    api.permit(request, vhost_name, "write", name or "amq.default")
    if name not in vhost.exchanges:
        raise not_found()
    body = await read_body(request)
    try:
        command = http_messages.publish_command(
            api.node.management_channel(), vhost_name, name, body
        )
    except ValueError as error:
        raise bad_request(str(error)) from error
    reply = await api.submit(command)
    return json_response({"routed": isinstance(reply, Routed) and reply.queue_count > 0})
