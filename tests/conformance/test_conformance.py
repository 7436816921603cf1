"""Warren against the recorded RabbitMQ: every scenario (tests/conformance/scenarios) runs on a
three-node Warren cluster, connected to one node, and must print what RabbitMQ printed
(expected/rabbitmq.txt, written by `make conformance-record`), or, where the difference is on
purpose, what differences.py documents (expected/warren.txt)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from warrenmq.cluster.config import Member
from warrenmq.cluster.local import LocalCluster, free_port

from . import scenarios  # noqa: F401  (registers every scenario)
from .differences import DIFFERENCES
from .probe import Broker
from .registry import SCENARIOS
from .run import outcome

EXPECTED = Path(__file__).parent / "expected"
READY_S = 60.0


def recorded(name: str) -> dict[str, str]:
    lines = (EXPECTED / name).read_text().splitlines()
    return dict(line.split("\t", 1) for line in lines if line and not line.startswith("#"))


RABBITMQ = recorded("rabbitmq.txt")
WARREN = recorded("warren.txt")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    directory = tmp_path_factory.mktemp("conformance")
    members = [
        Member(f"warren-{index}", "127.0.0.1", free_port(), free_port(), free_port())
        for index in (1, 2, 3)
    ]
    cluster = LocalCluster(directory, members)
    cluster.start_all(log_to_file=True)
    try:
        cluster.wait_healthy(timeout_s=READY_S)
        member = members[1]
        yield Broker(
            member.host, member.amqp_port, f"http://{member.host}:{member.management_port}"
        )
    finally:
        cluster.stop()
    for member in members:
        node_log = (directory / f"{member.node_id}.log").read_text()
        assert "Traceback" not in node_log, node_log


def test_every_scenario_is_recorded_and_every_difference_is_real() -> None:
    assert sorted(RABBITMQ) == sorted(SCENARIOS)
    assert sorted(WARREN) == sorted(DIFFERENCES)
    same = [name for name in DIFFERENCES if WARREN[name] == RABBITMQ[name]]
    assert same == [], "documented as different, yet RabbitMQ answers the same"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_warren_answers_as_rabbitmq(broker: Broker, name: str) -> None:
    expected = WARREN.get(name, RABBITMQ[name])
    assert outcome(broker, name) == expected, DIFFERENCES.get(name, "RabbitMQ's answer")
