"""What the operations tests share: a three-node cluster with Prometheus ports, API clients."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
from prometheus_client.parser import text_string_to_metric_families

from warrenmq.cluster.config import Member
from warrenmq.cluster.ctl import ApiClient
from warrenmq.cluster.local import LocalCluster, free_port

READY_S = 60.0


@contextlib.contextmanager
def running_cluster(
    directory: Path, nodes: int = 3, extra_arguments: tuple[str, ...] = ()
) -> Iterator[LocalCluster]:
    """A cluster of local node processes, its logs checked for tracebacks when it stops."""
    members = [
        Member(f"warren-{index}", "127.0.0.1", free_port(), free_port(), free_port())
        for index in range(1, nodes + 1)
    ]
    cluster = LocalCluster(directory, members, extra_arguments=extra_arguments)
    cluster.start_all(log_to_file=True)
    try:
        cluster.wait_healthy(timeout_s=READY_S)
        yield cluster
    finally:
        cluster.stop()
    for member in members:
        node_log = (directory / f"{member.node_id}.log").read_text()
        assert "Traceback" not in node_log, node_log


def api(member: Member, user: str = "guest", password: str = "guest") -> ApiClient:
    return ApiClient(f"http://{member.host}:{member.management_port}", user, password)


def add_user_with_vhost(member: Member, user: str, vhost: str, tags: str = "") -> None:
    """Through `member`'s API: user (password "pw"), vhost, and every permission in it."""
    admin = api(member)
    admin.call("PUT", f"/api/users/{user}", {"password": "pw", "tags": tags})
    admin.call("PUT", f"/api/vhosts/{vhost}")
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    admin.call("PUT", f"/api/permissions/{vhost}/{user}", everything)


def pika_connection(
    member: Member, user: str = "guest", password: str = "guest", vhost: str = "/"
) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            member.host,
            member.amqp_port,
            vhost,
            pika.PlainCredentials(user, password),
            connection_attempts=1,
        )
    )


def metrics(cluster: LocalCluster, node_id: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a node's /metrics, read by Prometheus' own text-format parser."""
    port = cluster.prometheus_ports[node_id]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples
