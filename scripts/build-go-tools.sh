#!/usr/bin/env bash
# Builds the Go tools of the tests and the demo from integration/apiserver (its own Go module,
# pinned to one Kubernetes release): `ovs-egress-apiserver` (etcd + kube-apiserver in one
# process) and `kubectl` of the same release.
#
# They are built only when missing: the binaries live in a machine-wide cache keyed by a hash of
# the module (go.mod, go.sum, every .go file) and of the Go version, so a fresh clone on the
# same machine reuses them, and Go's own build cache stays warm for a changed module.
#   cache: $OVS_EGRESS_GO_CACHE (default /var/cache/ovs-egress/go), binaries in <cache>/<hash>/bin
#   --print-dir: print that bin directory on stdout (everything else goes to stderr); the tests
#   and the demo take it from $OVS_EGRESS_GO_BIN, else they run this script themselves.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
module="$root/integration/apiserver"
cache="${OVS_EGRESS_GO_CACHE:-/var/cache/ovs-egress/go}"
print_dir=0
[ "${1:-}" = "--print-dir" ] && print_dir=1

fail() { echo "build-go-tools: $*" >&2; exit 1; }

go=$(command -v go || true)
[ -z "$go" ] && [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go
want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$module/go.mod")
[ -n "$go" ] || fail "no Go toolchain: install Go $want or newer (the 'go' command on PATH, or /usr/local/go/bin/go); it builds kube-apiserver, etcd and kubectl from integration/apiserver"
have=$("$go" env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
  fail "$go is Go $have; integration/apiserver/go.mod needs Go $want or newer"
fi

hash=$(
  cd "$module"
  { echo "$have"; sha256sum <"$root/scripts/build-go-tools.sh"; find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum; } |
    sha256sum | cut -c1-16
)
# The release the binaries report (kubectl version, /version), from the pinned module.
release=$(sed -n 's/^\s*k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$module/go.mod")
minor=$(echo "$release" | cut -d. -f2)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=$release -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
out="$cache/$hash"
if [ ! -x "$out/bin/ovs-egress-apiserver" ] || [ ! -x "$out/bin/kubectl" ]; then
  mkdir -p "$cache"
  # One build per hash at a time; a concurrent run waits and then finds the binaries.
  exec 9>"$cache/.lock-$hash"
  flock 9
  if [ ! -x "$out/bin/ovs-egress-apiserver" ] || [ ! -x "$out/bin/kubectl" ]; then
    echo "build-go-tools: building ovs-egress-apiserver and kubectl into $out (a first build takes a while)" >&2
    start=$(date +%s)
    (cd "$module" && "$go" mod download) >&2 ||
      fail "downloading the Go modules of integration/apiserver failed (GOPROXY=$("$go" env GOPROXY)); the Go module proxy must be reachable, or the modules present in $("$go" env GOMODCACHE)"
    tmp="$out.tmp.$$"
    rm -rf "$tmp"
    (cd "$module" && "$go" build -trimpath -ldflags="$ldflags" -o "$tmp/bin/" \
      ./cmd/ovs-egress-apiserver k8s.io/kubernetes/cmd/kubectl) >&2 ||
      { rm -rf "$tmp"; fail "go build in integration/apiserver failed (see above)"; }
    rm -rf "$out"
    mv "$tmp" "$out"
    echo "build-go-tools: built in $(( $(date +%s) - start )) s" >&2
  fi
  exec 9>&-
fi
if [ "$print_dir" = 1 ]; then echo "$out/bin"; else echo "build-go-tools: $out/bin" >&2; fi
