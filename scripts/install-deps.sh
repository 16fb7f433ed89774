#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a Debian machine. Idempotent: it only
# calls apt-get when a tool is missing. Package services are not started (we run our own OVS
# instances inside network namespaces; the machine's own network is never touched).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ovs-vswitchd || need+=(openvswitch-switch)
have ovs-ofctl || need+=(openvswitch-common)
have iptables-restore || need+=(iptables)
have ip || need+=(iproute2)
have ethtool || need+=(ethtool)
have tcpdump || need+=(tcpdump)
have ping || need+=(iputils-ping)
have arping || need+=(iputils-arping)
have gcc || need+=(gcc)
have curl || need+=(curl)
have python3 || need+=(python3)
# promtool and the Prometheus server, for the metrics tests (started by the tests themselves on
# loopback; policy-rc.d below keeps the package's own service from starting).
have promtool || need+=(prometheus)
# kubectl: the `kubectl` package where the Kubernetes or Google Cloud apt repository is
# configured, else Debian's own `kubernetes-client`.
kubectl_pkg=()
if ! have kubectl; then
  if apt-cache show kubectl >/dev/null 2>&1; then kubectl_pkg=(kubectl); else kubectl_pkg=(kubernetes-client); fi
  need+=("${kubectl_pkg[@]}")
fi

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  # Keep apt from starting the packaged services (ovs-vswitchd/ovsdb-server, prometheus).
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! have cargo; then
  echo "install-deps: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true
# Go tools: the real API server of the tests and the demo (kube-apiserver + etcd in one binary)
# and kubectl of the same Kubernetes release, built from integration/apiserver only when the
# machine-wide cache lacks this version (see the script).
"$(dirname "$0")/build-go-tools.sh"
# Helm for the chart's tests, built from the Go module proxy at the release integration/helm
# pins, only when the machine-wide cache lacks it (see the script).
"$(dirname "$0")/build-helm.sh"

echo "install-deps: ok"
