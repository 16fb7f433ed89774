#!/usr/bin/env bash
# The main job. Until the cluster-in-a-box exists: build, then print what every Node of the
# user guide's example cluster would program (`ovs-egress render`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --locked --bin ovs-egress
for node in $(./target/release/ovs-egress render --list-nodes -f examples/cluster.yaml); do
  echo "=== Node $node ==="
  ./target/release/ovs-egress render --node "$node" -f examples/cluster.yaml
done
