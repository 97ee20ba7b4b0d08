#!/usr/bin/env bash
# Regenerates docs/shower.png: the Meteor Shower's home page with Meteors Ready, Failed and Building, taken by the
# browser test (headless Chromium against the sandbox). Needs chromium (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs
SHOWER_SCREENSHOT="$PWD/docs/shower.png" swift test --filter ShowerBrowserTests
echo "wrote docs/shower.png"
