#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy with warnings as errors, and all tests
# (the datapath tests need root: they start private OVS instances in network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# The API server and kubectl the tests and the demo run (built by install-deps).
OVS_EGRESS_GO_BIN="$(scripts/build-go-tools.sh --print-dir)"
export OVS_EGRESS_GO_BIN
# Helm for the chart's tests (built by install-deps).
OVS_EGRESS_HELM="$(scripts/build-helm.sh --print-path)"
export OVS_EGRESS_HELM
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
