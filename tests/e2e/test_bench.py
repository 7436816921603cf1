"""`warren bench` against a real node: every confirmed message consumed in every queue it was
routed to, the report complete, PerfTest's flags honoured."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import RunningNode


def _bench(node: RunningNode, tmp_path, *arguments: str, lossless: bool = True) -> dict:
    command = [sys.executable, "-m", "warrenmq.cluster.cli", "bench", "--url", node.url]
    command += ["--duration", "1.5", "--drain-idle-s", "1", "--json", *arguments]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == (0 if lossless else 1), done.stderr  # 1: a message went missing
    return json.loads(done.stdout)


def test_bench_reports_rates_latencies_and_no_loss(node: RunningNode, tmp_path) -> None:
    report = _bench(node, tmp_path, "--producers", "2", "--consumers", "2", "--size", "16")
    assert report["confirmed"] > 0 and report["published"] == report["confirmed"]
    assert report["consumed"] == report["confirmed"]
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["left_in_queues"] == 0
    for latency in ("confirm_latency_ms", "end_to_end_latency_ms"):
        assert set(report[latency]) == {"p50", "p95", "p99", "max", "mean"}
    assert report["workload"]["size"] == 16 and report["workload"]["confirm"] == 1000
    assert 0 < report["confirmed_per_s"] and 0 < report["consumed_while_publishing_per_s"]
    assert len(report["client_cpu_percent"]["producers"]) == 2


def test_bench_tells_a_message_the_consumers_missed_from_one_the_broker_lost(
    node: RunningNode, tmp_path
) -> None:
    """With no consumer every confirmed message counts as lost to the run: the queue still
    holds each of them, and the report says so."""
    arguments = ("--producers", "1", "--consumers", "0", "--size", "16")
    report = _bench(node, tmp_path, *arguments, lossless=False)
    assert report["confirmed"] > 0 and report["consumed"] == 0
    assert report["lost"] == report["confirmed"] == report["left_in_queues"]


def test_bench_fans_out_to_a_pattern_of_queues_with_multiple_acks(
    node: RunningNode, tmp_path
) -> None:
    report = _bench(
        node,
        tmp_path,
        *("--exchange", "bench-fanout", "--type", "fanout"),
        *("--queue-pattern", "fanout-%d", "--queue-pattern-from", "2", "--queue-pattern-to", "4"),
        *("--consumers", "3", "--qos", "50", "--multi-ack-every", "20", "--persistent"),
    )
    assert report["workload"]["queues"] == 3
    assert report["confirmed"] > 0 and report["consumed"] == 3 * report["confirmed"]
    assert report["lost"] == 0 and report["duplicated"] == 0


def test_bench_holds_its_rate_over_many_queues(node: RunningNode, tmp_path) -> None:
    report = _bench(
        node,
        tmp_path,
        *("--queue-pattern", "many-%d", "--queue-pattern-to", "3"),
        *("--producers", "3", "--consumers", "3", "--rate", "100", "--size", "64"),
    )
    # 3 producers × 100/s × 1.5 s, give or take a message each
    assert 3 * 148 <= report["published"] <= 3 * 152
    assert report["consumed"] == report["confirmed"] == report["published"]
    assert report["lost"] == 0


def test_bench_refuses_bodies_too_small_for_its_stamp(node: RunningNode, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq.cluster.cli", "bench", "--url", node.url, "--size", "8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "at least 16 bytes" in result.stderr
