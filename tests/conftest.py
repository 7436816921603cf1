"""The test tiers: tests/e2e, tests/conformance and tests/docker start processes and containers
on ports, so every test there is marked `ports`, as are the Raft tests on a real pysyncobj.
`-m 'not ports'` runs the fast tiers (tests/amqp, tests/replication, tests/cluster): no
sockets, no sleeps."""

from __future__ import annotations

from pathlib import Path

import pytest

PORT_TIERS = tuple(Path(__file__).parent / tier for tier in ("e2e", "conformance", "docker"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.path.is_relative_to(tier) for tier in PORT_TIERS):
            item.add_marker(pytest.mark.ports)
