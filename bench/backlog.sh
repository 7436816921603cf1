#!/usr/bin/env bash
# A backlog bigger than memory on RabbitMQ and Warren (bench/backlog.py): installs RabbitMQ from
# Debian's packages if missing. Arguments: backlog sizes (default 200000 1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/install-rabbitmq.sh
make install >/dev/null
# run from bench/ so the checkout's amqp/ folder never shadows a package
cd bench && exec ../.venv/bin/python backlog.py "$@"
