#!/usr/bin/env bash
# Warren against RabbitMQ on this machine: installs RabbitMQ from Debian's packages if missing,
# runs the same workloads on a three-node cluster of each, prints Warren/RabbitMQ ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/install-rabbitmq.sh
make install >/dev/null
# run from bench/ so the checkout's amqp/ folder never shadows a package
cd bench && exec ../.venv/bin/python compare.py
