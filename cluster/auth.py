"""Who may connect and what they may do: one place for AMQP (either version) and HTTP.

Logins are checked against the replicated users (salted hashes, RabbitMQ's form); a user named
in `loopback_users` (guest, by default) may log in only from loopback. Permissions are
RabbitMQ's three regular expressions per user and vhost, read as they are now, so a change
through the management API applies to the next operation of every open connection.
"""

from __future__ import annotations

import ipaddress
import logging
import typing

from warrenmq.cluster.logs import log_event
from warrenmq.cluster.passwords import verify_password
from warrenmq.replication.machine import Permission

if typing.TYPE_CHECKING:
    from warrenmq.cluster.node import Node

__all__ = ["Access", "check_login", "is_loopback"]

log = logging.getLogger(__name__)

PERMISSION_CACHE_MAX = 256  # decisions remembered per connection (publishes check each time)


def check_login(
    node: Node,
    username: str,
    password: str,
    peer: tuple[str, int],
    protocol: str,
    final: bool = True,
) -> bool:
    """The user exists, the password matches, and a loopback-only user (guest) is local. A
    refusal is logged when `final`: one asked again after catching up is logged then."""
    user = node.broker.query_user(username)
    if username in node.config.loopback_users and not is_loopback(peer[0]):
        reason = "user may only connect over loopback"
    elif user is None or not verify_password(password, user.password_hash):
        reason = "unknown user or wrong password"
    else:
        return True
    if not final:
        return False
    log_event(
        log,
        "login_refused",
        f"login refused: user {username!r} from {peer[0]}: {reason}",
        logging.WARNING,
        user=username,
        peer_host=peer[0],
        peer_port=peer[1],
        protocol=protocol,
        reason=reason,
    )
    return False


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def vhost_refusal(node: Node, username: str, vhost: str) -> str | None:
    """Why `username` may not open `vhost` (RabbitMQ's words), or None if it may."""
    if not node.broker.query_vhost_exists(vhost):
        return f"vhost {vhost} not found"
    if node.broker.query_permission(username, vhost) is None:
        return f"access to vhost '{vhost}' refused for user '{username}'"
    return None


class Access:
    """One connection's permission checks, remembered per resource until its user's
    permissions change (a change replaces the Permission object: it is frozen)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.user = ""
        self.vhost = ""
        # (action, resource name) -> (the Permission it was decided by, allowed)
        self._decided: dict[tuple[str, str], tuple[Permission | None, bool]] = {}

    def refusal(self, action: str, kind: str, name: str) -> str | None:
        """RabbitMQ's access control: why `action` (configure, write or read) on a resource is
        refused (docs: access-control), or None when it is allowed."""
        permission = self._node.broker.query_permission(self.user, self.vhost)
        if kind == "exchange" and not name:
            name = "amq.default"
        cached = self._decided.get((action, name))
        if cached is not None and cached[0] is permission:
            allowed = cached[1]
        else:
            allowed = permission is not None and permission.permits(action, name)
            if len(self._decided) >= PERMISSION_CACHE_MAX:
                self._decided.clear()
            self._decided[(action, name)] = (permission, allowed)
        if allowed:
            return None
        return f"access to {kind} '{name}' in vhost '{self.vhost}' refused for user '{self.user}'"
