"""A cluster of local node processes: what `warren up`, the failover benchmark and tests run.

Each node is `python -m warrenmq.cluster.cli node` with its own ports and data dir, started in the
data dir (so a checkout's amqp/ folder never shadows a package). Nodes are signalled by pid only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request
from pathlib import Path

from warrenmq.cluster.config import Member
from warrenmq.cluster.management import CLUSTER_STATUS_PATH

__all__ = [
    "LocalCluster",
    "add_base_port_argument",
    "consecutive_members",
    "fetch_cluster_status",
    "free_port",
    "members_from",
]

STOP_TIMEOUT_S = 75.0  # a stopping node may take up to SNAPSHOT_AT_STOP_S for its snapshot


_HANDED_OUT: set[int] = set()  # ports free_port gave this process: never twice
_PORTS_FROM = 10_000


def _ephemeral_ports_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as port_range:
            return int(port_range.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on, for nodes started by tests and benchmarks.

    Chosen below the kernel's ephemeral range: a port from that range (what binding port 0
    gives) can be taken as the local port of some client connection while a killed node is
    down, and the node then cannot bind it again when it restarts.
    """
    upper = _ephemeral_ports_start()
    for _ in range(1000):
        port = random.randrange(_PORTS_FROM, upper)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port between {_PORTS_FROM} and {upper}")


def consecutive_members(
    nodes: int, host: str, amqp_port: int, raft_port: int, management_port: int
) -> list[Member]:
    """warren-1 … warren-N, each port one above the previous node's."""
    return [
        Member(
            f"warren-{index + 1}",
            host,
            amqp_port + index,
            raft_port + index,
            management_port + index,
        )
        for index in range(nodes)
    ]


def members_from(base_port: int) -> list[Member]:
    """The three loopback members of a tool's own cluster: AMQP ports from `base_port`, Raft
    ports 1000 above, management ports 2000 above."""
    return consecutive_members(3, "127.0.0.1", base_port, base_port + 1000, base_port + 2000)


def add_base_port_argument(parser: argparse.ArgumentParser, default: int) -> None:
    """--base-port of the tools that run, kill and restart their own cluster (`members_from`)."""
    parser.add_argument(
        "--base-port",
        type=int,
        default=default,
        help="AMQP ports from here; Raft +1000, management +2000 (keep them below the kernel's "
        "ephemeral range: a killed node must be able to bind its ports again)",
    )


def fetch_cluster_status(member: Member, timeout_s: float = 2.0) -> dict[str, typing.Any] | None:
    url = f"http://{member.host}:{member.management_port}{CLUSTER_STATUS_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return typing.cast(dict[str, typing.Any], json.load(response))
    except (urllib.error.URLError, OSError, ValueError):
        return None


class LocalCluster:
    def __init__(
        self,
        directory: Path,
        members: list[Member],
        log_level: str = "INFO",
        extra_arguments: typing.Sequence[str] = (),
        prometheus_ports: typing.Sequence[int] | None = None,
    ) -> None:
        self.directory = directory.resolve()
        self.members = members
        # /metrics of each node: given, or free ports (15692 would clash on one host)
        ports = prometheus_ports or [free_port(member.host) for member in members]
        self.prometheus_ports = {m.node_id: port for m, port in zip(members, ports, strict=True)}
        self.log_level = log_level
        self.extra_arguments = list(extra_arguments)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.secret = self._secret()

    def _secret(self) -> str:
        """One secret per local cluster, kept beside its data so a restart rejoins."""
        path = self.directory / "cluster-secret"
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(24))
            path.chmod(0o600)
        return path.read_text().strip()

    def member(self, node_id: str) -> Member:
        return next(member for member in self.members if member.node_id == node_id)

    def start(self, node_id: str, log_to_file: bool = False) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "warrenmq.cluster.cli",
            "node",
            "--node-id",
            node_id,
            "--data-dir",
            str(self.directory),
            "--cluster-secret",
            self.secret,
            "--log-level",
            self.log_level,
            "--prometheus-port",
            str(self.prometheus_ports[node_id]),
            *self.extra_arguments,
        ]
        for each in self.members:
            command += [
                "--member",
                f"{each.node_id}@{each.host}:{each.amqp_port}:"
                f"{each.raft_port}:{each.management_port}",
            ]
        output: typing.Any = None
        if log_to_file:
            output = open(self.directory / f"{node_id}.log", "ab")  # noqa: SIM115
        try:
            process = subprocess.Popen(
                command,
                cwd=self.directory,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
            )
        finally:
            if output is not None:
                output.close()
        self.processes[node_id] = process
        return process

    def start_all(self, log_to_file: bool = False) -> None:
        for member in self.members:
            self.start(member.node_id, log_to_file)

    def is_running(self, node_id: str) -> bool:
        process = self.processes.get(node_id)
        return process is not None and process.poll() is None

    def signal(self, node_id: str, signal_number: int) -> None:
        os.kill(self.processes[node_id].pid, signal_number)

    def kill(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGKILL)
        self.processes[node_id].wait(timeout=10)

    def stop(self, node_id: str | None = None) -> None:
        """SIGTERM (the node says goodbye to its clients), then SIGKILL if it lingers."""
        chosen = [node_id] if node_id else list(self.processes)
        for each in chosen:
            if self.is_running(each):
                with contextlib.suppress(ProcessLookupError):  # it may die as we ask
                    self.signal(each, signal.SIGTERM)
        deadline_s = time.monotonic() + STOP_TIMEOUT_S
        for each in chosen:
            process = self.processes[each]
            try:
                process.wait(timeout=max(0.1, deadline_s - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait()

    def serving(self, node_id: str) -> bool:
        """The node accepts AMQP connections (it listens only once it has joined)."""
        member = self.member(node_id)
        with (
            contextlib.suppress(OSError),
            socket.create_connection((member.host, member.amqp_port), 0.2),
        ):
            return True
        return False

    def leader(self, exclude: typing.Collection[str] = ()) -> str | None:
        """The leader every running node (but `exclude`) agrees on, if they agree."""
        leaders = set()
        for member in self.members:
            if member.node_id in exclude or not self.is_running(member.node_id):
                continue
            status = fetch_cluster_status(member)
            leaders.add(status["leader"] if status else None)
        return leaders.pop() if len(leaders) == 1 else None

    def wait_healthy(
        self, node_ids: typing.Sequence[str] | None = None, timeout_s: float = 60.0
    ) -> str:
        """Every given node (all, by default) serves AMQP and they name one leader: return it."""
        node_ids = list(node_ids or [member.node_id for member in self.members])
        others = [member.node_id for member in self.members if member.node_id not in node_ids]
        agreed: list[str] = []

        def healthy() -> bool:
            if not all(self.serving(node_id) for node_id in node_ids):
                return False
            leader = self.leader(exclude=others)
            agreed[:] = [leader] if leader else []
            return bool(leader)

        self.wait_for(healthy, timeout_s, f"{node_ids} serving with one leader")
        return agreed[0]

    def wait_for(self, condition: typing.Callable[[], object], timeout_s: float, what: str) -> None:
        deadline_s = time.monotonic() + timeout_s
        while time.monotonic() < deadline_s:
            if condition():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{what} did not happen within {timeout_s} s")
