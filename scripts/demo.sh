#!/usr/bin/env bash
# The main job: the user guide's two usage examples on a 3-Node cluster-in-a-box (kube-emu,
# the controller, node-4/5/6 each with its own OVS and agent in a network namespace, an
# external host). Every Pod calls the external host, which reports the source address it saw;
# exits non-zero if any Pod is seen with a wrong one. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --locked --bins -p ovs-egress -p kube-emu -p ovs-egress-integration
exec ./target/release/ovs-egress-demo
