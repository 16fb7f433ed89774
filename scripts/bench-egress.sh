#!/usr/bin/env bash
# Egress benchmarks (integration/tests/egress_bench.rs) on a private OVS in a network namespace
# of their own: one more selected Pod -> its flow installed (median, p99 over 100 Pods per run,
# with a bare `ovs-ofctl add-flow` baseline in the same run), and 200 local egress IPs applied
# from scratch with the time of each step. RUNS (default 5, at least 5). Needs root and Open
# vSwitch (scripts/install-deps.sh). Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}" cargo test --release -p ovs-egress-integration --test egress_bench -- \
  --ignored --nocapture --test-threads=1
