#!/usr/bin/env bash
# The main job: the user guide's two usage examples on a 3-Node cluster-in-a-box (a real API server,
# the controller, node-4/5/6 each with its own OVS and agent in a network namespace, an
# external host). Every Pod calls the external host, which reports the source address it saw;
# exits non-zero if any Pod is seen with a wrong one. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# The API server and kubectl the tests and the demo run (built by install-deps).
OVS_EGRESS_GO_BIN="$(scripts/build-go-tools.sh --print-dir)"
export OVS_EGRESS_GO_BIN
cargo build --release --locked --bins -p ovs-egress -p ovs-egress-cni -p ovs-egress-integration
exec ./target/release/ovs-egress-demo
