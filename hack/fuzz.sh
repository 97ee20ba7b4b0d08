#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the parsers that read bytes from the network — the watch stream decoder,
# the cosign simple-signing payload, JSON, the git ref advertisement (Sources/MeteorFuzzTargets) — for a bounded
# time: hack/fuzz.sh [SECONDS]   (default 120)
#
# SwiftPM builds the MeteorFuzzTargets closure instrumented with -sanitize=fuzzer; the entry point
# (hack/fuzz/LibFuzzerEntry.swift, LLVMFuzzerTestOneInput) is linked against it here with swiftc, because libFuzzer
# brings its own `main` and a SwiftPM executable cannot take it. The corpus starts from
# Tests/ReliabilityTests/FuzzCorpus and grows in .fuzz/corpus. A crash leaves its input in .fuzz/crashers/: copy it
# into Tests/ReliabilityTests/FuzzCorpus/ and `swift test` replays it as a regression test from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
scratch=.build-fuzz
swift build -c release --scratch-path "$scratch" --target MeteorFuzzTargets -Xswiftc -sanitize=fuzzer >&2

# Link: every object of the closure (host-tool builds excepted) and every C module map, as SwiftPM would pass them.
python3 - "$scratch" <<'PY'
import os, shlex, sys
scratch = sys.argv[1]
root = os.path.join(scratch, "release") + "/"
objects, maps = [], []
for base in (root, os.path.join(scratch, "checkouts")):
    for directory, _, files in os.walk(base, followlinks=True):
        if "-tool.build" in directory:
            continue
        for f in files:
            path = os.path.join(directory, f)
            if base == root and f.endswith(".o"):
                objects.append(path)
            if f == "module.modulemap":
                maps.append(path)
args = []
for m in maps:
    args += ["-Xcc", "-fmodule-map-file=" + m, "-Xcc", "-I" + os.path.dirname(m)]
with open(os.path.join(scratch, "link.rsp"), "w") as out:
    out.write("\n".join(shlex.quote(a) for a in args + objects))
PY
swiftc -sanitize=fuzzer -parse-as-library -O hack/fuzz/LibFuzzerEntry.swift -I "$scratch/release/Modules" "@$scratch/link.rsp" -o "$scratch/meteor-libfuzzer" >&2

mkdir -p .fuzz/corpus .fuzz/crashers
cp -n Tests/ReliabilityTests/FuzzCorpus/* .fuzz/corpus/
if ! "$scratch/meteor-libfuzzer" -max_total_time="$seconds" -max_len=4096 -artifact_prefix=.fuzz/crashers/ -print_final_stats=1 .fuzz/corpus; then
  echo "hack/fuzz.sh: crash; the input is in .fuzz/crashers/ (replay: $scratch/meteor-libfuzzer FILE)" >&2
  exit 1
fi
