"""Users (administrator only) and /api/whoami."""

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
from warrenmq.cluster.passwords import HASHING_ALGORITHM
from warrenmq.replication import commands as c

log = logging.getLogger(__name__)


def _user_json(api: ManagementApi, name: str) -> Json:
    user = api.broker.query_user(name)
    if user is None:
        raise not_found()
    return {
        "name": name,
        "password_hash": user.password_hash,
        "hashing_algorithm": HASHING_ALGORITHM,
        "tags": list(user.tags),
        "limits": {},
    }


async def users(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    return json_response([_user_json(api, name) for name in api.broker.query_users()])


async def one_user(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    return json_response(_user_json(api, request.match_info["user"]))


async def whoami(api: ManagementApi, request: web.Request) -> web.Response:
    return json_response({"name": request["user"], "tags": sorted(request["tags"])})


async def put_user(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    name = request.match_info["user"]
    body = await read_body(request)
    if "tags" not in body:
        raise bad_request("tags_not_present")
    existed = api.broker.query_user(name) is not None
    try:
        command = definitions.add_user_command(name, body)
    except ValueError as error:
        raise bad_request(str(error)) from error
    await api.submit(command)
    return web.Response(status=204 if existed else 201)


async def delete_user(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    await api.submit(c.DeleteUser(user=request.match_info["user"]))
    return web.Response(status=204)
