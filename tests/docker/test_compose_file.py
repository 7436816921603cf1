"""The compose file users run: up, publish, down with volumes kept, up again, nothing lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from warrenmq.cluster.config import Member
from warrenmq.cluster.ctl import ApiClient, ApiFailure
from warrenmq.cluster.load import Load
from warrenmq.cluster.local import fetch_cluster_status, free_port

from .conftest import NODES, PASSWORD, ROOT, USER

COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="no docker-compose on this machine"
)


def compose(project: str, environment: dict[str, str], *arguments: str) -> None:
    subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "-p", project, *arguments],
        check=True,
        env={**os.environ, **environment},
        timeout=300,
        stdout=subprocess.DEVNULL,
    )


def wait_for_leader(management_ports: dict[str, int], timeout_s: float = 90.0) -> str:
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        leaders = {
            (fetch_cluster_status(Member(node, "127.0.0.1", 0, 0, port), 1.0) or {}).get("leader")
            for node, port in management_ports.items()
        }
        if len(leaders) == 1 and None not in leaders:
            return str(leaders.pop())
        time.sleep(0.3)
    raise TimeoutError("the compose cluster agreed on no leader")


def assert_operable(management: dict[str, int], prometheus: dict[str, int]) -> None:
    """The API on one container answers for all three (it asks the others by their compose
    host names); each container's /metrics parses."""
    client = ApiClient(f"http://127.0.0.1:{management[NODES[0]]}", USER, PASSWORD)
    deadline_s = time.monotonic() + 30

    def running() -> list[bool] | None:
        # A node answers its API before it has applied the first boot's default user: until
        # then the right password gets 401. Agreeing on a leader does not wait for that.
        status, answer = client.request("GET", "/api/nodes")
        if status == 401:
            return None
        if status >= 300:
            raise ApiFailure(status, answer)
        return [node["running"] for node in answer]

    while running() != [True, True, True]:
        assert time.monotonic() < deadline_s, client.request("GET", "/api/nodes")
        time.sleep(0.3)
    for port in prometheus.values():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            names = {f.name for f in text_string_to_metric_families(answer.read().decode())}
        assert {"rabbitmq_raft_term", "rabbitmq_connections"} <= names


async def test_compose_down_and_up_keeps_every_confirmed_message(warren_image: str) -> None:
    project = f"warren-test-{uuid.uuid4().hex[:8]}"
    amqp = {node: free_port() for node in NODES}
    management = {node: free_port() for node in NODES}
    prometheus = {node: free_port() for node in NODES}
    environment = {
        "WARREN_IMAGE": warren_image,
        "WARREN_DEFAULT_USER": USER,
        "WARREN_DEFAULT_PASS": PASSWORD,
        "WARREN_CLUSTER_SECRET": uuid.uuid4().hex,
    }
    for index, node in enumerate(NODES, start=1):
        environment[f"WARREN_AMQP_PORT_{index}"] = str(amqp[node])
        environment[f"WARREN_MANAGEMENT_PORT_{index}"] = str(management[node])
        environment[f"WARREN_PROMETHEUS_PORT_{index}"] = str(prometheus[node])
    urls = [f"amqp://{USER}:{PASSWORD}@127.0.0.1:{amqp[node]}/" for node in NODES]
    compose(project, environment, "up", "-d")
    try:
        wait_for_leader(management)
        assert_operable(management, prometheus)
        load = Load(urls, urls, "durable", message_count=1000)
        await load.declare(urls[0])
        await load.publish(time.monotonic() + 60)
        assert len(load.stats.confirmed) == 1000
        compose(project, environment, "down")  # containers go, named volumes stay
        compose(project, environment, "up", "-d")
        wait_for_leader(management)
        await load.consume(0, time.monotonic() + 60)
        assert not load.stats.lost and load.stats.duplicates == 0, load.stats.summary()
    finally:
        compose(project, environment, "down", "-v")
