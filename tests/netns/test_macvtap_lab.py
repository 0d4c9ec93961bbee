"""Direct (macvtap) networks in the lab: real pings between guests, the LAN and the host.

The lab (tests.kit.macvtaplab): the host namespace has uplinks eth1.. (veth) into a
"LAN switch" namespace (a bridge whose ports have hairpin off or on) with a LAN host on it.
virtnet starts a direct network on eth1 and creates two guest ports; each macvtap is then
moved into a guest namespace, where it behaves as a macvlan of the same mode.

The expected matrix is the kernel's macvlan semantics (measured on these machines, see
/work/shared/design.md): bridge mode switches guest to guest inside the kernel but never
sends to the host's own address on the uplink unless the switch reflects it; private mode
never lets guests reach each other, even when the switch reflects; vepa sends everything to
the switch, so guests (and the host) are reached only through a hairpinning switch port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.kit.macvtaplab import HOST_IP, LAN_IP, build_lab, ip

pytestmark = pytest.mark.netns

GUEST1, GUEST2 = "10.77.0.11", "10.77.0.12"
MAC1, MAC2 = "52:54:00:aa:00:01", "52:54:00:aa:00:02"
# one echo per attempt; a "no" costs attempts * timeout seconds
PING = {"attempts": 3, "timeout": 0.5}


def network_xml(mode: str, devices: list[str]) -> str:
    interfaces = "".join(f"<interface dev='{dev}'/>" for dev in devices)
    return f"<network><name>lan</name><forward mode='{mode}'>{interfaces}</forward></network>"


# --- run inside the lab's host namespace (forked children) -----------------------------------


def start_network(state: Path, xml: str) -> None:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths

    engine = Engine(StatePaths.under(state))
    engine.define(xml)
    engine.start("lan")


def create_port(state: Path, mac: str, **request: Any) -> dict[str, Any]:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths
    from virtnet.plan.ports import PortRequest
    from virtnet.service.ports import PortManager, port_summary

    manager = PortManager(Engine(StatePaths.under(state)))
    return port_summary(manager.create("lan", PortRequest(mac=mac, **request)))


def delete_port(state: Path, ref: str) -> None:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths
    from virtnet.service.ports import PortManager

    PortManager(Engine(StatePaths.under(state))).delete("lan", ref)


def destroy_network(state: Path) -> None:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths

    Engine(StatePaths.under(state)).destroy("lan")


# --- the matrix --------------------------------------------------------------------------------

MATRIX = [
    # mode, hairpin, guest↔guest, guest→LAN, LAN→guest, guest→host, host→guest
    ("bridge", False, True, True, True, False, False),
    ("bridge", True, True, True, True, True, True),
    ("private", False, False, True, True, False, False),
    # reflected broadcasts from a private macvlan go back to it alone, so the guest's ARP
    # never reaches the host (which has no other uplink to hear it on); the host's own ARP
    # and unicast replies do come back
    ("private", True, False, True, True, False, True),
    ("vepa", False, False, True, True, False, False),
    ("vepa", True, True, True, True, True, True),
]


@pytest.mark.parametrize(
    "mode, hairpin, guest_guest, guest_lan, lan_guest, guest_host, host_guest",
    MATRIX,
    ids=[f"{m[0]}-hairpin-{'on' if m[1] else 'off'}" for m in MATRIX],
)
def test_ping_matrix(netns_kit: Any, tmp_path: Path, mode: str, hairpin: bool,
                     guest_guest: bool, guest_lan: bool, lan_guest: bool, guest_host: bool,
                     host_guest: bool) -> None:
    lab = build_lab(netns_kit.make_netns, uplinks=1)
    lab.set_hairpin("eth1", hairpin)
    state = tmp_path / "state"
    netns_kit.run_in_netns(lab.host, start_network, state, network_xml(mode, ["eth1"]))
    port1 = netns_kit.run_in_netns(lab.host, create_port, state, MAC1, owner_name="g1")
    port2 = netns_kit.run_in_netns(lab.host, create_port, state, MAC2, owner_name="g2")
    assert (port1["mode"], port1["uplink"], port2["uplink"]) == (mode, "eth1", "eth1")
    guest1, guest2 = netns_kit.make_netns(), netns_kit.make_netns()
    lab.move_to_guest(port1["device"], guest1, GUEST1)
    lab.move_to_guest(port2["device"], guest2, GUEST2)
    assert lab.link_mac(guest1, port1["device"]) == MAC1

    def ping(src: str, address: str) -> bool:
        lab.forget(guest1, guest2)  # each probe from a clean state, whatever the order
        return bool(netns_kit.ping(src, address, **PING))

    # host->guest first: it would teach guest1 the host's MAC for guest->host if kept
    seen = {
        "host->guest": ping(lab.host, GUEST1),
        "guest->host": ping(guest1, HOST_IP),
        "guest->LAN": ping(guest1, LAN_IP),
        "LAN->guest": ping(lab.lan, GUEST1),
        "guest->guest": ping(guest1, GUEST2),
    }
    assert seen == {
        "guest->LAN": guest_lan,
        "LAN->guest": lan_guest,
        "guest->guest": guest_guest,
        "guest->host": guest_host,
        "host->guest": host_guest,
    }

    # back into the host namespace, then port-delete removes them like any port
    lab.move_back(port1["device"], guest1)
    lab.move_back(port2["device"], guest2)
    netns_kit.run_in_netns(lab.host, delete_port, state, port1["uuid"])
    netns_kit.run_in_netns(lab.host, delete_port, state, port2["device"])
    assert not [name for name in netns_kit.ns_links(lab.host) if name.startswith("macvtap")]


def test_passthrough_gives_the_interface_to_one_guest(netns_kit: Any, tmp_path: Path) -> None:
    lab = build_lab(netns_kit.make_netns, uplinks=2, host_address=False)
    state = tmp_path / "state"
    own_macs = {uplink: lab.link_mac(lab.host, uplink) for uplink in lab.uplinks}
    netns_kit.run_in_netns(lab.host, start_network, state,
                           network_xml("passthrough", ["eth1", "eth2"]))
    port1 = netns_kit.run_in_netns(lab.host, create_port, state, MAC1)
    port2 = netns_kit.run_in_netns(lab.host, create_port, state, MAC2)
    # one port per interface, and the interface carries the guest's MAC
    assert (port1["uplink"], port2["uplink"]) == ("eth1", "eth2")
    assert lab.link_mac(lab.host, "eth1") == MAC1
    assert lab.link_mac(lab.host, "eth2") == MAC2
    details = ip(lab.host, "-d", "link", "show", "dev", port1["device"]).stdout
    assert "macvtap mode passthru" in details

    from virtnet.errors import PortError

    with pytest.raises(PortError, match="requires exclusive access to interfaces, but none "
                                        "are available"):
        netns_kit.run_in_netns(lab.host, create_port, state, "52:54:00:aa:00:03")

    guest = netns_kit.make_netns()
    lab.move_to_guest(port1["device"], guest, GUEST1)
    assert netns_kit.ping(guest, LAN_IP, **PING)
    assert netns_kit.ping(lab.lan, GUEST1, **PING)
    lab.move_back(port1["device"], guest)

    netns_kit.run_in_netns(lab.host, delete_port, state, port1["uuid"])
    assert lab.link_mac(lab.host, "eth1") == own_macs["eth1"]  # given back
    # the freed interface is the only one a new port can get
    port3 = netns_kit.run_in_netns(lab.host, create_port, state, "52:54:00:aa:00:03")
    assert port3["uplink"] == "eth1"
    netns_kit.run_in_netns(lab.host, destroy_network, state)
    assert lab.link_mac(lab.host, "eth1") == own_macs["eth1"]
    assert lab.link_mac(lab.host, "eth2") == own_macs["eth2"]
    assert not [name for name in netns_kit.ns_links(lab.host) if name.startswith("macvtap")]
