#!/usr/bin/env bash
# Builds `helm` for the chart's tests from the Go module proxy, at the release pinned in
# integration/helm/go.mod (every dependency's hash in its go.sum).
#
# Built only when missing: the binary lives in a machine-wide cache, one directory per Helm
# release, <cache>/helm-<version>/helm, and is rebuilt when the binary there was built by another
# Go version or from other dependencies than the module pins (checked from its build info), so
# a fresh clone on the same machine reuses it. A build with a cold Go build cache takes long
# (tens of minutes on 2 cores); after build-go-tools.sh, which shares most packages, seconds.
#   cache: $OVS_EGRESS_HELM_CACHE (default /var/cache/ovs-egress)
#   --print-path: print the binary's path on stdout (everything else goes to stderr); the tests
#   take it from $OVS_EGRESS_HELM, else they run this script themselves.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
module="$root/integration/helm"
cache="${OVS_EGRESS_HELM_CACHE:-/var/cache/ovs-egress}"
print_path=0
[ "${1:-}" = "--print-path" ] && print_path=1

fail() { echo "build-helm: $*" >&2; exit 1; }

go=$(command -v go || true)
[ -z "$go" ] && [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go
want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$module/go.mod")
[ -n "$go" ] || fail "no Go toolchain: install Go $want or newer (the 'go' command on PATH, or /usr/local/go/bin/go); it builds helm from integration/helm"
gover=$("$go" env GOVERSION)
if [ "$(printf '%s\n%s\n' "$want" "${gover#go}" | sort -V | head -1)" != "$want" ]; then
  fail "$go is $gover; integration/helm/go.mod needs Go $want or newer"
fi
version=$(cd "$module" && GOFLAGS=-mod=readonly "$go" list -m -f '{{.Version}}' helm.sh/helm/v4 2>/dev/null || true)
[ -n "$version" ] || fail "integration/helm/go.mod does not require helm.sh/helm/v4"
pkg=helm.sh/helm/v4/cmd/helm
out="$cache/helm-$version"
bin="$out/helm"

# The modules the pinned build links (helm's own excepted: it is the main module of a
# `go install helm@version` build and a dependency of ours), one "path version" a line.
wanted_deps() {
  (cd "$module" && GOFLAGS=-mod=readonly "$go" list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' "$pkg") |
    grep -v '^helm.sh/helm/v4 ' | LC_ALL=C sort -u
}
built_deps() {
  "$go" version -m "$1" | awk '$1 == "dep" && $2 != "helm.sh/helm/v4" { print $2, $3 }' | LC_ALL=C sort -u
}
# True when $1 is the pinned Helm, built by this Go from the pinned dependencies.
fits() {
  [ -x "$1" ] || return 1
  [ "$("$1" version --template '{{.Version}} {{.GoVersion}}' 2>/dev/null)" = "$version $gover" ] || return 1
  [ "$(built_deps "$1")" = "$(wanted_deps)" ]
}

if ! fits "$bin"; then
  mkdir -p "$cache"
  # One build per release at a time; a concurrent run waits and then finds the binary.
  exec 9>"$cache/.lock-helm-$version"
  flock 9
  if ! fits "$bin"; then
    echo "build-helm: building helm $version with $gover into $out (a first build takes a while)" >&2
    start=$(date +%s)
    (cd "$module" && "$go" mod download) >&2 ||
      fail "downloading the Go modules of integration/helm failed (GOPROXY=$("$go" env GOPROXY)); the Go module proxy must be reachable, or the modules present in $("$go" env GOMODCACHE)"
    tmp="$out.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
    (cd "$module" && GOFLAGS=-mod=readonly "$go" build -trimpath -ldflags="$ldflags" -o "$tmp/helm" "$pkg") >&2 ||
      { rm -rf "$tmp"; fail "go build of $pkg in integration/helm failed (see above)"; }
    fits "$tmp/helm" || { rm -rf "$tmp"; fail "the helm just built does not report $version $gover"; }
    rm -rf "$out"
    mv "$tmp" "$out"
    echo "build-helm: built in $(( $(date +%s) - start )) s" >&2
  fi
  exec 9>&-
fi
if [ "$print_path" = 1 ]; then echo "$bin"; else echo "build-helm: $bin" >&2; fi
