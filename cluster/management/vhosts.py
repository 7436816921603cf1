"""Virtual hosts: list, one, create (its creator gets every permission in it), delete."""

from __future__ import annotations

import logging

from aiohttp import web

from warrenmq.cluster.management.api import (
    Json,
    ManagementApi,
    json_response,
)
from warrenmq.replication import commands as c
from warrenmq.replication.queries import VhostView

log = logging.getLogger(__name__)


def _vhost_json(api: ManagementApi, name: str, vhost: VhostView) -> Json:
    ready = sum(queue.ready for queue in vhost.queues.values())
    unacked = sum(queue.unacked for queue in vhost.queues.values())
    return {
        "name": name,
        "description": "",
        "tags": [],
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "cluster_state": {m.node_id: "running" for m in api.node.config.cluster},
    }


async def vhosts(api: ManagementApi, request: web.Request) -> web.Response:
    return json_response([_vhost_json(api, name, vhost) for name, vhost in api.vhosts(request)])


async def one_vhost(api: ManagementApi, request: web.Request) -> web.Response:
    return json_response(_vhost_json(api, *api.vhost(request)))


async def put_vhost(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    name = request.match_info["vhost"]
    existed = api.broker.query_vhost_exists(name)
    await api.submit(c.AddVhost(vhost=name))
    if not existed:  # RabbitMQ: whoever creates a vhost gets every permission in it
        await api.submit(
            c.SetPermissions(
                user=request["user"], vhost=name, configure=".*", write=".*", read=".*"
            )
        )
    return web.Response(status=204 if existed else 201)


async def delete_vhost(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    await api.submit(c.DeleteVhost(vhost=request.match_info["vhost"]))
    return web.Response(status=204)
