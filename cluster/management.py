"""The node's management HTTP listener (port 15672), on aiohttp.

For now it serves what `warren ctl cluster-status` and container health checks read; RabbitMQ's
management API grows here later.
"""

from __future__ import annotations

import typing

from aiohttp import web

if typing.TYPE_CHECKING:
    from warrenmq.cluster.node import Node

__all__ = ["CLUSTER_STATUS_PATH", "start_management"]

CLUSTER_STATUS_PATH = "/api/warren/cluster-status"


async def start_management(node: Node) -> web.AppRunner:
    async def cluster_status(request: web.Request) -> web.Response:
        return web.json_response(node.cluster_status())

    application = web.Application()
    application.router.add_get(CLUSTER_STATUS_PATH, cluster_status)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, node.config.listen_host, node.config.management_port).start()
    return runner
