#!/usr/bin/env bash
# Fuzzes the network-facing parsers (watch stream decoder, cosign payload, JSON, git advertisement) for a bounded
# time: hack/fuzz.sh [SECONDS]   (default 120). Mutation fuzzing over Tests/ReliabilityTests/FuzzCorpus (see
# meteor-fuzz's source for why not libFuzzer). On a crash the input is kept in .fuzz/crashers/; copy it into
# Tests/ReliabilityTests/FuzzCorpus/ and `swift test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
swift build -c release --scratch-path .build-release --product meteor-fuzz >&2
mkdir -p .fuzz/crashers
if ! .build-release/release/meteor-fuzz --fuzz "$seconds" Tests/ReliabilityTests/FuzzCorpus; then
  keep=".fuzz/crashers/crash-$(date +%s)"
  cp .fuzz/last-input "$keep"
  echo "hack/fuzz.sh: crash; input kept in $keep" >&2
  exit 1
fi
