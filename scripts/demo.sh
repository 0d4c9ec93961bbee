#!/usr/bin/env bash
# The `make demo` tour. Everything that touches a network happens inside namespaces this script
# creates ("host" and "guest"), which it removes again on exit, even after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
VIRTNET=${VIRTNET:-.venv/bin/virtnet}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Validate and format the shipped examples (no root needed)"
run "$VIRTNET" validate examples/*.xml
run "$VIRTNET" format examples/routed.xml
say "The dnsmasq configuration net-start would write for the default NAT network"
run "$VIRTNET" dnsmasq-conf examples/default.xml
say "net-update on a file: add a DHCP reservation"
run "$VIRTNET" update examples/default.xml add ip-dhcp-host \
    "<host mac='52:54:00:00:00:42' name='web' ip='192.168.122.42'/>"

if [ "$(id -u)" != 0 ]; then
    echo "(not root: skipping the sandboxed network part)"
    exit 0
fi

suffix=$$
HOST_NS="vnt-demo-host-$suffix"
GUEST_NS="vnt-demo-guest-$suffix"
STATE=$(mktemp -d /tmp/virtnet-demo.XXXXXX)
chmod 755 "$STATE"
client_pid=""

cleanup() {
    set +e
    if [ -n "$client_pid" ]; then kill "$client_pid" 2>/dev/null; fi
    "$VIRTNET" --netns "$HOST_NS" --state-dir "$STATE" net-destroy default >/dev/null 2>&1
    ip netns del "$GUEST_NS" 2>/dev/null
    ip netns del "$HOST_NS" 2>/dev/null
    rm -rf "$STATE"
}
trap cleanup EXIT

say "A sandbox: namespace $HOST_NS plays the host"
run ip netns add "$HOST_NS"
ip netns exec "$HOST_NS" ip link set lo up
V="$VIRTNET --netns $HOST_NS --state-dir $STATE"

say "Define the default NAT network (stp off so the demo guest need not wait for STP)"
sed "s/stp='on'/stp='off'/" examples/default.xml > "$STATE/default.xml"
run $V net-define "$STATE/default.xml"
run $V net-list --all
say "What net-start will do, as commands a person could type"
run $V plan default --commands
say "Start it"
run $V net-start default
run $V net-info default
run ip netns exec "$HOST_NS" ip -br addr show dev virbr0

say "A guest: namespace $GUEST_NS, plugged into virbr0 by a veth pair, asks for DHCP"
run ip netns add "$GUEST_NS"
ip netns exec "$GUEST_NS" ip link set lo up
ip link add "vntd$suffix" netns "$HOST_NS" type veth peer name eth0 netns "$GUEST_NS"
ip netns exec "$HOST_NS" ip link set "vntd$suffix" master virbr0 up
ip netns exec "$GUEST_NS" ip link set eth0 address 52:54:00:00:00:42 up
run $V net-update default add ip-dhcp-host \
    "<host mac='52:54:00:00:00:42' name='web' ip='192.168.122.42'/>" --live --config
run timeout 30 ip netns exec "$GUEST_NS" udhcpc -i eth0 -n -q -t 10 -T 2 -s /bin/true \
    -O hostname -x hostname:web || true
# udhcpc with -s /bin/true does not configure the address: show the lease instead
run $V net-dhcp-leases default

say "Destroy: everything start made goes away"
run $V net-destroy default
run ip netns exec "$HOST_NS" ip -br link

say "The lab: who reaches whom, predicted and measured (default NAT network)"
run "$VIRTNET" lab examples/default.xml
say "The lab for a macvtap network in bridge mode: the host cannot reach its own guests"
run "$VIRTNET" lab examples/macvtap-bridge.xml
echo
echo "Demo finished; the sandbox is being removed."
