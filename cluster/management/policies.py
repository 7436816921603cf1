"""Policies and operator policies (RabbitMQ's /api/policies and /api/operator-policies):
administrators and policymakers set them; anyone may read those of the vhosts they see."""

from __future__ import annotations

from aiohttp import web

from warrenmq.cluster import definitions
from warrenmq.cluster.management.api import (
    ApiError,
    ManagementApi,
    bad_request,
    json_response,
    not_found,
    read_body,
)
from warrenmq.replication import commands as c
from warrenmq.replication.queries import PolicyView


def _operator(request: web.Request) -> bool:
    return request.path.startswith("/api/operator-policies")


def _require_policymaker(request: web.Request) -> None:
    tags = request["tags"]
    if "administrator" in tags or (not _operator(request) and "policymaker" in tags):
        return
    raise ApiError(401, "not_authorized", "Not policymaker user")


def _visible(api: ManagementApi, request: web.Request) -> list[PolicyView]:
    vhosts = set(api.visible_vhosts(request))
    wanted = request.match_info.get("vhost")
    return [
        policy
        for policy in api.broker.query_policies(operator=_operator(request))
        if policy.vhost in vhosts and wanted in (None, policy.vhost)
    ]


async def list_policies(api: ManagementApi, request: web.Request) -> web.Response:
    return json_response([definitions.policy_definition(each) for each in _visible(api, request)])


async def one_policy(api: ManagementApi, request: web.Request) -> web.Response:
    name = request.match_info["name"]
    for policy in _visible(api, request):
        if policy.name == name:
            return json_response(definitions.policy_definition(policy))
    raise not_found()


async def put_policy(api: ManagementApi, request: web.Request) -> web.Response:
    _require_policymaker(request)
    vhost, name = request.match_info["vhost"], request.match_info["name"]
    if not api.broker.query_vhost_exists(vhost):
        raise not_found()
    body = await read_body(request)
    try:
        command = definitions.set_policy_command(vhost, name, body, _operator(request))
    except ValueError as error:
        raise bad_request(str(error)) from error
    existed = any(policy.name == name for policy in _visible(api, request))
    await api.submit(command)
    return web.Response(status=204 if existed else 201)


async def delete_policy(api: ManagementApi, request: web.Request) -> web.Response:
    _require_policymaker(request)
    vhost, name = request.match_info["vhost"], request.match_info["name"]
    if not any(policy.name == name for policy in _visible(api, request)):
        raise not_found()
    await api.submit(c.ClearPolicy(vhost=vhost, name=name, operator=_operator(request)))
    return web.Response(status=204)
