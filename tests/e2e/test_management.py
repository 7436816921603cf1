"""The management HTTP API, Prometheus /metrics and `warren ctl` against three real nodes.

JSON shapes follow RabbitMQ's HTTP API docs; metrics are read by Prometheus' own text parser;
`warren ctl` runs as a real process and its exit codes are what scripts branch on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from warrenmq.cluster.ctl import ApiClient
from warrenmq.cluster.local import LocalCluster

from .operations import api, metrics, pika_connection, running_cluster

QUEUE = "ops.orders"
PUBLISHED = 5
HELD = 2  # delivered to a consumer with prefetch 2 and not acknowledged


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("management")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def traffic(cluster: LocalCluster) -> Iterator[dict[str, pika.BlockingConnection]]:
    """A publisher on the first node and a consumer holding HELD messages on the second."""
    publisher = pika_connection(cluster.members[0])
    channel = publisher.channel()
    channel.confirm_delivery()
    channel.exchange_declare("ops.x", "topic")
    channel.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(QUEUE, "ops.x", "orders.#")
    for number in range(PUBLISHED):
        channel.basic_publish("ops.x", "orders.eu", str(number).encode())
    consumer = pika_connection(cluster.members[1])
    consuming = consumer.channel()
    consuming.basic_qos(prefetch_count=HELD)
    held: list[int] = []
    consuming.basic_consume(QUEUE, lambda ch, method, *_: held.append(method.delivery_tag))
    while len(held) < HELD:
        consumer.process_data_events(time_limit=1)
    yield {"publisher": publisher, "consumer": consumer}
    consumer.close()
    publisher.close()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline_s, what
        time.sleep(0.05)


def test_queue_shape_and_counts(cluster: LocalCluster, traffic: object) -> None:
    leader = cluster.wait_healthy()
    for member in cluster.members:  # every node answers from its own copy of the state
        client = api(member)
        wait_for(
            lambda client=client: (
                client.get(f"/api/queues/%2F/{QUEUE}")["messages_unacknowledged"] == HELD
            ),
            "the consumer's deliveries reached every node",
        )
        queue = client.get(f"/api/queues/%2F/{QUEUE}")
        assert queue["name"] == QUEUE and queue["vhost"] == "/"
        assert queue["type"] == "quorum" and queue["durable"] is True
        assert (queue["messages"], queue["messages_ready"], queue["messages_unacknowledged"]) == (
            PUBLISHED,
            PUBLISHED - HELD,
            HELD,
        )
        assert queue["consumers"] == 1
        assert queue["leader"] == leader
        assert (
            sorted(queue["members"])
            == sorted(queue["online"])
            == ["warren-1", "warren-2", "warren-3"]
        )
        assert queue["arguments"] == {"x-queue-type": "quorum"}
    listed = api(cluster.members[2]).get("/api/queues")
    assert [queue["name"] for queue in listed] == [QUEUE]


def test_overview_nodes_exchanges_bindings(cluster: LocalCluster, traffic: object) -> None:
    client = api(cluster.members[2])
    overview = client.get("/api/overview")
    assert overview["product_name"] == "Warren"
    assert overview["object_totals"]["queues"] == 1
    assert overview["object_totals"]["connections"] == 2  # on two other nodes
    assert overview["queue_totals"]["messages"] == PUBLISHED
    assert {listener["protocol"] for listener in overview["listeners"]} >= {"amqp", "http"}
    nodes = client.get("/api/nodes")
    assert [node["name"] for node in nodes] == ["warren-1", "warren-2", "warren-3"]
    for node in nodes:
        assert node["running"] is True and node["mem_alarm"] is False
        assert node["mem_used"] > 0 and node["mem_limit"] > node["mem_used"]
        assert node["disk_free"] > node["disk_free_limit"]
    exchanges = {exchange["name"]: exchange for exchange in client.get("/api/exchanges/%2F")}
    assert exchanges["ops.x"]["type"] == "topic"
    assert exchanges[""]["type"] == "direct"  # the default exchange, as RabbitMQ lists it
    assert client.get("/api/exchanges/%2F/amq.default")["name"] == ""
    bindings = client.get("/api/bindings/%2F")
    assert {
        "source": "ops.x",
        "vhost": "/",
        "destination": QUEUE,
        "destination_type": "queue",
        "routing_key": "orders.#",
        "arguments": {},
        "properties_key": "orders.#",
    } in bindings
    assert any(b["source"] == "" and b["routing_key"] == QUEUE for b in bindings)


def test_connections_channels_consumers_of_the_whole_cluster(
    cluster: LocalCluster, traffic: object
) -> None:
    client = api(cluster.members[2])  # holds no client connection itself
    connections = client.get("/api/connections")
    assert sorted(connection["node"] for connection in connections) == ["warren-1", "warren-2"]
    for connection in connections:
        assert connection["user"] == "guest" and connection["vhost"] == "/"
        assert connection["protocol"] == "AMQP 0-9-1" and connection["ssl"] is False
        assert connection["client_properties"]["product"] == "Pika Python Client Library"
        assert connection["name"].startswith("127.0.0.1:")
    channels = client.get("/api/channels")
    consuming = [channel for channel in channels if channel["consumer_count"]]
    assert len(consuming) == 1 and consuming[0]["messages_unacknowledged"] == HELD
    assert any(channel["confirm"] for channel in channels)
    (consumer,) = client.get("/api/consumers")
    assert consumer["queue"] == {"name": QUEUE, "vhost": "/"}
    assert consumer["ack_required"] is True and consumer["prefetch_count"] == HELD
    assert consumer["channel_details"]["node"] == "warren-2"
    assert consumer["active"] is True and consumer["activity_status"] == "up"


def test_access_by_tags(cluster: LocalCluster) -> None:
    admin = api(cluster.members[0])
    anonymous = ApiClient(admin.base_url, "", "")
    assert anonymous.request("GET", "/api/overview")[0] == 401
    assert api(cluster.members[0], "guest", "wrong").request("GET", "/api/overview") == (
        401,
        {"error": "not_authorized", "reason": "Login failed"},
    )
    admin.call("PUT", "/api/users/nobody", {"password": "pw", "tags": ""})
    assert api(cluster.members[0], "nobody", "pw").request("GET", "/api/overview") == (
        401,
        {"error": "not_authorized", "reason": "Not management user"},
    )
    admin.call("PUT", "/api/users/manager", {"password": "pw", "tags": ["management"]})
    admin.call("PUT", "/api/vhosts/team")
    admin.call(
        "PUT", "/api/permissions/team/manager", {"configure": ".*", "write": ".*", "read": ".*"}
    )
    manager = api(cluster.members[1], "manager", "pw")
    wait_for(
        lambda: manager.request("GET", "/api/vhosts/team")[0] == 200, "permissions reached warren-2"
    )
    assert [vhost["name"] for vhost in manager.get("/api/vhosts")] == ["team"]
    assert manager.request("GET", "/api/users")[0] == 401
    assert manager.request("GET", "/api/queues/%2F")[0] == 404  # no permissions in /
    assert manager.call("PUT", "/api/queues/team/work", {"durable": True}) is None
    assert [queue["name"] for queue in manager.get("/api/queues")] == ["work"]
    admin.call("PUT", "/api/users/watcher", {"password": "pw", "tags": "monitoring"})
    watcher = api(cluster.members[0], "watcher", "pw")
    assert {vhost["name"] for vhost in watcher.get("/api/vhosts")} >= {"/", "team"}
    assert watcher.request("GET", "/api/definitions")[0] == 401
    admin.call("DELETE", "/api/vhosts/team")


def test_writes_through_the_api(cluster: LocalCluster) -> None:
    client = api(cluster.members[1])
    assert client.request("PUT", "/api/exchanges/%2F/api.x", {"type": "fanout"})[0] == 201
    assert client.request("PUT", "/api/queues/%2F/api.q", {"durable": True})[0] == 201
    assert client.request("PUT", "/api/queues/%2F/api.q", {"durable": True})[0] == 204
    status, answer = client.request("PUT", "/api/queues/%2F/api.q", {"durable": False})
    assert status == 400 and "inequivalent arg 'durable'" in answer["reason"]
    status, _ = client.request("POST", "/api/bindings/%2F/e/api.x/q/api.q", {"routing_key": "k"})
    assert status == 201
    assert [b["routing_key"] for b in client.get("/api/bindings/%2F/e/api.x/q/api.q")] == ["k"]
    assert client.request("DELETE", "/api/bindings/%2F/e/api.x/q/api.q/k")[0] == 204
    assert client.get("/api/bindings/%2F/e/api.x/q/api.q") == []
    assert client.request("DELETE", "/api/queues/%2F/api.q/")[0] == 204  # trailing slash too
    assert client.request("DELETE", "/api/queues/%2F/api.q")[0] == 404
    assert client.request("DELETE", "/api/exchanges/%2F/api.x")[0] == 204
    assert client.request("PUT", "/api/users/u", {"password": "p"}) == (
        400,
        {"error": "bad_request", "reason": "tags_not_present"},
    )
    status, answer = client.request(
        "PUT", "/api/permissions/%2F/guest", {"configure": "(", "write": "", "read": ""}
    )
    assert status == 400 and "invalid_regexp" in answer["reason"]
    status, answer = client.request(
        "PUT", "/api/permissions/nowhere/guest", {"configure": "", "write": "", "read": ""}
    )
    assert (status, answer["reason"]) == (400, "vhost_or_user_not_found")


def test_health_checks(cluster: LocalCluster) -> None:
    member = cluster.members[0]
    client = api(member)
    assert client.request("GET", "/api/health/checks/alarms") == (200, {"status": "ok"})
    assert client.request("GET", "/api/health/checks/local-alarms") == (200, {"status": "ok"})
    assert client.request("GET", "/api/health/checks/virtual-hosts")[0] == 200
    assert client.request("GET", "/api/health/checks/node-is-quorum-critical")[0] == 200
    path = f"/api/health/checks/port-listener/{member.amqp_port}"
    assert client.request("GET", path) == (200, {"status": "ok"})
    status, answer = client.request("GET", "/api/health/checks/port-listener/1")
    assert (status, answer["status"], answer["missing"]) == (503, "failed", 1)
    assert client.request("GET", "/api/health/checks/protocol-listener/amqp091")[0] == 200
    status, answer = client.request("GET", "/api/health/checks/protocol-listener/amqps")
    assert (status, answer["reason"]) == (503, "No active listener")


def test_prometheus_metrics(cluster: LocalCluster, traffic: object) -> None:
    leader = cluster.wait_healthy()
    samples = metrics(cluster, leader)
    labels = {"vhost": "/", "queue": QUEUE}
    assert (labels, PUBLISHED) in samples["rabbitmq_queue_messages"]
    assert (labels, PUBLISHED - HELD) in samples["rabbitmq_queue_messages_ready"]
    assert (labels, HELD) in samples["rabbitmq_queue_messages_unacked"]
    assert (labels, 1) in samples["rabbitmq_queue_consumers"]
    assert samples["rabbitmq_queues"] == [({}, 1)]
    follower = next(m.node_id for m in cluster.members if m.node_id != leader)
    follower_samples = metrics(cluster, follower)
    assert "rabbitmq_queue_messages" not in follower_samples  # each queue is reported once
    publisher_node = metrics(cluster, "warren-1")
    assert publisher_node["rabbitmq_global_messages_received_total"][0][1] >= PUBLISHED
    assert publisher_node["rabbitmq_global_messages_confirmed_total"][0][1] >= PUBLISHED
    assert publisher_node["rabbitmq_connections"] == [({}, 1)]
    assert publisher_node["rabbitmq_connections_opened_total"][0][1] >= 1
    assert publisher_node["rabbitmq_channels_opened_total"][0][1] >= 1
    assert publisher_node["rabbitmq_build_info"][0][0]["product_name"] == "Warren"
    consumer_node = metrics(cluster, "warren-2")
    assert consumer_node["rabbitmq_global_messages_delivered_total"][0][1] >= HELD
    assert consumer_node["rabbitmq_consumers"] == [({}, 1)]
    for node_id in ("warren-1", "warren-2", "warren-3"):
        each = metrics(cluster, node_id)
        for name in (
            "rabbitmq_raft_term_total",
            "rabbitmq_raft_log_commit_index",
            "rabbitmq_raft_entry_commit_latency_seconds",
            "rabbitmq_process_resident_memory_bytes",
            "rabbitmq_resident_memory_limit_bytes",
            "rabbitmq_disk_space_available_bytes",
            "rabbitmq_alarms_memory_used_watermark",
            "rabbitmq_channels",
            "process_cpu_seconds_total",
        ):
            assert name in each, (node_id, name)
        assert each["rabbitmq_raft_log_commit_index"][0][1] > 0


def ctl(cluster: LocalCluster, *arguments: str, node: int = 0) -> subprocess.CompletedProcess[str]:
    member = cluster.members[node]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "warrenmq.cluster.cli",
            "ctl",
            "--management-port",
            str(member.management_port),
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cluster.directory,
    )


def test_ctl(cluster: LocalCluster, traffic: object, tmp_path: Path) -> None:
    listed = ctl(cluster, "list_queues", "name", "messages", "messages_unacknowledged", "type")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "name\tmessages\tmessages_unacknowledged\ttype",
        f"{QUEUE}\t{PUBLISHED}\t{HELD}\tquorum",
    ]
    bindings = ctl(cluster, "list_bindings", "source_name", "destination_name", "routing_key")
    assert f"ops.x\t{QUEUE}\torders.#" in bindings.stdout.splitlines()
    consumers = ctl(
        cluster, "list_consumers", "queue_name", "prefetch_count", "--formatter", "json"
    )
    assert json.loads(consumers.stdout) == [{"queue_name": QUEUE, "prefetch_count": HELD}]
    assert ctl(cluster, "list_connections", "user", "state").stdout.count("guest\trunning") == 2
    assert ctl(cluster, "add_user", "erin", "erin-pw").returncode == 0
    assert (
        ctl(cluster, "set_permissions", "erin", "^erin", "^erin", "^erin", node=1).returncode == 0
    )
    assert ctl(cluster, "change_password", "erin", "erin-pw2").returncode == 0
    erin = pika_connection(cluster.members[2], "erin", "erin-pw2")
    erin.channel().queue_declare("erin.q")
    erin.close()
    assert ctl(cluster, "add_vhost", "ctl-vhost").returncode == 0
    assert "ctl-vhost" in ctl(cluster, "list_vhosts").stdout
    assert ctl(cluster, "delete_user", "erin").returncode == 0
    assert ctl(cluster, "delete_user", "erin").returncode == 65  # no such user
    assert ctl(cluster, "--password", "wrong", "list_users").returncode == 77
    assert ctl(cluster, "check_alarms").returncode == 0
    assert ctl(cluster, "check_port_listener", str(cluster.members[0].amqp_port)).returncode == 0
    failed = ctl(cluster, "check_port_listener", "1")
    assert failed.returncode == 69 and "No active listener" in failed.stdout
    assert ctl(cluster, "check_protocol_listener", "amqp").returncode == 0
    assert ctl(cluster, "no_such_command").returncode == 64
    exported = tmp_path / "definitions.json"
    assert ctl(cluster, "export_definitions", str(exported)).returncode == 0
    assert QUEUE in {queue["name"] for queue in json.loads(exported.read_text())["queues"]}


def test_ctl_sets_lists_and_clears_policies(cluster: LocalCluster) -> None:
    """rabbitmqctl's set_policy, list_policies, clear_policy (and the operator ones)."""
    made = ctl(
        cluster,
        "set_policy",
        "ctl-limit",
        "^ctl\\.",
        '{"max-length": 3}',
        "--priority",
        "2",
        "--apply-to",
        "queues",
    )
    assert made.returncode == 0, made.stderr
    capped = ctl(cluster, "set_operator_policy", "ctl-cap", ".*", '{"message-ttl": 60000}')
    assert capped.returncode == 0, capped.stderr
    listed = ctl(cluster, "list_policies", "name", "pattern", "apply-to", "priority", node=1)
    assert "ctl-limit\t^ctl\\.\tqueues\t2" in listed.stdout.splitlines()
    assert "ctl-cap" in ctl(cluster, "list_operator_policies", node=2).stdout
    bad = ctl(cluster, "set_policy", "ctl-bad", ".*", '{"max-length": "many"}')
    assert bad.returncode == 65 and "is not a valid maximum length" in bad.stderr
    assert ctl(cluster, "set_policy", "ctl-bad", ".*", "{not json").returncode == 64
    assert ctl(cluster, "clear_policy", "ctl-limit").returncode == 0
    assert ctl(cluster, "clear_operator_policy", "ctl-cap").returncode == 0
    assert "ctl-limit" not in ctl(cluster, "list_policies").stdout


def topology(client: ApiClient) -> dict[str, object]:
    """What a definitions export says, less the version fields that name the product."""
    definitions = client.get("/api/definitions")
    return {
        key: sorted(definitions[key], key=lambda entry: json.dumps(entry, sort_keys=True))
        for key in ("users", "vhosts", "permissions", "exchanges", "queues", "bindings")
    }


def test_definitions_round_trip_into_a_fresh_cluster(
    cluster: LocalCluster, traffic: object, tmp_path: Path
) -> None:
    exported = api(cluster.members[0]).get("/api/definitions")
    with running_cluster(tmp_path / "fresh", nodes=1) as fresh:
        client = api(fresh.members[0])
        assert client.request("POST", "/api/definitions", exported)[0] == 204
        assert topology(client) == topology(api(cluster.members[0]))
        connection = pika_connection(fresh.members[0])
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("ops.x", "orders.us", b"routed by the imported binding")
        assert channel.queue_declare(QUEUE, passive=True).method.message_count == 1
        connection.close()


def test_definitions_exported_by_rabbitmq_import(tmp_path: Path) -> None:
    """A file RabbitMQ 3.10.8 exported: its users log in with their passwords, its topology
    routes, its permissions hold."""
    definitions = json.loads(
        (Path(__file__).parent / "data" / "rabbitmq-3.10.8-definitions.json").read_text()
    )
    with running_cluster(tmp_path / "from-rabbitmq", nodes=1) as fresh:
        member = fresh.members[0]
        assert api(member).request("POST", "/api/definitions", definitions)[0] == 204
        bob = pika_connection(member, "bob", "pw", vhost="v2")  # the password set in RabbitMQ
        channel = bob.channel()
        channel.confirm_delivery()
        channel.basic_publish("orders", "eu.paris", b"m")
        method, _, body = channel.basic_get("orders.eu", auto_ack=True)
        assert body == b"m"
        queue = api(member).get("/api/queues/v2/orders.eu")
        assert queue["type"] == "quorum" and queue["arguments"]["x-delivery-limit"] == 5
        bob.close()


def test_policies_exported_by_rabbitmq_take_effect_on_existing_queues(tmp_path: Path) -> None:
    """A RabbitMQ 3.10.8 export with a queue policy (max-length 2, drop-head), an exchange
    policy (alternate-exchange) and an operator policy (a runtime parameter in its file),
    imported into a cluster whose queue already holds five messages."""
    definitions = json.loads(
        (Path(__file__).parent / "data" / "rabbitmq-3.10.8-policies.json").read_text()
    )
    with running_cluster(tmp_path / "policies", nodes=1) as fresh:
        member = fresh.members[0]
        connection = pika_connection(member)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("orders.eu", durable=True)
        for number in range(5):
            channel.basic_publish("", "orders.eu", b"%d" % number)
        assert api(member).request("POST", "/api/definitions", definitions)[0] == 204
        assert channel.queue_declare("orders.eu", passive=True).method.message_count == 2
        queue = api(member).get("/api/queues/%2F/orders.eu")
        assert (queue["policy"], queue["operator_policy"]) == ("orders-limit", "ttl-cap")
        assert queue["effective_policy_definition"] == {
            "max-length": 2,
            "overflow": "drop-head",
            "message-ttl": 3600000,
        }
        channel.basic_publish("orders.x", "nowhere", b"to the alternate exchange")
        assert channel.basic_get("unrouted.q", auto_ack=True)[2] == b"to the alternate exchange"
        exported = api(member).get("/api/definitions")
        by_name = sorted(definitions["policies"], key=lambda policy: policy["name"])
        assert exported["policies"] == by_name
        assert exported["parameters"] == [
            {key: entry[key] for key in ("value", "vhost", "component", "name")}
            for entry in definitions["parameters"]
        ]
        connection.close()


def test_publish_get_and_close_through_the_api(cluster: LocalCluster) -> None:
    """What rabbitmqadmin and the management UI do: publish, get with an ackmode, and close a
    connection held by another node."""
    client = api(cluster.members[2])
    client.call("PUT", "/api/queues/%2F/api.msgs", {"durable": True, "auto_delete": "false"})
    published = client.call(
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        {
            "routing_key": "api.msgs",
            "payload": "aGVsbG8gAP8=",
            "payload_encoding": "base64",
            "properties": {"headers": {"h": 1}, "delivery_mode": 2, "message_id": "m1"},
        },
    )
    assert published == {"routed": True}
    unrouted = {"routing_key": "nowhere", "payload": "x", "payload_encoding": "string"}
    assert client.call("POST", "/api/exchanges/%2F/amq.default/publish", unrouted) == {
        "routed": False
    }
    peek = client.call(
        "POST",
        "/api/queues/%2F/api.msgs/get",
        {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"},
    )
    assert len(peek) == 1 and peek[0]["payload_encoding"] == "base64"
    assert peek[0]["payload"] == "aGVsbG8gAP8=" and peek[0]["payload_bytes"] == 8
    assert peek[0]["properties"] == {"headers": {"h": 1}, "delivery_mode": 2, "message_id": "m1"}
    assert peek[0]["redelivered"] is False
    taken = client.call(
        "POST",
        "/api/queues/%2F/api.msgs/get",
        {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"},
    )
    assert taken[0]["redelivered"] is True  # it was requeued by the first get
    assert client.get("/api/queues/%2F/api.msgs")["messages"] == 0
    assert client.request("POST", "/api/queues/%2F/api.msgs/get", {"count": 1})[0] == 400
    for bad in ({"count": "many"}, {"count": True}, {"truncate": "x"}, {"truncate": -1}):
        bad_get = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto", **bad}
        status, answer = client.request("POST", "/api/queues/%2F/api.msgs/get", bad_get)
        assert (status, answer["error"]) == (400, "bad_request"), bad  # once a 500
    hex_get = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "hex"}
    assert client.request("POST", "/api/queues/%2F/api.msgs/get", hex_get) == (
        400,
        {"error": "bad_request", "reason": "Unsupported encoding. Please use auto or base64."},
    )
    assert (
        client.call(
            "POST",
            "/api/queues/%2F/api.msgs/get",
            {"count": "2", "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 2.7},
        )
        == []
    )  # RabbitMQ's parse_int: digits in a string, a number truncated
    before = {connection["name"] for connection in client.get("/api/connections")}
    held = pika_connection(cluster.members[0])
    (entry,) = [c for c in client.get("/api/connections") if c["name"] not in before]
    assert entry["node"] == "warren-1"
    path = "/api/connections/" + urllib.parse.quote(entry["name"], safe="")
    status, _ = client.request("DELETE", path)
    assert status == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        held.sleep(5)
    assert closed.value.reply_code == 320
    assert client.request("DELETE", path)[0] == 404
    client.call("DELETE", "/api/queues/%2F/api.msgs")


def test_quorum_critical_once_a_node_is_lost(cluster: LocalCluster, traffic: object) -> None:
    """Last in this module: it kills a node."""
    cluster.kill("warren-3")
    client = api(cluster.members[0])
    wait_for(
        lambda: client.request("GET", "/api/health/checks/node-is-quorum-critical")[0] == 503,
        "warren-1 became quorum critical",
    )
    _, answer = client.request("GET", "/api/health/checks/node-is-quorum-critical")
    assert {"name": QUEUE, "virtual_host": "/"} in answer["queues"]
    assert ctl(cluster, "check_if_node_is_quorum_critical").returncode == 69
    nodes = {node["name"]: node["running"] for node in client.get("/api/nodes")}
    assert nodes == {"warren-1": True, "warren-2": True, "warren-3": False}


def test_metrics_cover_every_queue(tmp_path: Path) -> None:
    """Amazon MQ's CloudWatch stops at 500 queues; /metrics has them all."""
    count = 600
    queues = [{"name": f"q{number:03}", "vhost": "/"} for number in range(count)]
    with running_cluster(tmp_path, nodes=1) as single:
        assert (
            api(single.members[0]).request("POST", "/api/definitions", {"queues": queues})[0] == 204
        )
        samples = metrics(single, "warren-1")
        assert len(samples["rabbitmq_queue_messages_ready"]) == count
        assert samples["rabbitmq_queues"] == [({}, count)]
