"""Users, vhosts and permissions: made through the management API on one node, enforced on
another, each rule of RabbitMQ's access-control table hit by a real pika client.

The 403 and 530 texts were checked against RabbitMQ 3.10.8 with the same client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from warrenmq.cluster.config import Member
from warrenmq.cluster.local import LocalCluster

from .operations import add_user_with_vhost, api, pika_connection, running_cluster

PASSWORD = "alice-secret"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("access")) as cluster:
        admin = api(cluster.members[0])
        admin.call("PUT", "/api/users/alice", {"password": PASSWORD, "tags": ""})
        admin.call(
            "PUT",
            "/api/permissions/%2F/alice",
            {"configure": "^alice\\.", "write": "^alice\\.", "read": "^alice\\."},
        )
        admin.call("PUT", "/api/vhosts/v2")
        guest = pika_connection(cluster.members[0])
        channel = guest.channel()
        channel.queue_declare("other.q")
        channel.exchange_declare("other.x", "direct")
        guest.close()
        yield cluster


@pytest.fixture
def alice(cluster: LocalCluster) -> Iterator[pika.BlockingConnection]:
    """alice connects to another node than the one her user was created on."""
    connection = pika_connection(cluster.members[1], "alice", PASSWORD)
    yield connection
    if connection.is_open:
        connection.close()


def refused(kind: str, name: str, user: str = "alice") -> str:
    return f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user '{user}'"


RULES: list[
    tuple[str, Callable[[pika.adapters.blocking_connection.BlockingChannel], object], str]
] = [
    (
        "queue.declare needs configure",
        lambda ch: ch.queue_declare("other.new"),
        refused("queue", "other.new"),
    ),
    (
        "queue.declare with a DLX needs write on it",
        lambda ch: ch.queue_declare("alice.dl", arguments={"x-dead-letter-exchange": "other.x"}),
        refused("exchange", "other.x"),
    ),
    (
        "queue.delete needs configure",
        lambda ch: ch.queue_delete("other.q"),
        refused("queue", "other.q"),
    ),
    (
        "exchange.declare needs configure",
        lambda ch: ch.exchange_declare("other.y", "fanout"),
        refused("exchange", "other.y"),
    ),
    (
        "exchange.declare with an alternate exchange needs write on it",
        lambda ch: ch.exchange_declare(
            "alice.ae", "direct", arguments={"alternate-exchange": "other.x"}
        ),
        refused("exchange", "other.x"),
    ),
    (
        "exchange.delete needs configure",
        lambda ch: ch.exchange_delete("other.x"),
        refused("exchange", "other.x"),
    ),
    (
        "queue.bind needs write on the queue",
        lambda ch: ch.queue_bind("other.q", "alice.x"),
        refused("queue", "other.q"),
    ),
    (
        "queue.bind needs read on the exchange",
        lambda ch: ch.queue_bind("alice.q", "other.x"),
        refused("exchange", "other.x"),
    ),
    (
        "queue.unbind needs read on the exchange",
        lambda ch: ch.queue_unbind("alice.q", "amq.direct"),
        refused("exchange", "amq.direct"),
    ),
    (
        "exchange.bind needs read on the source",
        lambda ch: ch.exchange_bind("alice.x", "amq.fanout"),
        refused("exchange", "amq.fanout"),
    ),
    (
        "exchange.bind needs write on the destination",
        lambda ch: ch.exchange_bind("other.x", "alice.x"),
        refused("exchange", "other.x"),
    ),
    (
        "basic.publish needs write",
        lambda ch: (ch.confirm_delivery(), ch.basic_publish("other.x", "k", b"m")),
        refused("exchange", "other.x"),
    ),
    (
        "the default exchange is amq.default",
        lambda ch: (ch.confirm_delivery(), ch.basic_publish("", "alice.q", b"m")),
        refused("exchange", "amq.default"),
    ),
    ("basic.get needs read", lambda ch: ch.basic_get("other.q"), refused("queue", "other.q")),
    (
        "basic.consume needs read",
        lambda ch: ch.basic_consume("other.q", lambda *_: None),
        refused("queue", "other.q"),
    ),
    ("queue.purge needs read", lambda ch: ch.queue_purge("other.q"), refused("queue", "other.q")),
]


def _own_objects(connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.exchange_declare("alice.x", "direct")
    channel.queue_declare("alice.q")
    channel.close()


@pytest.mark.parametrize(("rule", "action", "text"), RULES, ids=[rule for rule, _, _ in RULES])
def test_each_rule_refuses_with_rabbitmqs_text(
    alice: pika.BlockingConnection, rule: str, action: Callable[..., object], text: str
) -> None:
    _own_objects(alice)
    channel = alice.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        action(channel)
    assert (closed.value.reply_code, closed.value.reply_text) == (403, text)
    assert alice.is_open  # a channel error: the connection goes on


def test_what_the_permissions_allow_works(alice: pika.BlockingConnection) -> None:
    channel = alice.channel()
    channel.confirm_delivery()
    channel.exchange_declare("alice.orders", "direct")
    channel.queue_declare("alice.inbox")
    channel.queue_bind("alice.inbox", "alice.orders", "k")
    channel.basic_publish("alice.orders", "k", b"hello", mandatory=True)
    method, _, body = channel.basic_get("alice.inbox", auto_ack=True)
    assert method is not None and body == b"hello"
    channel.queue_declare("other.q", passive=True)  # passive declare needs no permission


def test_vhost_access_and_login(cluster: LocalCluster) -> None:
    member = cluster.members[2]
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as denied:
        pika_connection(member, "alice", PASSWORD, vhost="v2")
    assert "NOT_ALLOWED - access to vhost 'v2' refused for user 'alice'" in str(denied.value)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as missing:
        pika_connection(member, "alice", PASSWORD, vhost="nowhere")
    assert "NOT_ALLOWED - vhost nowhere not found" in str(missing.value)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as wrong:
        pika_connection(member, "alice", "not-her-password")
    assert "ACCESS_REFUSED - Login was refused" in str(wrong.value)


def test_changed_permissions_apply_to_open_connections(
    cluster: LocalCluster, alice: pika.BlockingConnection
) -> None:
    permissions = {"configure": "^alice\\.", "write": "^alice\\.", "read": "^alice\\."}
    for round_number in range(5):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            alice.channel().queue_declare("shared.r")
        channel = alice.channel()
        permissions["configure"] = "^(alice|shared)\\."
        api(cluster.members[round_number % 2 * 2]).call(
            "PUT", "/api/permissions/%2F/alice", permissions
        )
        try:  # at once, on another node: its refusal waits until it has caught up
            channel.queue_declare("shared.q")  # the same connection, now allowed
        finally:
            permissions["configure"] = "^alice\\."
            api(cluster.members[0]).call("PUT", "/api/permissions/%2F/alice", permissions)
        wait_until_applied(cluster.members[1], permissions)


def wait_until_applied(member: Member, permissions: dict[str, str]) -> None:
    """The node alice is connected to has applied the change (the log reaches it a little
    after the node that took the request answered): an allowed answer is read as it stands,
    so a permission taken away is seen only then."""
    deadline_s = time.monotonic() + 10
    while api(member).get("/api/permissions/%2F/alice")["configure"] != permissions["configure"]:
        assert time.monotonic() < deadline_s, "the permission change never reached the node"
        time.sleep(0.02)


def test_a_user_and_vhost_made_through_one_node_let_the_client_in_at_once_on_every_node(
    cluster: LocalCluster,
) -> None:
    """As with RabbitMQ, a change the API has answered is seen everywhere: a node that has
    not applied it yet catches up with the log before it refuses (CI once saw a 530 here)."""
    for round_number in range(10):
        made_on = round_number % 3
        user, vhost = f"fresh{round_number}", f"fresh-v{round_number}"
        add_user_with_vhost(cluster.members[made_on], user, vhost, tags="management")
        for other in (1, 2):
            member = cluster.members[(made_on + other) % 3]
            if other == round_number % 2 + 1:
                assert api(member, user, "pw").get("/api/whoami")["name"] == user
            connection = pika_connection(member, user, "pw", vhost=vhost)
            connection.channel().queue_declare(f"{user}.q")  # the permission is there too
            connection.close()


def test_deleting_a_user_or_vhost_closes_its_connections(cluster: LocalCluster) -> None:
    admin = api(cluster.members[0])
    admin.call("PUT", "/api/users/carol", {"password": "pw", "tags": ""})
    admin.call("PUT", "/api/vhosts/gone")
    for vhost in ("%2F", "gone"):
        admin.call(
            "PUT",
            f"/api/permissions/{vhost}/carol",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
    in_gone = pika_connection(cluster.members[1], "carol", "pw", vhost="gone")
    in_default = pika_connection(cluster.members[2], "carol", "pw")
    admin.call("DELETE", "/api/vhosts/gone")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as vhost_closed:
        in_gone.process_data_events(time_limit=5)
        in_gone.sleep(5)
    assert (vhost_closed.value.reply_code, vhost_closed.value.reply_text) == (
        320,
        "CONNECTION_FORCED - vhost 'gone' is deleted",
    )
    admin.call("DELETE", "/api/users/carol")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as user_closed:
        in_default.sleep(5)
    assert (user_closed.value.reply_code, user_closed.value.reply_text) == (
        320,
        "CONNECTION_FORCED - user 'carol' is deleted",
    )
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika_connection(cluster.members[0], "carol", "pw")


def test_users_are_stored_as_salted_hashes_only(cluster: LocalCluster, tmp_path: Path) -> None:
    """No password reaches the log or the state: only RabbitMQ's salted SHA-256 form."""
    admin = api(cluster.members[0])
    admin.call("PUT", "/api/users/dave", {"password": "dave-plain-text", "tags": "monitoring"})
    user = admin.get("/api/users/dave")
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert "dave-plain-text" not in json.dumps(user)
    for member in cluster.members:
        journal = cluster.directory / member.node_id / "raft.journal"
        assert b"dave-plain-text" not in journal.read_bytes()


def test_logs_are_one_json_object_per_line(cluster: LocalCluster) -> None:
    """Structured logs: connection open/close with user and peer, refused logins, leaders."""
    events: list[dict[str, object]] = []
    for member in cluster.members:
        for line in (cluster.directory / f"{member.node_id}.log").read_text().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
    by_event: dict[object, list[dict[str, object]]] = {}
    for entry in events:
        assert {"time", "level", "logger", "message"} <= entry.keys()
        by_event.setdefault(entry.get("event"), []).append(entry)
    opened = [e for e in by_event["connection_opened"] if e["user"] == "alice"]
    assert opened and opened[0]["peer_host"] == "127.0.0.1" and opened[0]["vhost"] == "/"
    assert any(e["user"] == "alice" for e in by_event["connection_closed"])
    refused = [e for e in by_event["login_refused"] if e["user"] == "alice"]
    assert refused and refused[0]["protocol"] == "amqp" and refused[0]["level"] == "warning"
    assert {e["leader"] for e in by_event["leader_changed"]} - {None}
