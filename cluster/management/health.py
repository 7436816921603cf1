"""Health checks: what rabbitmq-diagnostics check_* and /api/health/checks ask."""

from __future__ import annotations

import logging

from aiohttp import web

from warrenmq.cluster.management.api import (
    Json,
    ManagementApi,
    json_response,
)

log = logging.getLogger(__name__)

# RabbitMQ's health-check protocol names, and the aliases rabbitmq-diagnostics accepts
_PROTOCOLS = {"amqp": "amqp", "amqp091": "amqp", "amqp0.9.1": "amqp", "amqp/ssl": "amqp/ssl"}
_PROTOCOLS |= {"amqps": "amqp/ssl", "http": "http", "https": "https"}
_PROTOCOLS |= {"http/prometheus": "http/prometheus", "prometheus": "http/prometheus"}


async def check_alarms(api: ManagementApi, request: web.Request) -> web.Response:
    alarms = sorted(api.broker.query_alarms())
    if alarms:
        return _failed(
            "resource alarm(s) in effect in the cluster",
            alarms=[{"node": node, "resource": resource} for node, resource in alarms],
        )
    return _ok()


async def check_local_alarms(api: ManagementApi, request: web.Request) -> web.Response:
    local = sorted(api.node.resources.local_alarms)
    if local:
        return _failed(
            "resource alarm(s) in effect on the node",
            alarms=[{"node": api.node.config.node_id, "resource": r} for r in local],
        )
    return _ok()


async def check_virtual_hosts(api: ManagementApi, request: web.Request) -> web.Response:
    if not api.node.serving:
        return _failed(
            "Some virtual hosts are down", **{"virtual-hosts": api.broker.query_vhost_names()}
        )
    return _ok()


async def check_quorum_critical(api: ManagementApi, request: web.Request) -> web.Response:
    status = api.node.cluster_status()
    if len(status["members"]) == 1:
        return _ok("single node cluster")
    online = sum(member["alive"] for member in status["members"])
    majority = len(status["members"]) // 2 + 1
    quorum_queues = [
        {"name": queue.name, "virtual_host": queue.vhost}
        for queue in api.broker.query_queues()
        if queue.type == "quorum"
    ]
    if online - 1 < majority and quorum_queues:
        return _failed(
            "There are quorum queues that would lose their quorum if the target node is shut down",
            queues=quorum_queues,
        )
    return _ok()


async def check_port(api: ManagementApi, request: web.Request) -> web.Response:
    port = int(request.match_info["port"])
    ports = sorted(api.node.local_listeners().values())
    if port not in ports:
        return _failed("No active listener", missing=port, ports=ports)
    return _ok()


async def check_protocol(api: ManagementApi, request: web.Request) -> web.Response:
    asked = request.match_info["protocol"].lower()
    protocols = sorted(api.node.local_listeners())
    if _PROTOCOLS.get(asked) not in protocols:
        return _failed("No active listener", missing=asked, protocols=protocols)
    return _ok()


def _ok(reason: str | None = None) -> web.Response:
    return json_response({"status": "ok"} | ({"reason": reason} if reason else {}))


def _failed(reason: str, **details: Json) -> web.Response:
    return json_response({"status": "failed", "reason": reason, **details}, 503)
