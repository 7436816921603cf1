"""`warren ctl`: rabbitmqctl and rabbitmq-diagnostics for Warren, over the management HTTP API.

Commands keep rabbitmqctl's names (`list_queues name messages`, `add_user`, `set_permissions
-p VHOST USER CONF WRITE READ`, `export_definitions FILE`); health checks keep
rabbitmq-diagnostics' (`check_alarms`, `check_port_listener 5672`). Exit codes follow theirs,
so scripts can branch on them: 0 ok, 64 usage, 65 refused (bad input, unknown object),
69 a check failed or no node answered, 77 not authorised.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
import typing
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["EXIT_CHECK_FAILED", "ApiClient", "ApiFailure", "add_arguments", "run"]

EXIT_OK = 0
EXIT_USAGE = 64
EXIT_REFUSED = 65
EXIT_CHECK_FAILED = 69
EXIT_NOT_AUTHORISED = 77

Json = typing.Any


class ApiFailure(Exception):
    def __init__(self, status: int, answer: Json) -> None:
        super().__init__(f"HTTP {status}: {answer}")
        self.status = status
        self.answer = answer


class ApiClient:
    """A small, synchronous client of the management API (tests use it too)."""

    def __init__(
        self,
        base_url: str,
        user: str = "guest",
        password: str = "guest",
        timeout_s: float = 10.0,
        cafile: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._authorization = f"Basic {token}"
        self.timeout_s = timeout_s
        self._ssl = ssl.create_default_context(cafile=cafile) if cafile else None

    def request(self, method: str, path: str, body: Json = None) -> tuple[int, Json]:
        """(status, decoded JSON body or None); never raises on an HTTP error status."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": self._authorization, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout_s, context=self._ssl
            ) as answer:
                return answer.status, _decoded(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, _decoded(error.read())

    def call(self, method: str, path: str, body: Json = None) -> Json:
        status, answer = self.request(method, path, body)
        if status >= 300:
            raise ApiFailure(status, answer)
        return answer

    def get(self, path: str) -> Json:
        return self.call("GET", path)


def _decoded(raw: bytes) -> Json:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def quote(name: str) -> str:
    """A vhost or object name as one path segment ('/' is %2F, as RabbitMQ's API wants)."""
    return urllib.parse.quote(name, safe="")


# --- listing ---------------------------------------------------------------------------

# rabbitmqctl's column names where they differ from the API's field names
_ALIASES = {
    "source_name": "source",
    "destination_name": "destination",
    "destination_kind": "destination_type",
    "queue_name": "queue.name",
    "channel_pid": "channel_details.name",
}
_LISTS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    # command: (API path, default columns, per vhost)
    "list_queues": ("/api/queues", ("name", "messages"), True),
    "list_exchanges": ("/api/exchanges", ("name", "type"), True),
    "list_bindings": (
        "/api/bindings",
        (
            "source_name",
            "source_kind",
            "destination_name",
            "destination_kind",
            "routing_key",
            "arguments",
        ),
        True,
    ),
    "list_connections": ("/api/connections", ("user", "peer_host", "peer_port", "state"), False),
    "list_channels": (
        "/api/channels",
        ("connection_details.name", "number", "user", "consumer_count"),
        False,
    ),
    "list_consumers": (
        "/api/consumers",
        (
            "queue_name",
            "channel_pid",
            "consumer_tag",
            "ack_required",
            "prefetch_count",
            "active",
            "arguments",
        ),
        True,
    ),
    "list_users": ("/api/users", ("name", "tags"), False),
    "list_vhosts": ("/api/vhosts", ("name",), False),
    "list_permissions": ("/api/permissions", ("user", "configure", "write", "read"), True),
    "list_policies": (
        "/api/policies",
        ("vhost", "name", "pattern", "apply-to", "definition", "priority"),
        True,
    ),
    "list_operator_policies": (
        "/api/operator-policies",
        ("vhost", "name", "pattern", "apply-to", "definition", "priority"),
        True,
    ),
}


def _field(entry: dict[str, Json], column: str) -> Json:
    if column == "source_kind":
        return "exchange"
    value: Json = entry
    for part in _ALIASES.get(column, column).split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value: Json) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def _list(client: ApiClient, arguments: argparse.Namespace) -> int:
    path, defaults, per_vhost = _LISTS[arguments.action]
    if per_vhost:
        path += "/" + quote(arguments.vhost)
        if arguments.action == "list_permissions":
            path = f"/api/vhosts/{quote(arguments.vhost)}/permissions"
    entries = client.get(path)
    columns = tuple(arguments.columns) or defaults
    rows = [{column: _field(entry, column) for column in columns} for entry in entries]
    if arguments.formatter == "json":
        print(json.dumps(rows, indent=2))
    else:
        print("\t".join(columns))
        for row in rows:
            print("\t".join(_cell(row[column]) for column in columns))
    return EXIT_OK


# --- changes -------------------------------------------------------------------------


# commands that change users, vhosts and permissions: how many arguments (None: one or more)
_CHANGES: dict[str, int | None] = {
    "add_user": 2,
    "delete_user": 1,
    "change_password": 2,
    "set_user_tags": None,
    "add_vhost": 1,
    "delete_vhost": 1,
    "set_permissions": 4,
    "clear_permissions": 1,
    "set_policy": 3,
    "clear_policy": 1,
    "set_operator_policy": 3,
    "clear_operator_policy": 1,
}


def _change(client: ApiClient, arguments: argparse.Namespace) -> int:
    command, names = arguments.action, arguments.columns
    expected = _CHANGES[command]
    if (expected is not None and len(names) != expected) or (expected is None and not names):
        print(f"{command}: wrong number of arguments", file=sys.stderr)
        return EXIT_USAGE
    vhost = quote(arguments.vhost)
    if command == "add_user":
        client.call("PUT", f"/api/users/{quote(names[0])}", {"password": names[1], "tags": ""})
    elif command == "delete_user":
        client.call("DELETE", f"/api/users/{quote(names[0])}")
    elif command == "change_password":
        user = client.get(f"/api/users/{quote(names[0])}")
        client.call(
            "PUT", f"/api/users/{quote(names[0])}", {"password": names[1], "tags": user["tags"]}
        )
    elif command == "set_user_tags":
        user = client.get(f"/api/users/{quote(names[0])}")
        client.call(
            "PUT",
            f"/api/users/{quote(names[0])}",
            {"password_hash": user["password_hash"], "tags": names[1:]},
        )
    elif command == "add_vhost":
        client.call("PUT", f"/api/vhosts/{quote(names[0])}")
    elif command == "delete_vhost":
        client.call("DELETE", f"/api/vhosts/{quote(names[0])}")
    elif command == "set_permissions":
        user, configure, write, read = names
        client.call(
            "PUT",
            f"/api/permissions/{vhost}/{quote(user)}",
            {"configure": configure, "write": write, "read": read},
        )
    elif command == "clear_permissions":
        client.call("DELETE", f"/api/permissions/{vhost}/{quote(names[0])}")
    else:
        return _change_policy(client, arguments, vhost)
    return EXIT_OK


def _change_policy(client: ApiClient, arguments: argparse.Namespace, vhost: str) -> int:
    """set_policy NAME PATTERN DEFINITION (JSON), clear_policy NAME, and the operator ones."""
    kind = "operator-policies" if "operator" in arguments.action else "policies"
    path = f"/api/{kind}/{vhost}/{quote(arguments.columns[0])}"
    if arguments.action.startswith("clear_"):
        client.call("DELETE", path)
        return EXIT_OK
    _, pattern, definition = arguments.columns
    try:
        parsed = json.loads(definition)
    except ValueError as error:
        print(f"{arguments.action}: the definition is not JSON: {error}", file=sys.stderr)
        return EXIT_USAGE
    body = {
        "pattern": pattern,
        "definition": parsed,
        "priority": arguments.priority,
        "apply-to": arguments.apply_to,
    }
    client.call("PUT", path, body)
    return EXIT_OK


def _definitions(client: ApiClient, arguments: argparse.Namespace) -> int:
    if len(arguments.columns) != 1:
        print(f"{arguments.action} takes one file name (- for standard streams)", file=sys.stderr)
        return EXIT_USAGE
    (target,) = arguments.columns
    if arguments.action == "export_definitions":
        text = json.dumps(client.get("/api/definitions"), indent=2)
        if target == "-":
            print(text)
        else:
            with open(target, "w") as file:
                file.write(text + "\n")
        return EXIT_OK
    with sys.stdin if target == "-" else open(target) as file:
        definitions = json.load(file)
    client.call("POST", "/api/definitions", definitions)
    return EXIT_OK


# --- checks --------------------------------------------------------------------------

_CHECKS = {
    "check_alarms": "alarms",
    "check_local_alarms": "local-alarms",
    "check_virtual_hosts": "virtual-hosts",
    "check_if_node_is_quorum_critical": "node-is-quorum-critical",
    "check_port_listener": "port-listener",
    "check_protocol_listener": "protocol-listener",
}


def _check(client: ApiClient, arguments: argparse.Namespace) -> int:
    path = "/api/health/checks/" + _CHECKS[arguments.action]
    if arguments.action in ("check_port_listener", "check_protocol_listener"):
        if len(arguments.columns) != 1:
            print(f"{arguments.action} takes one argument", file=sys.stderr)
            return EXIT_USAGE
        path += "/" + quote(arguments.columns[0])
    status, answer = client.request("GET", path)
    if status == 401:
        raise ApiFailure(status, answer)
    print(json.dumps(answer) if arguments.formatter == "json" else _describe(answer))
    return EXIT_OK if status == 200 else EXIT_CHECK_FAILED


def _describe(answer: Json) -> str:
    if not isinstance(answer, dict):
        return str(answer)
    if "error" in answer:
        return f"{answer['error']}: {answer.get('reason')}"
    details = {key: value for key, value in answer.items() if key not in ("status", "reason")}
    text = str(answer.get("status", ""))
    if answer.get("reason"):
        text += f": {answer['reason']}"
    return text + (f" {json.dumps(details)}" if details else "")


def _cluster_status(client: ApiClient, arguments: argparse.Namespace) -> int:
    print(json.dumps(client.get("/api/warren/cluster-status"), indent=2))
    return EXIT_OK


_ACTIONS: dict[str, typing.Callable[[ApiClient, argparse.Namespace], int]] = {
    "cluster_status": _cluster_status,
    **dict.fromkeys(_LISTS, _list),
    **dict.fromkeys(_CHANGES, _change),
    "export_definitions": _definitions,
    "import_definitions": _definitions,
    **dict.fromkeys(_CHECKS, _check),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        help="a rabbitmqctl / rabbitmq-diagnostics command: " + ", ".join(sorted(_ACTIONS)),
    )
    parser.add_argument("columns", nargs="*", help="the command's arguments or columns")
    parser.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    parser.add_argument("--priority", type=int, default=0, help="set_policy: its priority")
    parser.add_argument("--apply-to", default="all", help="set_policy: queues, exchanges, ...")
    parser.add_argument("--host", default="127.0.0.1", help="a node's management host")
    parser.add_argument("--management-port", type=int, default=15672)
    parser.add_argument(
        "--config", help="a node config file: ask each member in turn until one answers"
    )
    parser.add_argument("--user", default=os.environ.get("WARREN_CTL_USER", "guest"))
    parser.add_argument("--password", default=os.environ.get("WARREN_CTL_PASSWORD", "guest"))
    parser.add_argument("--https", action="store_true", help="the API is served over HTTPS")
    parser.add_argument("--cacert", help="PEM CA bundle that the API's certificate chains to")
    parser.add_argument("--formatter", choices=["table", "json"], default="table")
    parser.add_argument("--timeout", type=float, default=10.0)


def run(arguments: argparse.Namespace, targets: list[tuple[str, int]]) -> int:
    command = arguments.action.replace("-", "_")
    action = _ACTIONS.get(command)
    if action is None:
        print(
            f"unknown command {arguments.action!r}; one of: {', '.join(sorted(_ACTIONS))}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    arguments.action = command
    scheme = "https" if arguments.https else "http"
    for host, port in targets:
        client = ApiClient(
            f"{scheme}://{host}:{port}",
            arguments.user,
            arguments.password,
            arguments.timeout,
            arguments.cacert,
        )
        try:
            return action(client, arguments)
        except ApiFailure as failure:
            print(f"{command} failed: {_describe(failure.answer)}", file=sys.stderr)
            return EXIT_NOT_AUTHORISED if failure.status == 401 else EXIT_REFUSED
        except (urllib.error.URLError, OSError) as error:
            print(f"{host}:{port} did not answer: {error}", file=sys.stderr)
    return EXIT_CHECK_FAILED
