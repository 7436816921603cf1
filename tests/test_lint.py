"""STYLE.md rule 15: the code is ruff- and mypy --strict-clean, and formatted one way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SOURCES = ["amqp", "cluster", "replication"]


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "ruff"), "check", *SOURCES, "tests", "bench"],
        [str(BIN / "ruff"), "format", "--check", *SOURCES, "tests", "bench"],
        [str(BIN / "mypy"), *(f"--package=warrenmq.{source}" for source in SOURCES)],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_clean(command: list[str]) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
