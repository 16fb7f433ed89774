#!/usr/bin/env bash
# Latency from a new Pod port in OVSDB to its flows installed by the datapath runtime
# (median and p99 over 100 Pods, with a same-run ovs-ofctl baseline). Needs root and OVS.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test -p ovs-egress-integration --release --test datapath_bench -- --ignored --nocapture "$@"
