"""Permissions of a user in a vhost (administrator only)."""

from __future__ import annotations

import logging

from aiohttp import web

from warrenmq.cluster import definitions
from warrenmq.cluster.management.api import (
    Json,
    ManagementApi,
    bad_request,
    json_response,
    not_found,
    read_body,
)
from warrenmq.replication import commands as c

log = logging.getLogger(__name__)


def _permissions(
    api: ManagementApi, user: str | None = None, vhost: str | None = None
) -> list[Json]:
    return [
        {
            "user": each_user,
            "vhost": each_vhost,
            "configure": permission.configure,
            "write": permission.write,
            "read": permission.read,
        }
        for (each_user, each_vhost), permission in api.broker.query_permissions().items()
        if user in (None, each_user) and vhost in (None, each_vhost)
    ]


async def permissions(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    return json_response(
        _permissions(api, request.match_info.get("user"), request.match_info.get("vhost"))
    )


async def one_permission(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    found = _permissions(api, request.match_info["user"], request.match_info["vhost"])
    if not found:
        raise not_found()
    return json_response(found[0])


async def put_permission(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    user, vhost = request.match_info["user"], request.match_info["vhost"]
    body = await read_body(request)
    try:
        command = definitions.set_permissions_command(user, vhost, body)
    except ValueError as error:
        raise bad_request(str(error)) from error
    if api.broker.query_user(user) is None or not api.broker.query_vhost_exists(vhost):
        raise bad_request("vhost_or_user_not_found")
    existed = api.broker.query_permission(user, vhost) is not None
    await api.submit(command)
    return web.Response(status=204 if existed else 201)


async def delete_permission(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    user, vhost = request.match_info["user"], request.match_info["vhost"]
    if api.broker.query_permission(user, vhost) is None:
        raise not_found()
    await api.submit(c.ClearPermissions(user=user, vhost=vhost))
    return web.Response(status=204)
