"""GET /api/overview, /api/nodes and Warren's cluster status."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from warrenmq.cluster.management import connections
from warrenmq.cluster.management.api import (
    Json,
    ManagementApi,
    json_response,
    not_found,
)

log = logging.getLogger(__name__)


async def overview(api: ManagementApi, request: web.Request) -> web.Response:
    node = api.node
    counters = node.counters
    vhosts = api.vhosts(request)
    queues = [queue for _, vhost in vhosts for queue in vhost.queues.values()]
    listed = await connections.listed(api, request)
    channel_count = sum(connection["channels"] for connection in listed)
    ready = sum(queue.ready for queue in queues)
    unacked = sum(queue.unacked for queue in queues)
    return json_response(
        {
            "management_version": node.version,
            "rabbitmq_version": node.version,
            "product_name": "Warren",
            "product_version": node.version,
            "cluster_name": "warren",
            "node": node.config.node_id,
            "object_totals": {
                "connections": len(listed),
                "channels": channel_count,
                "exchanges": sum(len(vhost.exchanges) for _, vhost in vhosts),
                "queues": len(queues),
                "consumers": sum(len(queue.consumers) for queue in queues),
            },
            "queue_totals": {
                "messages": ready + unacked,
                "messages_ready": ready,
                "messages_unacknowledged": unacked,
            },
            "message_stats": {  # this node's clients, since it started
                "publish": counters.received,
                "confirm": counters.confirmed,
                "return_unroutable": counters.unroutable_returned,
                "drop_unroutable": counters.unroutable_dropped,
                "deliver_get": counters.delivered,
                "redeliver": counters.redelivered,
                "ack": counters.acknowledged,
            },
            "listeners": _listeners(
                api,
            ),
        }
    )


def _listeners(api: ManagementApi) -> list[Json]:
    config = api.node.config
    listeners = []
    for member in config.cluster:
        listeners.append(
            {
                "node": member.node_id,
                "protocol": "amqp",
                "ip_address": member.host,
                "port": member.amqp_port,
            }
        )
        listeners.append(
            {
                "node": member.node_id,
                "protocol": "https" if config.management_tls else "http",
                "ip_address": member.host,
                "port": member.management_port,
            }
        )
    for protocol, port in api.node.local_listeners().items():
        if protocol in ("amqp/ssl", "http/prometheus"):
            listeners.append(
                {
                    "node": config.node_id,
                    "protocol": protocol,
                    "ip_address": config.host,
                    "port": port,
                }
            )
    return listeners


def _node_json(api: ManagementApi) -> Json:
    node = api.node
    reading = node.resources.reading
    local = node.resources.local_alarms
    return {
        "name": node.config.node_id,
        "type": "disc",
        "running": True,
        "os_pid": str(node.pid),
        "mem_used": reading.memory_used_bytes,
        "mem_limit": node.resources.memory_limit_bytes,
        "mem_alarm": "memory" in local,
        "disk_free": reading.disk_free_bytes,
        "disk_free_limit": node.resources.disk_free_limit_bytes,
        "disk_free_alarm": "disk" in local,
        "fd_used": reading.open_fds,
        "fd_total": reading.max_fds,
        "uptime": int((time.time() - node.started_at_s) * 1000),
        "being_drained": False,
        "partitions": [],  # one Raft group: a minority stops serving, it never diverges
        "raft_leader": node.log.is_leader,
    }


async def nodes(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "monitoring")
    found = [
        _node_json(
            api,
        ),
        *await api.members.lists(request, "/api/nodes"),
    ]
    named = {entry["name"] for entry in found}
    for member in api.node.config.cluster:
        if member.node_id not in named and request.query.get("scope") != "node":
            found.append({"name": member.node_id, "type": "disc", "running": False})
    return json_response(sorted(found, key=lambda entry: entry["name"]))


async def one_node(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "monitoring")
    name = request.match_info["name"]
    if name == api.node.config.node_id:
        return json_response(
            _node_json(
                api,
            )
        )
    for entry in await api.members.lists(request, "/api/nodes"):
        if entry.get("name") == name:
            return json_response(entry)
    raise not_found()


async def cluster_status(api: ManagementApi, request: web.Request) -> web.Response:
    return json_response(api.node.cluster_status())
