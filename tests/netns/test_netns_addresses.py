"""net-addresses on the real kernel: a DHCP guest (udhcpc against the network's dnsmasq) and a
guest with static IPv4 and IPv6 addresses are each listed with the right source: lease for
the first, arp and nd (the bridge's neighbour tables) for the second."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

NETWORK = """<network>
  <name>addrs</name>
  <forward mode='nat'/>
  <bridge stp='off'/>
  <ip address='192.168.78.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.78.100' end='192.168.78.150'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd00:78::1' prefix='64'/>
</network>
"""
DHCP_MAC = "52:54:00:78:00:01"
STATIC_MAC = "52:54:00:78:00:02"
WAIT_S = 10.0


@pytest.fixture
def state() -> Iterator[Path]:
    # dnsmasq runs as nobody after start: its directory must be traversable
    root = Path(tempfile.mkdtemp(prefix="vnt-addrs-"))
    try:
        root.chmod(0o755)
        yield root / "state"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def virtnet(ns: str, state: Path, *args: str) -> str:
    argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"virtnet {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def nudge_ipv6(address: str) -> None:
    """Send one datagram to ADDRESS so the kernel resolves it by neighbour discovery."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"hello", (address, 9))


def guest_by_mac(guests: list[dict[str, Any]], mac: str) -> dict[str, Any] | None:
    return next((g for g in guests if g["mac"] == mac), None)


def test_lists_a_dhcp_guest_and_a_static_guest_with_their_sources(
    netns_kit: Any, tmp_path: Path, state: Path
) -> None:
    kit = netns_kit
    kit.require_tools("udhcpc", "dnsmasq")
    host = kit.make_netns()
    definition = state.parent / "addrs.xml"
    state.parent.joinpath("addrs.xml").write_text(NETWORK)
    virtnet(host, state, "net-define", str(definition))
    virtnet(host, state, "net-start", "addrs")
    bridge = json.loads(virtnet(host, state, "net-info", "addrs", "--json"))["bridge"]
    assert json.loads(virtnet(host, state, "net-addresses", "addrs", "--json")) == []

    # a DHCP guest
    dhcp_ns = kit.make_netns()
    kit.run(["ip", "-n", host, "link", "add", "vgaddr0", "type", "veth", "peer", "name", "eth0",
             "netns", dhcp_ns])
    kit.run(["ip", "-n", host, "link", "set", "vgaddr0", "master", bridge, "up"])
    kit.run(["ip", "-n", dhcp_ns, "link", "set", "eth0", "address", DHCP_MAC, "up"])
    got = kit.ns_run(dhcp_ns, ["udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "2", "-i", "eth0",
                               "-x", "hostname:dhcpguest", "-s", "/bin/true"])
    assert "obtained" in got.stderr, got.stderr
    leased = got.stderr.split("lease of ", 1)[1].split()[0]

    # a guest with static addresses, seen by the host only through its neighbour tables
    static = kit.add_guest(host, bridge, kit.make_netns(), "192.168.78.10/24", "192.168.78.1")
    kit.run(["ip", "-n", static.ns, "link", "set", "eth0", "down"])
    kit.run(["ip", "-n", static.ns, "link", "set", "eth0", "address", STATIC_MAC, "up"])
    kit.run(["ip", "-n", static.ns, "-6", "address", "add", "fd00:78::10/64", "dev", "eth0",
             "nodad"])
    assert kit.ping(static.ns, "192.168.78.1")

    deadline = time.monotonic() + WAIT_S
    while True:
        kit.run_in_netns(host, nudge_ipv6, "fd00:78::10")
        guests = json.loads(virtnet(host, state, "net-addresses", "addrs", "--json"))
        found = guest_by_mac(guests, STATIC_MAC)
        if found is not None and "fd00:78::10" in found["ipv6"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    dhcp = guest_by_mac(guests, DHCP_MAC)
    assert dhcp is not None, guests
    assert dhcp["ipv4"] == [leased] and dhcp["hostname"] == "dhcpguest"
    assert dhcp["hostname_source"] == "lease"
    lease_fact = next(f for f in dhcp["addresses"] if f["address"] == leased)
    assert lease_fact["source"] == "lease" and lease_fact["prefix"] == 24

    assert found is not None, guests
    assert found["ipv4"] == ["192.168.78.10"] and found["hostname"] is None
    sources = {f["address"]: f["source"] for f in found["addresses"]}
    assert sources["192.168.78.10"] == "arp" and sources["fd00:78::10"] == "nd"
    assert all(f["state"] for f in found["addresses"])
    # the bridge itself is no guest
    bridge_mac = kit.ns_json(host, ["link", "show", bridge])[0]["address"]
    assert guest_by_mac(guests, bridge_mac) is None

    text = virtnet(host, state, "net-addresses", "addrs")
    assert DHCP_MAC in text and STATIC_MAC in text and "dhcpguest" in text
    assert f"{leased}/24" in text and "192.168.78.10/24" in text and "fd00:78::10/64" in text
    virtnet(host, state, "net-destroy", "addrs")


def test_an_inactive_network_is_an_error(netns_kit: Any, state: Path) -> None:
    host = netns_kit.make_netns()
    state.parent.joinpath("addrs.xml").write_text(NETWORK)
    virtnet(host, state, "net-define", str(state.parent / "addrs.xml"))
    argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", host, "--state-dir", str(state),
            "net-addresses", "addrs"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert proc.returncode != 0 and "is not active" in proc.stderr
