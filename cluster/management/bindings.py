"""Bindings: list them, bind and unbind (with AMQP queue.bind permissions)."""

from __future__ import annotations

import logging
import urllib.parse

from aiohttp import web

from warrenmq.cluster import definitions
from warrenmq.cluster.management import shapes
from warrenmq.cluster.management.api import (
    ManagementApi,
    json_response,
    not_found,
    read_body,
)

log = logging.getLogger(__name__)


async def bindings(api: ManagementApi, request: web.Request) -> web.Response:
    return json_response(
        [
            binding
            for name, vhost in api.vhosts(request)
            for binding in shapes.bindings_json(name, vhost)
        ]
    )


def _binding_ends(
    api: ManagementApi, request: web.Request, changing: bool = True
) -> tuple[str, str, str, str]:
    """The binding a path names; binding or unbinding needs AMQP's queue.bind permissions
    (write on the destination, read on the source)."""
    vhost_name, _ = api.vhost(request)
    source = request.match_info["source"]
    source = "" if source == "amq.default" else source
    kind = "queue" if request.match_info["kind"] == "q" else "exchange"
    destination = request.match_info["destination"]
    if changing:
        api.permit(request, vhost_name, "write", destination)
        api.permit(request, vhost_name, "read", source or "amq.default")
    return vhost_name, source, kind, destination


async def binding_list(api: ManagementApi, request: web.Request) -> web.Response:
    vhost_name, source, kind, destination = _binding_ends(api, request, changing=False)
    _, vhost = api.vhost(request)
    return json_response(
        [
            binding
            for binding in shapes.bindings_json(vhost_name, vhost)
            if (binding["source"], binding["destination_type"], binding["destination"])
            == (source, kind, destination)
        ]
    )


async def post_binding(api: ManagementApi, request: web.Request) -> web.Response:
    vhost_name, source, kind, destination = _binding_ends(api, request)
    body = await read_body(request)
    binding = {
        "source": source,
        "destination": destination,
        "destination_type": kind,
        "routing_key": body.get("routing_key", ""),
        "arguments": body.get("arguments") or {},
    }
    await api.submit(definitions.bind_command(api.node.management_channel(), vhost_name, binding))
    key = shapes.properties_key(binding["routing_key"], binding["arguments"])
    location = f"{request.path}/{urllib.parse.quote(key, safe='')}"
    return web.Response(status=201, headers={"Location": location})


async def delete_binding(api: ManagementApi, request: web.Request) -> web.Response:
    vhost_name, source, kind, destination = _binding_ends(api, request)
    _, vhost = api.vhost(request)
    wanted = request.match_info["props"]
    for binding in shapes.bindings_json(vhost_name, vhost):
        if (
            binding["source"] == source
            and source
            and binding["destination_type"] == kind
            and binding["destination"] == destination
            and binding["properties_key"] == wanted
        ):
            await api.submit(
                definitions.bind_command(
                    api.node.management_channel(), vhost_name, binding, unbind=True
                )
            )
            return web.Response(status=204)
    raise not_found()
