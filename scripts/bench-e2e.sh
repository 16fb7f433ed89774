#!/usr/bin/env bash
# End-to-end benchmarks on a 3-Node cluster-in-a-box (integration/benches/e2e.rs), release build.
# Needs root, Open vSwitch (scripts/install-deps.sh) and kubectl; everything runs in network
# namespaces the bench creates and removes. Takes about 3-5 minutes. It prints:
#   [1] per scenario (static Egress with another Node's IP, static Egress with a local IP,
#       pool-allocated Egress, pool nodeSelector move): `kubectl apply` -> first packet leaving
#       with the egress IP, median / p90 / max of OE_BENCH_ROUNDS (default 20) rounds; the
#       baseline "API" (the same apply until the object shows on a watch), the ratio of the
#       medians, what controller + agent + datapath add (median of packet - API), and how many
#       rounds stayed within the issue's 1 s bound;
#   [2] 1,000 and 750 pool Egresses over 3 Nodes, OE_BENCH_BURSTS (default 5) runs each: per
#       run and as medians, the time to create them (API alone, baseline), the time until every
#       one has its final status (ratio), the time to delete them all and release the IPs, and
#       each agent's and the controller's CPU seconds and VmHWM over the burst; then the final
#       statuses by Node and reason and the /32 addresses each Node holds;
#   [3] CPU (utime+stime, % of a core) and VmRSS/VmHWM of each agent and the controller: idle
#       over 10 s with no Egress, and idle over 10 s holding 1,000 (and 750) Egresses.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-e2e.sh must run as root (network namespaces, OVS, iptables)" >&2
  exit 1
fi
cargo bench -p ovs-egress-integration --bench e2e
