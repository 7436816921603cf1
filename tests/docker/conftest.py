"""Warren's containers, started through testcontainers' container and network API.

This machine's compose tool is docker-compose 1.x, which testcontainers' compose support (it runs
`docker compose`) does not drive; the containers here are the compose file's services, made
with the same image, command, environment and network aliases. The compose file itself is
exercised by test_compose_file.py. No image is pulled: the image is built locally by
compose/build-image.sh, and testcontainers' reaper (an image from a registry) stays off.
"""

from __future__ import annotations

import os
import subprocess
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.network import Network  # noqa: E402

from warrenmq.cluster.config import Member  # noqa: E402
from warrenmq.cluster.local import fetch_cluster_status, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "warrenmq:test"
NODES = ("warren-1", "warren-2", "warren-3")
USER, PASSWORD = "warren", "warren-test"
READY_S = 90.0


def docker_answers() -> bool:
    try:
        return bool(docker.from_env().ping())
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not docker_answers(), reason="no Docker engine answers")


@pytest.fixture(scope="session")
def warren_image() -> str:
    """Build the image as a user without a registry would: base image, host wheels, no pulls."""
    subprocess.run(
        ["bash", str(ROOT / "compose" / "build-image.sh"), IMAGE], check=True, timeout=1200
    )
    return IMAGE


class ContainerCluster:
    """Three Warren containers on their own network, each with AMQP and management published."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.network = Network()
        self.containers: dict[str, DockerContainer] = {}
        self.amqp_ports = {node: free_port() for node in NODES}
        self.management_ports = {node: free_port() for node in NODES}
        self.secret = os.urandom(16).hex()

    def start(self) -> None:
        self.network.create()
        members: list[str] = []
        for node in NODES:
            members += ["--member", f"{node}@{node}:5672:25672:15672"]
        for node in NODES:
            container = (
                DockerContainer(self.image)
                .with_network(self.network)
                .with_network_aliases(node)
                .with_kwargs(hostname=node)
                .with_envs(
                    WARREN_CLUSTER_SECRET=self.secret,
                    WARREN_DEFAULT_USER=USER,
                    WARREN_DEFAULT_PASS=PASSWORD,
                )
                .with_bind_ports(5672, self.amqp_ports[node])
                .with_bind_ports(15672, self.management_ports[node])
                .with_command(
                    [
                        "node",
                        "--node-id",
                        node,
                        "--host",
                        node,
                        "--bind-host",
                        "0.0.0.0",
                        "--data-dir",
                        "/var/lib/warren",
                        *members,
                    ]
                )
            )
            self.containers[node] = container.start()

    def stop(self) -> None:
        for container in self.containers.values():
            try:
                container.stop()
            except Exception:
                pass
        self.network.remove()

    def wrapped(self, node: str) -> typing.Any:
        return self.containers[node].get_wrapped_container()

    def url(self, node: str) -> str:
        return f"amqp://{USER}:{PASSWORD}@127.0.0.1:{self.amqp_ports[node]}/"

    def status(self, node: str) -> dict[str, typing.Any] | None:
        member = Member(node, "127.0.0.1", 0, 0, self.management_ports[node])
        return fetch_cluster_status(member, timeout_s=1.0)

    def leaders(self, nodes: typing.Iterable[str]) -> set[str | None]:
        """The leader each node names (None for one that does not answer or knows none)."""
        return {(self.status(node) or {}).get("leader") for node in nodes}

    def wait_for_leader(
        self,
        nodes: typing.Sequence[str] = NODES,
        timeout_s: float = READY_S,
        other_than: str | None = None,
    ) -> str:
        """Every given node answers and names the same leader (not `other_than`); return it."""
        deadline_s = time.monotonic() + timeout_s
        while time.monotonic() < deadline_s:
            leaders = self.leaders(nodes)
            if len(leaders) == 1 and None not in leaders and other_than not in leaders:
                return typing.cast(str, leaders.pop())
            time.sleep(0.2)
        logs = {node: self.wrapped(node).logs(tail=30).decode() for node in nodes}
        raise TimeoutError(f"{list(nodes)} agreed on no leader within {timeout_s} s: {logs}")

    def disconnect(self, node: str) -> None:
        self.network._network.disconnect(self.wrapped(node))  # no public API for this

    def connect(self, node: str) -> None:
        self.network.connect(self.wrapped(node).id, network_aliases=[node])


@pytest.fixture
def cluster(warren_image: str) -> Iterator[ContainerCluster]:
    cluster = ContainerCluster(warren_image)
    cluster.start()
    logs: dict[str, str] = {}
    try:
        cluster.wait_for_leader()
        yield cluster
    finally:
        logs = {node: cluster.wrapped(node).logs().decode(errors="replace") for node in NODES}
        cluster.stop()
    for node, text in logs.items():
        assert "Traceback" not in text, f"{node}:\n{text}"
