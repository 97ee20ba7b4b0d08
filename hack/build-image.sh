#!/usr/bin/env bash
# Builds the operator image with docker or podman: hack/build-image.sh [IMAGE]   (default quay.io/thoth-station/meteor-operator:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-quay.io/thoth-station/meteor-operator:dev}"
engine="$(command -v podman || command -v docker || true)"
[ -n "$engine" ] || { echo "hack/build-image.sh: neither podman nor docker is installed" >&2; exit 1; }
"$engine" build -t "$image" .
echo "$image"
