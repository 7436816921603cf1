"""Run the conformance scenarios against one broker and print one line per scenario:
`name<TAB>outcome`, the outcome being the scenario's observations joined by ' | '.

    python -m tests.conformance.run --port 5672 --api http://127.0.0.1:15672 > out.txt

`record.sh` runs this against a real RabbitMQ to write `expected/rabbitmq-3.10.8.txt`;
test_conformance.py runs it against a Warren cluster and compares.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import traceback

from . import scenarios  # noqa: F401  (registers every scenario)
from .probe import Broker
from .registry import SCENARIOS


def outcome(broker: Broker, name: str) -> str:
    try:
        lines = SCENARIOS[name](broker, f"c.{name}")
    except Exception as error:  # a scenario's own failure is an outcome too, and shows which
        traceback.print_exc(file=sys.stderr)
        lines = [f"ERROR {type(error).__name__}: {error}"]
    finally:
        broker.close_all()
    return " | ".join(lines)


def run(broker: Broker, pattern: str = "*") -> dict[str, str]:
    return {name: outcome(broker, name) for name in SCENARIOS if fnmatch.fnmatchcase(name, pattern)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--api", default="http://127.0.0.1:15672")
    parser.add_argument("--only", default="*", help="a glob of scenario names")
    options = parser.parse_args()
    broker = Broker(options.host, options.port, options.api)
    for name in SCENARIOS:
        if fnmatch.fnmatchcase(name, options.only):
            print(f"{name}\t{outcome(broker, name)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
