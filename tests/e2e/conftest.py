"""Real `warren node` processes on loopback, for real clients over real sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warrenmq.cluster.local import free_port

STARTUP_TIMEOUT_S = 30.0


@dataclass
class RunningNode:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def stop(self) -> None:
        """End the node we started, by its pid: SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"node exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"node did not listen on {port} within {timeout_s} s")


def start_node(directory: Path, port: int | None = None, *extra: str) -> RunningNode:
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log_file = open(directory / "node.log", "ab")
    # cwd is the node's own folder, so the repository's amqp/ folder can never shadow anything.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "warrenmq.cluster.cli",
            "node",
            "--port",
            str(port),
            "--raft-port",
            str(free_port()),
            "--management-port",
            str(free_port()),
            "--prometheus-port",
            str(free_port()),
            "--data-dir",
            str(directory / "data"),
            *extra,
        ],
        cwd=directory,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    try:
        wait_for_port(port, process, STARTUP_TIMEOUT_S)
    except Exception:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        raise
    return RunningNode(port, process, directory)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    running = start_node(tmp_path_factory.mktemp("node"))
    yield running
    running.stop()
    node_log = (running.directory / "node.log").read_text()
    assert running.process.returncode == 0, node_log
    assert "Traceback" not in node_log, node_log
