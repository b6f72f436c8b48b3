#!/bin/sh
# Make this host busy the way a node is, for as long as a command runs, then undo it all:
#   tests/busy_host.sh .venv/bin/python -m pytest -x -q tests/integration/test_status_live.py
# Beside the command: (a) network namespaces appear and vanish in a loop (each with a rule that makes
# conntrack track it), (b) a foreign netns is filled to nf_conntrack_max with ASSURED entries
# (conntrack -R), (c) new connections into it make the kernel log "table full" lines for that netns and
# (d) a monitor in yet another netns dumps its table over ctnetlink every half second.
# Host-wide settings are never changed; every namespace made here is deleted on exit, also on failure.
set -u
PREFIX="ctdbusy-$$-"
FULL="${PREFIX}full"
PY="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"
LOADFILE="/tmp/${FULL}.ct"
pids=""

cleanup() {
    trap - EXIT INT TERM
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done  # the loops hold nothing: the names go below
    for p in $pids; do wait "$p" 2>/dev/null; done
    for n in $(ip netns list 2>/dev/null | awk -v p="$PREFIX" 'index($1, p) == 1 {print $1}'); do ip netns del "$n"; done
    rm -f "$LOADFILE"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

track() {  # lo up and a rule that makes conntrack track the netns
    ip netns exec "$1" ip link set lo up &&
    ip netns exec "$1" nft "add table inet busy; add chain inet busy o { type filter hook output priority 0; };
                           add rule inet busy o ct state new accept"
}

# (b) the foreign full table
ip netns add "$FULL" && track "$FULL" || exit 1
max=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
for _ in 1 2 3 4; do
    have=$(ip netns exec "$FULL" sysctl -n net.netfilter.nf_conntrack_count)
    [ "$have" -ge "$max" ] && break
    PYTHONPATH="$(dirname "$0")/../src" "$PY" -c "
import sys
from ctdoctor.lab.scenarios import _tcp_lines
sys.stdout.write(_tcp_lines($max - $have, first=$have, src='127.0.0.9'))" > "$LOADFILE"
    ip netns exec "$FULL" conntrack -R "$LOADFILE" >/dev/null 2>&1
done
rm -f "$LOADFILE"
echo "busy_host: $FULL holds $(ip netns exec "$FULL" sysctl -n net.netfilter.nf_conntrack_count) / $max entries" >&2

# (c) new connections into the full table: the kernel drops them and logs "table full in netns N"
(
    trap - EXIT INT TERM  # the loops: not this script's cleanup
    while :; do
        ip netns exec "$FULL" "$PY" -c "
import socket
s = socket.socket(); s.settimeout(0.3)
try: s.connect(('127.0.0.1', 9))
except OSError: pass" 2>/dev/null
        sleep 1
    done
) &
pids="$pids $!"

# (d) a monitor elsewhere: a ctnetlink dump in another netns every half second (it frees the expired
# entries of every netns it passes)
ip netns add "${PREFIX}reader" && track "${PREFIX}reader" || exit 1
(
    trap - EXIT INT TERM  # the loops: not this script's cleanup
    while :; do
        ip netns exec "${PREFIX}reader" conntrack -L >/dev/null 2>&1
        sleep 0.5
    done
) &
pids="$pids $!"

# (a) namespaces that appear and vanish
(
    trap - EXIT INT TERM  # the loops: not this script's cleanup
    while :; do
        n="${PREFIX}churn-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')"
        ip netns add "$n" 2>/dev/null && track "$n" 2>/dev/null
        sleep 0.2
        ip netns del "$n" 2>/dev/null
    done
) &
pids="$pids $!"

"$@"
