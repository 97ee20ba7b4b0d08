#!/usr/bin/env bash
# Fuzzes the network-facing parsers (watch stream decoder, cosign payload, JSON, git advertisement) with libFuzzer
# for a bounded time: hack/fuzz.sh [SECONDS]   (default 120). Crashers land in .fuzz/crashers; turn each into a
# regression test by copying it to Tests/ReliabilityTests/FuzzCorpus/ (swift test replays that directory).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
swift build --scratch-path .build-fuzz --product meteor-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -D -Xswiftc FUZZING >&2
mkdir -p .fuzz/corpus .fuzz/crashers
cp -n Tests/ReliabilityTests/FuzzCorpus/* .fuzz/corpus/ 2>/dev/null || true
.build-fuzz/debug/meteor-fuzz .fuzz/corpus -max_total_time="$seconds" -max_len=8192 \
  -artifact_prefix=.fuzz/crashers/ -print_final_stats=1
