"""Vhosts, users, permissions and alarms: what management and definitions change, and the
defaults a new cluster starts with."""

from __future__ import annotations

from warrenmq.replication import commands as c
from warrenmq.replication import queues
from warrenmq.replication.replies import Ok, Reply
from warrenmq.replication.state import FULL_ACCESS, Exchange, Permission, User, Vhost
from warrenmq.replication.step import ReplyCode, Step, refusal

# The exchanges every vhost has (RabbitMQ docs: exchanges, "pre-declared exchanges").
_STANDARD_EXCHANGES = (
    ("", "direct", False),
    ("amq.direct", "direct", False),
    ("amq.fanout", "fanout", False),
    ("amq.topic", "topic", False),
    ("amq.headers", "headers", False),
    ("amq.match", "headers", False),
    ("amq.rabbitmq.trace", "topic", True),
)


def apply_bootstrap_defaults(step: Step, command: c.BootstrapDefaults) -> Reply:
    state = step.state
    if not state.users and not state.vhosts:
        apply_add_vhost(step, c.AddVhost(vhost=command.vhost))
        apply_add_user(
            step,
            c.AddUser(user=command.user, password_hash=command.password_hash, tags=command.tags),
        )
        # RabbitMQ: the default user has every permission in the default vhost
        state.permissions[(command.user, command.vhost)] = FULL_ACCESS
    return Ok()


def apply_barrier(step: Step, command: c.Barrier) -> Reply:
    return Ok()  # its point is where it is in the log (commands.Barrier)


def apply_add_vhost(step: Step, command: c.AddVhost) -> Reply:
    if command.vhost not in step.state.vhosts:
        vhost = step.state.vhosts[command.vhost] = Vhost()
        for name, exchange_type, internal in _STANDARD_EXCHANGES:
            vhost.exchanges[name] = Exchange(name, exchange_type, True, False, internal, {})
    return Ok()


def apply_delete_vhost(step: Step, command: c.DeleteVhost) -> Reply:
    state = step.state
    vhost = _known_vhost(step, command.vhost)
    for queue in list(vhost.queues.values()):
        queues.remove_queue(step, vhost, queue)
    del state.vhosts[command.vhost]
    for key in [key for key in state.permissions if key[1] == command.vhost]:
        del state.permissions[key]
    return Ok()


def apply_add_user(step: Step, command: c.AddUser) -> Reply:
    step.state.users[command.user] = User(command.password_hash, command.tags)
    return Ok()


def apply_delete_user(step: Step, command: c.DeleteUser) -> Reply:
    state = step.state
    _known_user(step, command.user)
    del state.users[command.user]
    for key in [key for key in state.permissions if key[0] == command.user]:
        del state.permissions[key]
    return Ok()


def apply_set_permissions(step: Step, command: c.SetPermissions) -> Reply:
    _known_user(step, command.user)
    _known_vhost(step, command.vhost)
    step.state.permissions[(command.user, command.vhost)] = Permission(
        command.configure, command.write, command.read
    )
    return Ok()


def apply_clear_permissions(step: Step, command: c.ClearPermissions) -> Reply:
    step.state.permissions.pop((command.user, command.vhost), None)
    return Ok()


def apply_set_alarm(step: Step, command: c.SetAlarm) -> Reply:
    if command.active:
        step.state.alarms.add((command.node, command.resource))
    else:
        step.state.alarms.discard((command.node, command.resource))
    return Ok()


def _known_user(step: Step, name: str) -> User:
    user = step.state.users.get(name)
    if user is None:
        raise refusal(ReplyCode.NOT_FOUND, f"no user '{name}'")
    return user


def _known_vhost(step: Step, name: str) -> Vhost:
    vhost = step.state.vhosts.get(name)
    if vhost is None:
        raise refusal(ReplyCode.NOT_FOUND, f"no vhost '{name}'")
    return vhost
