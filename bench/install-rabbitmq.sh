#!/usr/bin/env bash
# RabbitMQ from Debian's packages, if it is not installed yet (compare.sh, conformance.sh).
set -euo pipefail
if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "installing rabbitmq-server from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
