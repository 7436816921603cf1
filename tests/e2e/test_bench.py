"""`warren bench` against a real node: every confirmed message consumed, the report complete."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import RunningNode


def test_bench_reports_rates_latencies_and_no_loss(node: RunningNode, tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "warrenmq.cluster.cli",
            "bench",
            "--url",
            node.url,
            "--producers",
            "2",
            "--consumers",
            "2",
            "--size",
            "16",
            "--duration",
            "1.5",
            "--drain-idle-s",
            "1",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["confirmed"] > 0 and report["published"] == report["confirmed"]
    assert report["consumed"] == report["confirmed"]
    assert report["lost"] == 0 and report["duplicated"] == 0
    for latency in ("confirm_latency_ms", "end_to_end_latency_ms"):
        assert set(report[latency]) == {"p50", "p95", "p99", "max", "mean"}
    assert report["workload"]["size"] == 16


def test_bench_refuses_bodies_too_small_for_its_stamp(node: RunningNode, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq.cluster.cli", "bench", "--url", node.url, "--size", "8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "at least 16 bytes" in result.stderr
