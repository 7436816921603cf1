#!/usr/bin/env bash
# Build Warren's image from wheels built on this host, installed with --no-index.
#
#   compose/build-image.sh [IMAGE]        (default: warrenmq:local)
#
# BASE_IMAGE picks the base: by default the local Debian base (built by build-base-image.sh when
# missing, no registry needed); with a registry, BASE_IMAGE=python:3.11-slim works as well.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
image="${1:-warrenmq:local}"
base="${BASE_IMAGE:-warren-base:bookworm}"

if [ "$base" = "warren-base:bookworm" ]; then
    "$here/build-base-image.sh" "$base"
fi
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3

context=$(mktemp -d /tmp/warren-image-XXXXXX)
trap 'rm -rf "$context"' EXIT
# cwd is the scratch folder: the checkout's amqp/ folder must not shadow any package
(cd "$context" && "$python" -m pip wheel --quiet --wheel-dir "$context/wheels" "$root")
cp "$here/Dockerfile" "$context/Dockerfile"
docker build --quiet --build-arg "BASE_IMAGE=$base" -t "$image" "$context" >/dev/null
echo "built image $image on $base"
