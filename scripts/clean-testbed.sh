#!/usr/bin/env bash
# Removes what a test run or demo left behind when it was killed before it could clean up
# (SIGKILL, a terminal closed): every network namespace and /tmp directory named
# `oe<hex pid>x<n>-…` whose creating process (that pid) no longer exists, the processes still
# inside those namespaces (OVS daemons, agents), and the processes whose PIDs such a run wrote in
# its directories (`*.pid`: the API server with its etcd, the controller, OVS).
# Anything of a run that is still alive is left alone; nothing else on the machine is touched.
# Needs root.
set -euo pipefail

alive() { [ -d "/proc/$1" ]; }
creator_gone() {  # $1 = a name starting with oe<hex pid>x
  local hex=${1#oe}; hex=${hex%%x*}
  [[ "$hex" =~ ^[0-9a-f]+$ ]] && ! alive "$((16#$hex))"
}

for ns in $(ip netns list | awk '{print $1}' | grep -E '^oe[0-9a-f]+x' || true); do
  creator_gone "$ns" || continue
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
done
for dir in /tmp/oe*x*; do
  [ -d "$dir" ] || continue
  name=$(basename "$dir")
  creator_gone "$name" || continue
  for pidfile in "$dir"/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(tr -dc '0-9' <"$pidfile")
    # Only if the PID still runs one of our programs (a PID may have been reused since).
    [ -n "$pid" ] && alive "$pid" || continue
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
      ovs-egress | ovs-egress-apis | ovsdb-server | ovs-vswitchd) kill -KILL "$pid" 2>/dev/null || true ;;
    esac
  done
done
sleep 0.2
removed=0
for ns in $(ip netns list | awk '{print $1}' | grep -E '^oe[0-9a-f]+x' || true); do
  creator_gone "$ns" || continue
  ip netns del "$ns" && removed=$((removed + 1))
done
for dir in /tmp/oe*x*; do
  [ -d "$dir" ] || continue
  creator_gone "$(basename "$dir")" && rm -rf "$dir"
done
echo "clean-testbed: removed $removed stale namespace(s)"
