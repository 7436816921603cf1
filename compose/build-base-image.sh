#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3.11 locally, for machines that can reach
# Debian's package mirror but no container registry. Reuses the image when it already exists.
#
#   compose/build-base-image.sh [IMAGE]     (default: warren-base:bookworm)
#
# The mirror is read from this machine's own apt configuration at run time.
set -euo pipefail
image="${1:-warren-base:bookworm}"

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image exists: reusing it"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing debootstrap from Debian's packages"
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

mirror=$(grep -rhoE '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
    2>/dev/null | grep -v -- '-security' | head -n 1 | tr -d ' ' || true)
if [ -z "$mirror" ]; then
    echo "no Debian mirror found in apt's configuration" >&2
    exit 1
fi

root=$(mktemp -d /tmp/warren-base-XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm into $root from $mirror (takes about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "built base image $image"
