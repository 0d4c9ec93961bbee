"""Bandwidth with tc, measured with real transfers between namespaces.

Guests are namespaces behind a NIC emulator (tests.kit.vmnic) that plays QEMU's part on
the port's device: it reads and writes the tap (by name) or the macvtap's node, so the
device stays where virtnet made it and keeps the shaping virtnet put on it.

Each transfer blasts UDP at three times the limit and measures, at the receiver, the rate of
Ethernet frames (what tc counts) over a window that leaves out the first burst. libvirt writes
an average of N as tc's "Nkbps" (N*1000 bytes/s), so 1000 gives 1,000,000 B/s; the checks
hold each measured rate within 10% of 1000 KiB/s (1,024,000 B/s) as the task states, and within
5% of the exact tc rate.

The receiver sits behind a Python NIC emulator, which on a loaded two-core machine can fall
behind and drop what tc let through; it can never deliver more. So no transfer may ever exceed
the band, and a transfer that falls short of it is measured again, at most three times: a
wrong shaper (no shaping at all, wrong units, the wrong device) fails every attempt.

This kernel has neither sfq nor the police action, so libvirt 9.0 cannot start a network
with <bandwidth> here (the last test shows it); virtnet shapes ingress through an IFB device.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kit.macvtaplab import LAN_IP, Lab, build_lab, udp_blast, udp_sink
from tests.kit.vmnic import start_relay

pytestmark = pytest.mark.netns

KIB_PER_S = 1024
TARGET = 1000 * KIB_PER_S  # "1000 KiB/s"
TC_RATE = 1000 * 1000  # what tc does with libvirt's "1000kbps"
BLAST = 3 * TC_RATE
SECONDS, WARMUP = 3.5, 1.0
GUEST_MAC = "52:54:00:bb:00:01"
GUEST_IP = "10.77.0.11"
NET_IP, NET_GUEST_IP = "10.78.0.1", "10.78.0.11"


def isolated_xml(bandwidth: str = "") -> str:
    return (f"<network><name>lan</name><bridge name='vnbw0' stp='off'/>{bandwidth}"
            f"<ip address='{NET_IP}' netmask='255.255.255.0'/></network>")


# --- inside the host namespace -------------------------------------------------------------


def start_network(state: Path, xml: str) -> None:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths

    engine = Engine(StatePaths.under(state))
    engine.define(xml)
    engine.start("lan")


def create_port(state: Path, mac: str, inbound: dict[str, int] | None = None,
                outbound: dict[str, int] | None = None) -> dict[str, Any]:
    from virtnet.service.engine import Engine
    from virtnet.spec.model import Bandwidth, BandwidthRate
    from virtnet.paths import StatePaths
    from virtnet.plan.ports import PortRequest
    from virtnet.service.ports import PortManager, port_summary

    bandwidth = None
    if inbound or outbound:
        bandwidth = Bandwidth(
            inbound=BandwidthRate(**inbound) if inbound else None,
            outbound=BandwidthRate(**outbound) if outbound else None,
        )
    manager = PortManager(Engine(StatePaths.under(state)))
    return port_summary(manager.create("lan", PortRequest(mac=mac, bandwidth=bandwidth)))


def delete_port(state: Path, ref: str) -> None:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths
    from virtnet.service.ports import PortManager

    PortManager(Engine(StatePaths.under(state))).delete("lan", ref)


def destroy_network(state: Path) -> None:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths

    Engine(StatePaths.under(state)).destroy("lan")


# --- helpers ---------------------------------------------------------------------------------


def measure(kit: Any, receiver: str, sender: str, address: str, port: int = 5001) -> float:
    """The frame rate (bytes/s) at RECEIVER while SENDER blasts UDP to ADDRESS."""
    sink = kit.start_in_netns(receiver, udp_sink, port, SECONDS, WARMUP)
    time.sleep(0.3)
    kit.run_in_netns(sender, udp_blast, address, port, BLAST, SECONDS + 1.0)
    return float(sink.result()["frame_rate"])


ATTEMPTS = 3


def within_band(rate: float) -> bool:
    return abs(rate - TARGET) <= 0.10 * TARGET and abs(rate - TC_RATE) <= 0.05 * TC_RATE


def assert_rate(rate: float, what: str) -> None:
    assert abs(rate - TARGET) <= 0.10 * TARGET, f"{what}: {rate:.0f} B/s vs {TARGET} B/s"
    assert abs(rate - TC_RATE) <= 0.05 * TC_RATE, f"{what}: {rate:.0f} B/s vs tc's {TC_RATE}"


def measure_shaped(kit: Any, receiver: str, sender: str, address: str, what: str) -> float:
    """Measure a shaped transfer; every attempt must stay under the band's top, and one of
    at most ATTEMPTS must fall inside it (see the module's docstring)."""
    rates: list[float] = []
    for _ in range(ATTEMPTS):
        rate = measure(kit, receiver, sender, address)
        rates.append(rate)
        assert rate <= 1.05 * TC_RATE, f"{what}: {rate:.0f} B/s passed a {TC_RATE} B/s shaper"
        if within_band(rate):
            return rate
    assert_rate(max(rates), f"{what} (attempts: {', '.join(f'{r:.0f}' for r in rates)})")
    return max(rates)


def tc_show(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "tc", *args], capture_output=True,
                          text=True, timeout=20, check=True).stdout


@pytest.fixture
def relays() -> Any:
    started: list[Any] = []
    try:
        yield started
    finally:
        for relay in started:
            relay.stop()


# --- ports -------------------------------------------------------------------------------------


def test_macvtap_port_inbound_and_outbound(netns_kit: Any, tmp_path: Path,
                                           relays: list[Any]) -> None:
    lab = build_lab(netns_kit.make_netns, uplinks=1)
    state = tmp_path / "state"
    netns_kit.run_in_netns(lab.host, start_network, state, "<network><name>lan</name>"
                           "<forward mode='bridge'><interface dev='eth1'/></forward></network>")
    port = netns_kit.run_in_netns(lab.host, create_port, state, GUEST_MAC,
                                  {"average": 1000}, {"average": 1000})
    guest = netns_kit.make_netns()
    lab.veth_guest(guest, GUEST_MAC, GUEST_IP, "vm0")
    relays.append(start_relay(lab.host, "vm0", char_device=port["char_device"]))
    assert netns_kit.ping(guest, LAN_IP)

    inbound = measure_shaped(netns_kit, guest, lab.lan, GUEST_IP,
                             "macvtap port inbound (device ingress through the IFB)")
    outbound = measure_shaped(netns_kit, lab.lan, guest, LAN_IP,
                              "macvtap port outbound (device egress HTB)")
    print(f"\nmacvtap port: inbound {inbound:.0f} B/s, outbound {outbound:.0f} B/s")

    netns_kit.run_in_netns(lab.host, delete_port, state, port["uuid"])
    assert "ifb-macvtap0" not in netns_kit.ns_links(lab.host)


def test_tap_port_inbound_and_outbound(netns_kit: Any, tmp_path: Path,
                                       relays: list[Any]) -> None:
    host = netns_kit.make_netns()
    state = tmp_path / "state"
    netns_kit.run_in_netns(host, start_network, state, isolated_xml())
    port = netns_kit.run_in_netns(host, create_port, state, GUEST_MAC,
                                  {"average": 1000}, {"average": 1000})
    assert port["plug"] == "network" and port["bridge"] == "vnbw0"
    guest = netns_kit.make_netns()
    Lab(host=host, switch="", lan="").veth_guest(guest, GUEST_MAC, NET_GUEST_IP, "vm0")
    relays.append(start_relay(host, "vm0", tap=port["device"]))
    assert netns_kit.ping(guest, NET_IP)

    inbound = measure_shaped(netns_kit, guest, host, NET_GUEST_IP,
                             "tap port inbound (tap egress HTB)")
    outbound = measure_shaped(netns_kit, host, guest, NET_IP,
                              "tap port outbound (tap ingress through the IFB)")
    print(f"\ntap port: inbound {inbound:.0f} B/s, outbound {outbound:.0f} B/s")
    netns_kit.run_in_netns(host, destroy_network, state)
    assert not [n for n in netns_kit.ns_links(host) if n.startswith(("vnet", "ifb-"))]


# --- networks ----------------------------------------------------------------------------------


def test_network_inbound_and_outbound(netns_kit: Any, tmp_path: Path,
                                      relays: list[Any]) -> None:
    host = netns_kit.make_netns()
    state = tmp_path / "state"
    bandwidth = "<bandwidth><inbound average='1000'/><outbound average='1000'/></bandwidth>"
    netns_kit.run_in_netns(host, start_network, state, isolated_xml(bandwidth))
    port = netns_kit.run_in_netns(host, create_port, state, GUEST_MAC)
    guest = netns_kit.make_netns()
    Lab(host=host, switch="", lan="").veth_guest(guest, GUEST_MAC, NET_GUEST_IP, "vm0")
    relays.append(start_relay(host, "vm0", tap=port["device"]))
    assert netns_kit.ping(guest, NET_IP)

    inbound = measure_shaped(netns_kit, guest, host, NET_GUEST_IP,
                             "network inbound (bridge egress HTB, class 1:2 under 1:1)")
    outbound = measure_shaped(netns_kit, host, guest, NET_IP,
                              "network outbound (bridge ingress through the IFB)")
    print(f"\nnetwork: inbound {inbound:.0f} B/s, outbound {outbound:.0f} B/s")
    netns_kit.run_in_netns(host, destroy_network, state)
    assert not [n for n in netns_kit.ns_links(host) if n.startswith(("vnbw", "vnet", "ifb-"))]


def test_floor_is_a_guaranteed_share(netns_kit: Any, tmp_path: Path,
                                     relays: list[Any]) -> None:
    """Two guests take all the network's inbound rate: the one with floor 600 gets 600, the
    other what is left (400), as libvirt's class tree promises."""
    host = netns_kit.make_netns()
    state = tmp_path / "state"
    bandwidth = "<bandwidth><inbound average='1000'/></bandwidth>"
    netns_kit.run_in_netns(host, start_network, state, isolated_xml(bandwidth))
    floored = netns_kit.run_in_netns(host, create_port, state, GUEST_MAC, {"floor": 600})
    other = netns_kit.run_in_netns(host, create_port, state, "52:54:00:bb:00:02")
    assert floored["class_id"] == 3 and other["class_id"] is None
    classes = tc_show(host, "class", "show", "dev", "vnbw0")
    assert "class htb 1:3 parent 1:1" in classes and "rate 4800Kbit" in classes  # 600 kB/s
    assert "class htb 1:2 parent 1:1" in classes and "rate 3200Kbit" in classes  # 1000 - 600

    lab = Lab(host=host, switch="", lan="")
    guests = []
    for index, port in enumerate((floored, other), start=1):
        guest = netns_kit.make_netns()
        lab.veth_guest(guest, port["mac"], f"10.78.0.{10 + index}", f"vm{index}")
        relays.append(start_relay(host, f"vm{index}", tap=port["device"]))
        assert netns_kit.ping(guest, NET_IP)
        guests.append(guest)

    def shares() -> tuple[float, float]:
        sinks = [netns_kit.start_in_netns(g, udp_sink, 5001, SECONDS, WARMUP) for g in guests]
        time.sleep(0.3)
        senders = [netns_kit.start_in_netns(host, udp_blast, f"10.78.0.{10 + i}", 5001,
                                            BLAST, SECONDS + 1.0) for i in (1, 2)]
        for sender in senders:
            sender.result()
        guaranteed, rest = (float(sink.result()["frame_rate"]) for sink in sinks)
        print(f"\nfloor 600: {guaranteed:.0f} B/s, no floor: {rest:.0f} B/s")
        return guaranteed, rest

    for _ in range(ATTEMPTS):  # a short fall may be the emulator's; an excess never is
        guaranteed, rest = shares()
        assert guaranteed + rest <= 1.05 * TC_RATE and guaranteed <= 1.10 * 600_000
        if abs(guaranteed - 600_000) <= 0.10 * 600_000 and abs(rest - 400_000) <= 0.10 * 400_000:
            break
    assert abs(guaranteed - 600_000) <= 0.10 * 600_000
    assert abs(rest - 400_000) <= 0.10 * 400_000

    netns_kit.run_in_netns(host, delete_port, state, floored["uuid"])
    classes = tc_show(host, "class", "show", "dev", "vnbw0")
    assert "1:3" not in classes and "rate 8Mbit" in classes.split("class htb 1:2")[1]
    netns_kit.run_in_netns(host, destroy_network, state)


# --- libvirt 9.0 cannot, virtnet can -------------------------------------------------------


@pytest.mark.libvirt
def test_libvirt_cannot_start_it_but_virtnet_does(netns_kit: Any, tmp_path: Path) -> None:
    from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason

    reason = libvirtd_unavailable_reason()
    if reason is not None:
        pytest.skip(f"differential part: {reason}")
    bandwidth = "<bandwidth><inbound average='1000'/><outbound average='1000'/></bandwidth>"
    xml = isolated_xml(bandwidth).replace("vnbw0", "vnbwlv0")
    path = tmp_path / "lan.xml"
    path.write_text(xml)
    with LibvirtdInNetns() as libvirtd:
        proc = libvirtd.virsh("net-create", str(path))
        assert proc.returncode != 0, "libvirt started a shaped network on this kernel"
        print(f"\nlibvirt 9.0: {proc.stderr.strip()}")
    host = netns_kit.make_netns()
    state = tmp_path / "state"
    netns_kit.run_in_netns(host, start_network, state, xml)
    qdiscs = tc_show(host, "qdisc", "show", "dev", "vnbwlv0")
    assert "htb 1: root" in qdiscs and "ingress ffff:" in qdiscs
    netns_kit.run_in_netns(host, destroy_network, state)
    assert "ifb-vnbwlv0" not in netns_kit.ns_links(host)



def test_tc_probe_matches_the_kernel_and_leaves_nothing(netns_kit: Any, tmp_path: Path) -> None:
    host = netns_kit.make_netns()

    def probe(cache: Path) -> dict[str, bool]:
        from tests.kit.hostkit import reset_tc_probe_cache
        from virtnet.host import tc

        reset_tc_probe_cache()
        return tc.probe_features(cache).to_dict()

    found = netns_kit.run_in_netns(host, probe, tmp_path)
    assert netns_kit.ns_links(host) == ["lo"]  # the scratch IFB is gone
    cached = json.loads((tmp_path / "kernel-tc-features.json").read_text())
    assert cached["features"] == found
    subprocess.run(["ip", "-n", host, "link", "add", "t0", "type", "ifb"], check=True)
    attempts = {
        "sfq": ["qdisc", "add", "dev", "t0", "root", "sfq"],
        "htb": ["qdisc", "replace", "dev", "t0", "root", "handle", "1:", "htb"],
        "ingress": ["qdisc", "add", "dev", "t0", "handle", "ffff:", "ingress"],
        "mirred": ["filter", "add", "dev", "t0", "parent", "ffff:", "prio", "1", "u32",
                   "match", "u32", "0", "0", "action", "mirred", "egress", "redirect",
                   "dev", "t0"],
        "police": ["filter", "add", "dev", "t0", "parent", "ffff:", "prio", "2", "u32",
                   "match", "u32", "0", "0", "police", "rate", "1mbit", "burst", "10k",
                   "drop", "flowid", ":1"],
    }
    for feature, argv in attempts.items():
        done = subprocess.run(["ip", "netns", "exec", host, "tc", *argv], capture_output=True,
                              timeout=20).returncode == 0
        assert found[feature] == done, feature
