#!/usr/bin/env bash
# How soon after an API outage a change is realized (integration/benches/api_outage.rs), release
# build: 2-Node cluster-in-a-box, OE_BENCH_ROUNDS (default 5) rounds of "kubectl apply -> Pod
# seen with the egress IP" with the API up (baseline) and right after a stop of
# OE_OUTAGE_SECS (default 20) seconds, for the default retry cap and for a 30 s cap. Needs root
# and Open vSwitch; everything runs in network namespaces the bench creates and removes. Takes
# about 2 x rounds x (outage + 5 s).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-api-outage.sh must run as root (network namespaces, OVS, iptables)" >&2
  exit 1
fi
OVS_EGRESS_GO_BIN="$(scripts/build-go-tools.sh --print-dir)"
export OVS_EGRESS_GO_BIN
cargo bench -p ovs-egress-integration --bench api_outage
