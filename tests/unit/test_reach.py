"""virtnet.insight.reach: the predicted reachability matrix, its reasons and fixes (pure).

The expected values are the kernel's behaviour measured on these machines (design.md: macvlan
modes against a switch port with hairpin off/on) and libvirt's documented forward modes; the
lab (tests/netns/test_lab_matrix.py) measures the same cells on the real kernel.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from virtnet.spec.model import ForwardMode
from virtnet.insight.guest_dhcp import guest_dhcp_config
from virtnet.insight.reach import answers_arp_for_others, predict
from virtnet.insight.reach_summary import summary
from virtnet.insight.reach_terms import (
    ON_HOST,
    ON_LAN_ROUTER,
    ON_SWITCH,
    Cell,
    Topology,
    default_guest_uplinks,
    endpoint_names,
    shim_name,
)
from virtnet.spec.xml.parse import parse_network


def net_of(xml: str):
    return parse_network(xml)


NAT = ("<network><name>n</name><forward mode='nat'/><bridge name='virbr0'/>"
       "<ip address='192.168.122.1' prefix='24'><dhcp><range start='192.168.122.2' "
       "end='192.168.122.254'/></dhcp></ip></network>")
ROUTE = ("<network><name>r</name><forward mode='route' dev='eth1'/><bridge name='virbr1'/>"
         "<ip address='192.168.150.1' prefix='24'/></network>")
OPEN = ("<network><name>o</name><forward mode='open'/><bridge name='virbr2'/>"
        "<ip address='192.168.160.1' prefix='24'/></network>")
ISOLATED = ("<network><name>i</name><bridge name='virbr3'/>"
            "<ip address='192.168.140.1' prefix='24'/></network>")
HOSTBRIDGE = "<network><name>h</name><forward mode='bridge'/><bridge name='br0'/></network>"


def macvtap(mode: str, *devs: str) -> str:
    interfaces = "".join(f"<interface dev='{d}'/>" for d in devs or ("eth1",))
    return f"<network><name>m</name><forward mode='{mode}'>{interfaces}</forward></network>"


def matrix(xml: str, **topo: object) -> dict[tuple[str, str], bool]:
    return {(c.src, c.dst): c.predicted for c in predict(net_of(xml), Topology(**topo))}


def cell(xml: str, src: str, dst: str, **topo: object) -> Cell:
    return next(c for c in predict(net_of(xml), Topology(**topo)) if (c.src, c.dst) == (src, dst))


def test_one_cell_per_ordered_pair() -> None:
    cells = predict(net_of(NAT), Topology(guests=3))
    names = endpoint_names(3)
    assert names == ["guest1", "guest2", "guest3", "host", "lan", "upstream"]
    assert [(c.src, c.dst) for c in cells] == [(a, b) for a in names for b in names if a != b]
    assert all(c.reason for c in cells)
    data = cells[0].to_dict()
    assert set(data) == {"from", "to", "predicted", "reason", "fix"}


# --- bridges of our own ------------------------------------------------------------------------


def test_nat() -> None:
    m = matrix(NAT)
    assert m["guest1", "guest2"] and m["guest1", "host"] and m["host", "guest1"]
    assert m["guest1", "lan"] and m["guest1", "upstream"]
    assert not m["lan", "guest1"] and not m["upstream", "guest1"]


@pytest.mark.parametrize("xml", [ROUTE, OPEN])
def test_routed_needs_the_lan_router_route_and_it_fixes_it(xml: str) -> None:
    topo = {"host_address": "10.77.0.1/24"}
    before = matrix(xml, **topo)
    for pair in [("guest1", "lan"), ("lan", "guest1"), ("guest1", "upstream"),
                 ("upstream", "guest1")]:
        assert not before[pair]
        fixes = cell(xml, *pair, **topo).fix
        subnet = "192.168.150.0/24" if xml is ROUTE else "192.168.160.0/24"
        assert [(f.where, f.command) for f in fixes] == [
            (ON_LAN_ROUTER, f"ip route add {subnet} via 10.77.0.1")]
    after = matrix(xml, lan_route=True, **topo)
    assert all(after.values())


def test_isolated_forwards_nothing() -> None:
    m = matrix(ISOLATED)
    assert m["guest1", "guest2"] and m["guest1", "host"] and m["host", "guest2"]
    for other in ("lan", "upstream"):
        assert not m["guest1", other] and not m[other, "guest1"]
        assert cell(ISOLATED, "guest1", other).fix == ()


def test_isolated_ports_keep_guests_apart() -> None:
    xml = ISOLATED.replace("<bridge name='virbr3'/>", "<bridge name='virbr3'/>"
                           "<port isolated='yes'/>")
    assert not matrix(xml)["guest1", "guest2"]
    assert matrix(xml)["guest1", "host"]


def test_forward_dev_elsewhere_than_the_outside() -> None:
    reason = cell(ROUTE, "guest1", "upstream", outside_dev="eth0", lan_route=True).reason
    assert "only through eth1" in reason and "eth0" in reason


def test_forwarding_off_and_firewall_blockers_are_explained_with_fixes() -> None:
    off = cell(NAT, "guest1", "lan", ip_forward=False)
    assert not off.predicted
    assert [f.command for f in off.fix] == ["sysctl -w net.ipv4.ip_forward=1"]
    blocked = cell(NAT, "guest1", "upstream", forward_blockers=("ip filter FORWARD",))
    assert not blocked.predicted and "ip filter FORWARD" in blocked.reason
    assert [f.command for f in blocked.fix] == [
        'nft insert rule ip filter FORWARD iifname "virbr0" accept',
        'nft insert rule ip filter FORWARD oifname "virbr0" ct state established,related accept',
    ]
    # the host itself is not behind the forward hook
    assert cell(NAT, "guest1", "host", forward_blockers=("ip filter FORWARD",)).predicted


def test_no_default_route_no_outside() -> None:
    assert not cell(NAT, "guest1", "upstream", has_default_route=False).predicted
    assert cell(NAT, "guest1", "lan", has_default_route=False).predicted


# --- host bridge -----------------------------------------------------------------------------


def test_host_bridge_guests_are_lan_machines() -> None:
    assert all(matrix(HOSTBRIDGE).values())
    assert all(matrix(HOSTBRIDGE, hairpin=False, guests=3).values())


def test_host_bridge_with_a_reflecting_switch_port() -> None:
    m = matrix(HOSTBRIDGE, hairpin=True, switch_ports={"eth1": "sw1"}, host_uplink_port="eth1")
    assert not m["guest1", "lan"] and not m["guest1", "upstream"]
    assert m["lan", "guest1"] and m["guest1", "host"] and m["guest1", "guest2"]
    fix = cell(HOSTBRIDGE, "guest2", "lan", hairpin=True, switch_ports={"eth1": "sw1"},
               host_uplink_port="eth1").fix
    assert [(f.where, f.command) for f in fix] == [(ON_SWITCH,
                                                    "bridge link set dev sw1 hairpin off")]


# --- macvtap -----------------------------------------------------------------------------------

# mode, hairpin, guest↔guest, guest→host, host→guest (guests and host address on eth1)
MEASURED = [
    ("bridge", False, True, False, False),
    ("bridge", True, True, True, True),
    ("private", False, False, False, False),
    ("private", True, False, False, True),
    ("vepa", False, False, False, False),
    ("vepa", True, True, True, True),
]


@pytest.mark.parametrize("mode, hairpin, gg, gh, hg", MEASURED)
def test_macvtap_same_uplink_as_measured(mode: str, hairpin: bool, gg: bool, gh: bool,
                                         hg: bool) -> None:
    m = matrix(macvtap(mode), hairpin=hairpin)
    assert (m["guest1", "guest2"], m["guest2", "guest1"]) == (gg, gg)
    assert (m["guest1", "host"], m["host", "guest1"]) == (gh, hg)
    for other in ("lan", "upstream"):
        assert m["guest1", other] and m[other, "guest1"]


@pytest.mark.parametrize("mode", ["bridge", "private", "vepa"])
def test_macvtap_different_uplinks_meet_through_the_switch(mode: str) -> None:
    xml = macvtap(mode, "eth1", "eth2")
    assert default_guest_uplinks(net_of(xml), 2) == ("eth1", "eth2")
    m = matrix(xml)  # guest1 on eth1, guest2 on eth2; host's address on eth1
    assert m["guest1", "guest2"] and m["guest2", "guest1"]
    assert m["guest2", "host"] and m["host", "guest2"]
    assert m["guest1", "host"] == m["host", "guest1"] == False  # noqa: E712


def test_bridge_mode_shim_fix_and_its_effect() -> None:
    topo = {"host_address": "10.77.0.1/24", "uplink_routes": ("default via 10.77.0.100",)}
    fixes = cell(macvtap("bridge"), "guest1", "host", **topo).fix
    shim = shim_name("eth1")
    assert [(f.where, f.command) for f in fixes] == [
        (ON_HOST, f"ip link add {shim} link eth1 type macvlan mode bridge"),
        (ON_HOST, f"ip link set dev {shim} up"),
        (ON_HOST, "ip address del 10.77.0.1/24 dev eth1"),
        (ON_HOST, f"ip address add 10.77.0.1/24 dev {shim}"),
        (ON_HOST, f"ip route add default via 10.77.0.100 dev {shim}"),
    ]
    assert cell(macvtap("bridge"), "host", "guest2", **topo).fix == fixes
    after = matrix(macvtap("bridge"), host_shim=True, **topo)
    assert all(after.values())
    # the shim is a bridge-mode macvlan: it does not help vepa or private guests
    assert not matrix(macvtap("vepa"), host_shim=True)["guest1", "host"]
    assert not matrix(macvtap("private"), host_shim=True)["host", "guest1"]


def test_vepa_fix_is_hairpin_on_the_switch_port() -> None:
    fixes = cell(macvtap("vepa"), "guest1", "guest2", switch_ports={"eth1": "sw1"}).fix
    assert [(f.where, f.command) for f in fixes] == [(ON_SWITCH,
                                                      "bridge link set dev sw1 hairpin on")]
    # unknown switch: the port is named for the person to look up
    assert "PORT-OF-eth1" in cell(macvtap("vepa"), "host", "guest1").fix[0].command


def test_private_guest_finds_the_host_through_its_other_uplink() -> None:
    """guest1 on eth1 (the host's address), guest2 on eth2, both uplinks on the one LAN: the
    reflected ARP of guest1 goes back to guest1 alone on eth1, but the switch floods it to eth2
    too, where the host answers for its address on eth1; the host's own ARP and its replies
    come back to guest1 through the reflecting port (issue #16, hole 11)."""
    xml = macvtap("private", "eth1", "eth2")
    on = cell(xml, "guest1", "host", hairpin=True)
    assert on.predicted and "eth2" in on.reason and "ARP flux" in on.reason
    m = matrix(xml, hairpin=True)
    assert m["host", "guest1"] and m["guest2", "host"] and m["host", "guest2"]
    assert m["guest1", "guest2"]  # different uplinks: through the switch
    # no reflection: the host's reply to guest1 (and its ARP for it) never comes back
    assert not matrix(xml)["guest1", "host"]
    # eth2 does not answer for eth1's address (arp_ignore, arp_filter, rp_filter): no way in
    assert not cell(xml, "guest1", "host", hairpin=True, flux_uplinks=()).predicted
    assert not cell(xml, "guest1", "host", hairpin=True, flux_uplinks=("eth1",)).predicted
    # one uplink: the host has nothing else to hear the guest on
    assert not cell(macvtap("private"), "guest1", "host", hairpin=True).predicted


@pytest.mark.parametrize("arp_ignore, arp_filter, rp_filter, addressed, answers", [
    (0, False, 0, False, True),
    (3, False, 0, False, True),  # 3 only keeps scope-host addresses to itself
    (1, False, 0, True, False),
    (2, False, 0, True, False),
    (8, False, 0, True, False),
    (0, True, 0, True, False),
    (0, False, 1, True, False),  # strict: the route back to the guest is another interface
    (0, False, 2, True, True),  # loose: any route back will do...
    (0, False, 2, False, False),  # ...but the kernel rejects it where no address is
])
def test_which_interfaces_answer_arp_for_the_hosts_other_addresses(
        arp_ignore: int, arp_filter: bool, rp_filter: int, addressed: bool,
        answers: bool) -> None:
    assert answers_arp_for_others(arp_ignore, arp_filter, rp_filter, addressed) is answers


def test_private_has_no_fix_for_guests_on_one_uplink() -> None:
    c = cell(macvtap("private"), "guest1", "guest2", hairpin=True)
    assert not c.predicted and c.fix == ()


def test_passthrough_one_interface_per_guest() -> None:
    xml = macvtap("passthrough", "eth1", "eth2")
    m = matrix(xml, guests=3)
    assert default_guest_uplinks(net_of(xml), 3) == ("eth1", "eth2", None)
    assert m["guest1", "guest2"] and m["host", "guest1"] and m["guest2", "lan"]
    assert not any(v for (a, b), v in m.items() if "guest3" in (a, b))
    assert "none is left" in cell(xml, "guest3", "lan", guests=3).reason
    # the host's own address on a passed-through interface is gone with it
    taken = matrix(xml, host_uplink="eth1")
    assert not taken["host", "guest1"] and not taken["host", "lan"]
    assert taken["guest1", "guest2"]


def test_hostdev_is_a_vf_switch() -> None:
    xml = ("<network><name>v</name><forward mode='hostdev' managed='yes'><pf dev='eth9'/>"
           "</forward></network>")
    assert net_of(xml).forward_mode is ForwardMode.HOSTDEV
    assert all(matrix(xml).values())


# --- summary and guest configuration -------------------------------------------------------------


def test_summary_rows_for_two_uplinks() -> None:
    rows = summary(net_of(macvtap("vepa", "eth1", "eth2")))
    labels = [r.label for r in rows]
    assert labels[:2] == ["guest↔guest, same uplink (eth1)",
                          "guest↔guest, different uplinks (eth1, eth2)"]
    assert [r.cell.predicted for r in rows[:2]] == [False, True]
    assert labels[2:] == ["guest→host", "host→guest", "guest→LAN", "LAN→guest",
                          "guest→outside", "outside→guest"]
    assert rows[0].to_dict()["pair"] == labels[0]


def test_summary_follows_the_topology() -> None:
    rows = summary(net_of(ROUTE), replace(Topology(), lan_route=True))
    assert all(r.cell.predicted for r in rows)


def test_guest_dhcp_config() -> None:
    config = guest_dhcp_config(net_of(NAT))
    assert set(config) == {"ifupdown", "systemd-networkd", "NetworkManager", "dhclient",
                           "dhcpcd", "udhcpc"}
    assert "iface eth0 inet dhcp" in config["ifupdown"]
    assert "DHCP=ipv4" in config["systemd-networkd"]
    assert "ipv4.method auto" in config["NetworkManager"]
    assert config["udhcpc"].strip() == "udhcpc -i eth0"
    assert guest_dhcp_config(net_of(ROUTE)) == {}  # no DHCP served
    v6 = NAT.replace("</network>", "<ip family='ipv6' address='fd00::1' prefix='64'><dhcp>"
                     "<range start='fd00::10' end='fd00::ff'/></dhcp></ip></network>")
    assert "DHCP=yes" in guest_dhcp_config(net_of(v6))["systemd-networkd"]


def test_br_netfilter_hands_bridged_frames_to_a_blocking_firewall() -> None:
    topo = {"br_netfilter": True, "forward_blockers": ("ip filter FORWARD",)}
    open_net = OPEN
    c = cell(open_net, "guest1", "guest2", **topo)
    assert not c.predicted and "br_netfilter" in c.reason
    assert [f.command for f in c.fix] == [
        'nft insert rule ip filter FORWARD iifname "virbr2" accept',
        'nft insert rule ip filter FORWARD oifname "virbr2" accept',
    ]
    m = matrix(HOSTBRIDGE, **topo)
    assert not m["guest1", "guest2"] and not m["guest1", "lan"] and not m["lan", "guest2"]
    assert m["guest1", "host"] and m["host", "guest1"]  # local traffic is not forwarded
    # without br_netfilter, bridged frames never meet the IP forward hook
    assert all(matrix(HOSTBRIDGE, forward_blockers=("ip filter FORWARD",)).values())
