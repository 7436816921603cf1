"""Record what a real RabbitMQ does in every conformance scenario (tests/conformance): starts
one RabbitMQ node of Debian's package with its management API on ports of its own, runs the
scenarios against it, writes tests/conformance/expected/rabbitmq.txt and stops the node.

Run through bench/conformance.sh (it installs RabbitMQ if missing). CI only runs Warren's side
and compares with the file this writes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from rabbit import RabbitCluster  # bench/rabbit.py: this script runs from bench/

REPOSITORY = Path(__file__).resolve().parent.parent
EXPECTED = REPOSITORY / "tests" / "conformance" / "expected" / "rabbitmq.txt"
AMQP_PORT, MANAGEMENT_PORT = 55680, 55690


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="warren-conformance-") as scratch:
        directory = Path(scratch)
        directory.chmod(0o755)  # the rabbitmq user must reach its data dirs below
        rabbit = RabbitCluster(
            directory / "rabbitmq",
            nodes=1,
            amqp_port=AMQP_PORT,
            management_port=MANAGEMENT_PORT,
            name="warrenconformance",
        )
        rabbit.directory.mkdir()
        try:
            rabbit.start()
            version = rabbit.version()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.conformance.run",
                    "--port",
                    str(AMQP_PORT),
                    "--api",
                    f"http://127.0.0.1:{MANAGEMENT_PORT}",
                ],
                cwd=REPOSITORY,
                capture_output=True,
                text=True,
                timeout=1800,
                check=True,
            )
        finally:
            rabbit.stop()
    EXPECTED.parent.mkdir(exist_ok=True)
    EXPECTED.write_text(f"# recorded against RabbitMQ {version}\n" + done.stdout)
    print(f"{len(done.stdout.splitlines())} scenarios recorded in {EXPECTED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
