#!/usr/bin/env bash
# The agent's CPU for a burst of Egress updates (integration/tests/agent_cpu.rs): one
# status-only `ovs-egress agent` against the real API server, 1,000 Nodes, 1,000 Namespaces,
# 100 Pods on its Node, 200 Egresses; each round patches the Egresses 1,000 times at a fixed
# pace (one every 6 ms) and reads the agent's utime+stime, with the same window idle as the
# baseline. Prints every round and the medians of OE_BENCH_ROUNDS (default 5, at least 5).
# Knobs: OE_BENCH_NODES, OE_BENCH_NAMESPACES, OE_BENCH_PODS, OE_BENCH_EGRESSES,
# OE_BENCH_UPDATES, OE_BENCH_INTERVAL_US. Needs root (a network namespace of its own); release
# build; takes about 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-agent-cpu.sh must run as root (network namespaces)" >&2
  exit 1
fi
OVS_EGRESS_GO_BIN="${OVS_EGRESS_GO_BIN:-$(scripts/build-go-tools.sh --print-dir)}"
export OVS_EGRESS_GO_BIN
cargo test --release -p ovs-egress-integration --test agent_cpu -- \
  --ignored --nocapture --test-threads=1
