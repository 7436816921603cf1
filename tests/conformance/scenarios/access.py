"""Permissions: what each of configure, write and read guards, and RabbitMQ's texts."""

from __future__ import annotations

from pamqp import commands

from ..probe import Broker, Connection, quote
from ..registry import bind, consume, exchange_declare, get, queue_declare, register, scenario

PASSWORD = "conformance"


def _user(broker: Broker, name: str, configure: str, write: str, read: str) -> Connection:
    """A user named after the scenario with these permissions on '/', connected."""
    user = name.replace(".", "-")
    broker.api("PUT", f"/api/users/{user}", {"password": PASSWORD, "tags": ""})
    permissions = {"configure": configure, "write": write, "read": read}
    broker.api("PUT", f"/api/permissions/%2F/{user}", permissions)
    return broker.connect(user=user, password=PASSWORD)


def _drop_user(broker: Broker, name: str) -> None:
    broker.api("DELETE", f"/api/users/{name.replace('.', '-')}")


ACTIONS = {  # what a user with no rights at all tries on resources guest made
    "declare_queue": lambda c, n: queue_declare(c, f"{n}.new"),
    "declare_queue_passive": lambda c, n: queue_declare(c, n, passive=True),
    "declare_exchange": lambda c, n: exchange_declare(c, f"{n}.newx", "direct"),
    "declare_exchange_passive": lambda c, n: exchange_declare(c, f"{n}.x", "direct", passive=True),
    "delete_queue": lambda c, n: c.call(1, commands.Queue.Delete(queue=n)),
    "delete_exchange": lambda c, n: c.call(1, commands.Exchange.Delete(exchange=f"{n}.x")),
    "bind": lambda c, n: bind(c, n, f"{n}.x", "k"),
    "unbind": lambda c, n: c.call(1, commands.Queue.Unbind(queue=n, exchange=f"{n}.x")),
    "purge": lambda c, n: c.call(1, commands.Queue.Purge(queue=n)),
    "publish": lambda c, n: (c.publish(1, f"{n}.x", "k"), c.sync())[1],
    "publish_default": lambda c, n: (c.publish(1, "", n), c.sync())[1],
    "consume": lambda c, n: consume(c, n),
    "get": lambda c, n: get(c, n),
    "exchange_bind": lambda c, n: c.call(
        1, commands.Exchange.Bind(destination=f"{n}.x", source="amq.direct", routing_key="k")
    ),
}


def _refused(action):
    def run(broker: Broker, name: str) -> list[str]:
        guest = broker.connect()
        queue_declare(guest, name)
        exchange_declare(guest, f"{name}.x", "direct")
        lines = action(_user(broker, name, "", "", ""), name)
        guest.call(1, commands.Queue.Delete(queue=name))
        guest.call(1, commands.Exchange.Delete(exchange=f"{name}.x"))
        _drop_user(broker, name)
        return lines

    return run


for _name, _action in ACTIONS.items():
    register(f"access_refused_{_name}", _refused(_action))


@scenario
def access_configure_own_prefix(broker: Broker, name: str) -> list[str]:
    pattern = f"^{name.replace('.', '[.]')}[.]own"
    connection = _user(broker, name, pattern, pattern, pattern)
    lines = queue_declare(connection, f"{name}.own", exclusive=True)
    lines += queue_declare(connection, f"{name}.other", exclusive=True)
    _drop_user(broker, name)
    return lines


@scenario
def access_bind_needs_write_on_queue_read_on_exchange(broker: Broker, name: str) -> list[str]:
    queue_pattern = f"^{name.replace('.', '[.]')}$"
    connection = _user(broker, name, queue_pattern, queue_pattern, "")
    queue_declare(connection, name, exclusive=True)
    lines = bind(connection, name, "amq.direct", "k")
    _drop_user(broker, name)
    return lines


@scenario
def access_vhost_without_permissions(broker: Broker, name: str) -> list[str]:
    vhost = name.replace(".", "-")
    broker.api("PUT", f"/api/vhosts/{quote(vhost)}")
    connection, _ = broker.start()
    connection.send(0, commands.Connection.TuneOk(channel_max=10, frame_max=131072))
    user = name.replace(".", "-")
    broker.api("PUT", f"/api/users/{user}", {"password": PASSWORD, "tags": ""})
    other, _ = broker.start(user=user, password=PASSWORD)
    other.send(0, commands.Connection.TuneOk(channel_max=10, frame_max=131072))
    lines = other.call(0, commands.Connection.Open(virtual_host=vhost))
    broker.api("DELETE", f"/api/vhosts/{quote(vhost)}")
    _drop_user(broker, name)
    return lines


@scenario
def access_user_deleted_while_connected(broker: Broker, name: str) -> list[str]:
    connection = _user(broker, name, ".*", ".*", ".*")
    _drop_user(broker, name)
    return connection.expect(1)


@scenario
def access_guest_password_change_keeps_connection(broker: Broker, name: str) -> list[str]:
    connection = _user(broker, name, ".*", ".*", ".*")
    user = name.replace(".", "-")
    broker.api("PUT", f"/api/users/{user}", {"password": "changed", "tags": ""})
    lines = queue_declare(connection, name, exclusive=True)
    _drop_user(broker, name)
    return lines
