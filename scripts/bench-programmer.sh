#!/usr/bin/env bash
# Flow programmer benchmark: FlowProgrammer::sync of 10,000 flows vs the bare
# `ovs-ofctl --bundle add-flows` of the same flows, alternately on one private OVS started in a
# network namespace of its own; prints medians of RUNS (default 7, at least 5) runs and the ratio.
# Needs root and Open vSwitch (scripts/install-deps.sh). Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-7}" cargo test --release -p ovs-egress-integration --test programmer_bench -- \
  --ignored --nocapture --test-threads=1
