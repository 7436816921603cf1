#!/usr/bin/env bash
# Record RabbitMQ's side of the conformance scenarios (see bench/conformance.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/install-rabbitmq.sh
make install >/dev/null
# run from bench/ so the checkout's amqp/ folder never shadows a package
cd bench && exec ../.venv/bin/python conformance.py
