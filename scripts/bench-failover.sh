#!/usr/bin/env bash
# Failover benchmark on a 3-Node cluster-in-a-box (integration/tests/e2e_failover.rs,
# bench_failover_sigkill_gaps, test profile). Needs root, Open vSwitch (scripts/install-deps.sh)
# and the Go tools (scripts/build-go-tools.sh); everything runs in network namespaces the bench
# creates and removes. OE_BENCH_ROUNDS (default 20) times: a Pod calls the external host every
# 20 ms, the holder's agent is killed (SIGKILL), the next Node takes the IP; the gap between the
# last good connection before and the first after is recorded; the agent is restarted and the IP
# moves back. First with the default one-second address lease, then with ipLeaseSeconds: 0 (no
# fencing) as the baseline. Prints every gap, the median and max of each, and the ratio of the
# medians. Takes about 5 minutes with 20 rounds.
#
# `bench-failover.sh sigterm` (bench_handover_sigterm_failed_connections) measures the graceful
# hand-over instead: OE_BENCH_ROUNDS SIGTERMs of the holder's agent, then as many SIGKILLs as
# the baseline on the same box; prints the failed connections per round (median, max, total)
# and the gaps of each.
#
# `bench-failover.sh move` (bench_selector_move_failed_connections) moves the IP between two
# Nodes by the pool's nodeSelector OE_BENCH_ROUNDS times with make-before-break (the default),
# then as many times with egress.handOverTimeout: 0s (the old holder lets go at once) as the
# baseline; prints the failed connections per move (median, max, total).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-failover.sh must run as root (network namespaces, OVS, iptables)" >&2
  exit 1
fi
OVS_EGRESS_GO_BIN="${OVS_EGRESS_GO_BIN:-$(scripts/build-go-tools.sh --print-dir)}"
export OVS_EGRESS_GO_BIN
case "${1:-sigkill}" in
  sigkill)
    cargo test -p ovs-egress-integration --test e2e_failover -- --ignored --nocapture \
      bench_failover_sigkill_gaps 2>&1 | grep -E '^(lease|no lease|median gap)'
    ;;
  sigterm)
    cargo test -p ovs-egress-integration --test e2e_failover -- --ignored --nocapture \
      bench_handover_sigterm_failed_connections 2>&1 | grep -E '^(hand-over|failover)'
    ;;
  move)
    cargo test -p ovs-egress-integration --test e2e_failover -- --ignored --nocapture \
      bench_selector_move_failed_connections 2>&1 | grep -E '^move'
    ;;
  *)
    echo "usage: bench-failover.sh [sigkill|sigterm|move]" >&2
    exit 2
    ;;
esac
