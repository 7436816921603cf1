"""Random faults under load, seeded (a short run of `warren nemesis`): every kind of fault once
or more, then zero confirmed messages lost, no second delivery of one message left unmarked as
redelivered, one leader and every node serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from warrenmq.cluster import nemesis
from warrenmq.cluster.local import LocalCluster

from .operations import running_cluster

SEED = 25  # six rounds: kill-leader, isolate, kill-leader, restart-all, kill-follower, pause
ROUNDS = 6


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path, extra_arguments=("--fault-injection",)) as cluster:
        yield cluster


async def test_random_faults_lose_no_confirmed_message(cluster: LocalCluster) -> None:
    report = await nemesis.run(cluster, ROUNDS, SEED, rate_per_s=200.0)
    assert {fault for fault, _ in report.faults} == set(nemesis.FAULTS), report.summary()
    stats = report.stats
    assert len(stats.confirmed) > 1000, report.summary()
    assert not stats.lost, report.summary()
    assert stats.unmarked_redeliveries == 0, report.summary()
    assert report.leader is not None
    print(report.summary())
