"""The management HTTP API (port 15672), on aiohttp: RabbitMQ's paths, JSON fields and codes.

Reads come from this node's copy of the replicated state (vhosts, users, permissions, exchanges,
bindings, queues, consumers) or from its own client connections; connections, channels and node
figures of the other members are asked of their APIs with the caller's credentials (`?scope=node`
answers for one node only). Writes become commands through the Raft log, like AMQP methods.

Access follows the management plugin's user tags: `management` sees the vhosts it has
permissions in and its own connections, `monitoring` sees everything, `administrator` may also
manage users, vhosts, permissions and definitions. `guest` may log in over loopback only, as for
AMQP. The one path without credentials is Warren's cluster status, for container health checks.
"""

from __future__ import annotations

import functools
import ssl
import typing

from aiohttp import web

from warrenmq.cluster.management import (
    bindings,
    connections,
    definitions,
    exchanges,
    health,
    overview,
    permissions,
    policies,
    queues,
    users,
    vhosts,
)
from warrenmq.cluster.management.api import CLUSTER_STATUS_PATH, ManagementApi

if typing.TYPE_CHECKING:
    from warrenmq.cluster.node import Node

__all__ = ["CLUSTER_STATUS_PATH", "routes", "start_management"]

Handler = typing.Callable[[ManagementApi, web.Request], typing.Awaitable[web.Response]]


def routes(api: ManagementApi) -> list[web.RouteDef]:
    """The one table from every path and verb to its handler."""

    def on(handler: Handler) -> typing.Callable[[web.Request], typing.Awaitable[web.Response]]:
        return functools.partial(handler, api)

    vhost = "/{vhost}"
    binding = vhost + "/e/{source}/{kind:[qe]}/{destination}"
    table = [
        web.get(CLUSTER_STATUS_PATH, on(overview.cluster_status)),
        web.get("/api/overview", on(overview.overview)),
        web.get("/api/whoami", on(users.whoami)),
        web.get("/api/nodes", on(overview.nodes)),
        web.get("/api/nodes/{name}", on(overview.one_node)),
        web.get("/api/connections", on(connections.connections)),
        web.delete("/api/connections/{name}", on(connections.close_connection)),
        web.get("/api/channels", on(connections.channels)),
        web.get("/api/consumers", on(connections.consumers)),
        web.get("/api/consumers" + vhost, on(connections.consumers)),
        web.get("/api/vhosts", on(vhosts.vhosts)),
        web.get("/api/vhosts" + vhost, on(vhosts.one_vhost)),
        web.put("/api/vhosts" + vhost, on(vhosts.put_vhost)),
        web.delete("/api/vhosts" + vhost, on(vhosts.delete_vhost)),
        web.get("/api/vhosts" + vhost + "/permissions", on(permissions.permissions)),
        web.get("/api/users", on(users.users)),
        web.get("/api/users/{user}", on(users.one_user)),
        web.put("/api/users/{user}", on(users.put_user)),
        web.delete("/api/users/{user}", on(users.delete_user)),
        web.get("/api/users/{user}/permissions", on(permissions.permissions)),
        web.get("/api/permissions", on(permissions.permissions)),
        web.get("/api/permissions" + vhost + "/{user}", on(permissions.one_permission)),
        web.put("/api/permissions" + vhost + "/{user}", on(permissions.put_permission)),
        web.delete("/api/permissions" + vhost + "/{user}", on(permissions.delete_permission)),
        *(
            route
            for kind in ("/api/policies", "/api/operator-policies")
            for route in (
                web.get(kind, on(policies.list_policies)),
                web.get(kind + vhost, on(policies.list_policies)),
                web.get(kind + vhost + "/{name}", on(policies.one_policy)),
                web.put(kind + vhost + "/{name}", on(policies.put_policy)),
                web.delete(kind + vhost + "/{name}", on(policies.delete_policy)),
            )
        ),
        web.get("/api/exchanges", on(exchanges.exchanges)),
        web.get("/api/exchanges" + vhost, on(exchanges.exchanges)),
        web.get("/api/exchanges" + vhost + "/{exchange}", on(exchanges.one_exchange)),
        web.put("/api/exchanges" + vhost + "/{exchange}", on(exchanges.put_exchange)),
        web.delete("/api/exchanges" + vhost + "/{exchange}", on(exchanges.delete_exchange)),
        web.post("/api/exchanges" + vhost + "/{exchange}/publish", on(exchanges.publish)),
        web.get("/api/queues", on(queues.queues)),
        web.get("/api/queues" + vhost, on(queues.queues)),
        web.get("/api/queues" + vhost + "/{queue}", on(queues.one_queue)),
        web.put("/api/queues" + vhost + "/{queue}", on(queues.put_queue)),
        web.delete("/api/queues" + vhost + "/{queue}", on(queues.delete_queue)),
        web.delete("/api/queues" + vhost + "/{queue}/contents", on(queues.purge_queue)),
        web.post("/api/queues" + vhost + "/{queue}/get", on(queues.get_messages)),
        web.get("/api/bindings", on(bindings.bindings)),
        web.get("/api/bindings" + vhost, on(bindings.bindings)),
        web.get("/api/bindings" + binding, on(bindings.binding_list)),
        web.post("/api/bindings" + binding, on(bindings.post_binding)),
        web.delete("/api/bindings" + binding + "/{props}", on(bindings.delete_binding)),
        web.get("/api/definitions", on(definitions.export_definitions)),
        web.post("/api/definitions", on(definitions.import_definitions)),
        web.get("/api/health/checks/alarms", on(health.check_alarms)),
        web.get("/api/health/checks/local-alarms", on(health.check_local_alarms)),
        web.get("/api/health/checks/virtual-hosts", on(health.check_virtual_hosts)),
        web.get("/api/health/checks/node-is-quorum-critical", on(health.check_quorum_critical)),
        web.get("/api/health/checks/port-listener/{port:[0-9]+}", on(health.check_port)),
        web.get("/api/health/checks/protocol-listener/{protocol}", on(health.check_protocol)),
    ]
    # RabbitMQ's router takes a path with a trailing slash as the same path (clients send them:
    # RabbitMQ's AMQP 1.0 client's tests delete vhosts as /api/vhosts/NAME/)
    return table + [web.route(route.method, route.path + "/", route.handler) for route in table]


async def start_management(node: Node, tls: ssl.SSLContext | None) -> web.AppRunner:
    api = ManagementApi(node)
    application = web.Application(middlewares=[api.middleware])
    application.add_routes(routes(api))
    application.on_cleanup.append(api.members.close)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(
        runner, node.config.listen_host, node.config.management_port, ssl_context=tls
    ).start()
    return runner
