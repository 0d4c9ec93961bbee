"""virtnet.plan.drivers: which driver runs a network, its start-time checks against host facts,
and the start Plan it builds (pure: hand-made HostFacts, no host touched)."""

from __future__ import annotations

import importlib
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from virtnet.plan.drivers import DRIVER_MODULES, driver_for
from virtnet.plan.drivers.bridged import BridgedDriver
from virtnet.plan.drivers.hostbridge import HostBridgeDriver
from virtnet.errors import HostError
from virtnet.facts import AddressInfo, HostFacts, LinkInfo, RouteInfo
from virtnet.spec.model import (
    Bridge,
    DhcpRange,
    Dns,
    Forward,
    ForwardMode,
    IpDef,
    MacTableManager,
    Network,
    NetworkFamily,
    Route,
    family_of,
)
from virtnet.paths import StatePaths
from virtnet.plan.actions import (
    AddAddress,
    AddRoute,
    AttachHostBridge,
    CreateBridge,
    LinkUp,
    LoadFirewall,
    SetSysctl,
    StartDnsmasq,
    WriteFile,
)

A = ipaddress.ip_address
N = ipaddress.ip_network
PATHS = StatePaths.under(Path("/state"))


def link(name: str, index: int, kind: str | None = None) -> LinkInfo:
    return LinkInfo(name=name, index=index, kind=kind, up=True, mac=None, mtu=1500, master=None)


def facts(**kwargs: object) -> HostFacts:
    base: dict[str, object] = {
        "links": {"lo": link("lo", 1), "eth0": link("eth0", 2)},
        "addresses": [AddressInfo("eth0", ipaddress.ip_interface("198.51.100.7/24"))],
        "routes": [
            RouteInfo(N("0.0.0.0/0"), "eth0", A("198.51.100.1"), 0, 3, 254),
            RouteInfo(N("198.51.100.0/24"), "eth0", None, 0, 2, 254),
        ],
        "dnsmasq": "/usr/sbin/dnsmasq",
    }
    base.update(kwargs)
    return HostFacts(**base)  # type: ignore[arg-type]


def nat_net(**kwargs: object) -> Network:
    net = Network(
        name="default",
        forward=Forward(mode=ForwardMode.NAT),
        bridge=Bridge(name="virbr0"),
        mac="52:54:00:11:22:33",
        ips=[
            IpDef(
                address=A("192.168.122.1"),
                netmask=A("255.255.255.0"),
                ranges=[DhcpRange(A("192.168.122.2"), A("192.168.122.254"))],
            )
        ],
    )
    for key, value in kwargs.items():
        setattr(net, key, value)
    return net


def kinds(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [action.kind for action in plan.actions]


# --- driver selection --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [None, ForwardMode.NAT, ForwardMode.ROUTE, ForwardMode.OPEN])
def test_own_bridge_modes_use_the_bridged_driver(mode: ForwardMode | None) -> None:
    net = nat_net(forward=Forward(mode=mode) if mode else None)
    assert isinstance(driver_for(net), BridgedDriver)


def test_bridge_mode_with_a_bridge_name_uses_the_host_bridge_driver() -> None:
    net = Network(name="lan", forward=Forward(mode=ForwardMode.BRIDGE), bridge=Bridge(name="br0"))
    assert isinstance(driver_for(net), HostBridgeDriver)
    macvtap = Network(name="lan", forward=Forward(mode=ForwardMode.BRIDGE, dev="eth0"))
    assert not HostBridgeDriver().handles(macvtap)
    assert not BridgedDriver().handles(macvtap)


def test_a_mode_without_driver_is_a_clear_error() -> None:
    net = Network(name="vfs", forward=Forward(mode=ForwardMode.HOSTDEV))
    try:
        driver = driver_for(net)
    except HostError as exc:
        assert str(exc) == "network vfs: forward mode 'hostdev' is not supported"
    else:  # a hostdev driver exists in this build: it must be the one that handles it
        assert driver.handles(net) and driver.name not in ("bridged", "hostbridge")


def test_every_family_has_the_driver_of_that_family() -> None:
    assert set(DRIVER_MODULES) == set(NetworkFamily)
    for family, module in DRIVER_MODULES.items():
        assert importlib.import_module(module).DRIVER.family is family


@pytest.mark.parametrize("mode", list(ForwardMode))
@pytest.mark.parametrize("bridge", [None, "br0"])
def test_the_registry_follows_the_one_classification(mode: ForwardMode, bridge: str | None
                                                     ) -> None:
    net = Network(name="n", forward=None if mode is ForwardMode.NONE else Forward(mode=mode),
                  bridge=Bridge(name=bridge) if bridge else None)
    driver = driver_for(net)
    assert driver.family is family_of(net) and driver.handles(net)
    assert driver.capabilities(net).shaping is family_of(net).shapes_bridge


def test_planning_an_isolated_network_imports_no_other_driver() -> None:
    code = ("import sys\n"
            "from virtnet.spec.model import Bridge, Network\n"
            "from virtnet.plan.drivers import driver_for\n"
            "net = Network(name='iso', bridge=Bridge(name='virbr9'))\n"
            "driver_for(net).plug\n"
            "print(sorted(m for m in sys.modules if m.startswith('virtnet.plan.drivers.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['virtnet.plan.drivers.base', 'virtnet.plan.drivers.bridged']"


# --- preflight ---------------------------------------------------------------------------------


def test_clean_host_has_no_problems() -> None:
    assert BridgedDriver().preflight(nat_net(), facts()) == []


def test_existing_bridge_name_is_a_problem() -> None:
    host = facts(links={"lo": link("lo", 1), "virbr0": link("virbr0", 5, "bridge")})
    problems = BridgedDriver().preflight(nat_net(), host)
    assert [(p.path, p.message) for p in problems] == [
        ("/network/bridge/@name", "interface virbr0 already exists on this host")
    ]


def test_a_running_network_is_no_clash_with_itself() -> None:
    # what its start made (the bridge, and what is enslaved to it) with its address and
    # routes, left out of the facts: its plan reads the host as if it were not running
    bridge = link("virbr0", 5, "bridge")
    tap = LinkInfo(name="vnet0", index=6, kind="tun", up=True, mac=None, mtu=1500, master=5)
    running = facts(
        links={"lo": link("lo", 1), "eth0": link("eth0", 2), "virbr0": bridge, "vnet0": tap},
        addresses=[AddressInfo("virbr0", ipaddress.ip_interface("192.168.122.1/24"))],
        routes=[RouteInfo(N("192.168.122.0/24"), "virbr0", None, 0, 2, 254)],
        ra_accept={"virbr0": 0})
    # its bridge, and its address with that address's prefix route (one collision)
    assert len(BridgedDriver().preflight(nat_net(), running)) == 2
    alone = running.without_links(["virbr0", "no-such-link"])
    assert sorted(alone.links) == ["eth0", "lo"] and alone.ra_accept == {}
    assert BridgedDriver().preflight(nat_net(), alone) == []
    assert BridgedDriver().preflight(nat_net(bridge=Bridge(name="virbr1")), alone) == []
    # another network wanting the same subnet still clashes with the running one
    assert BridgedDriver().preflight(nat_net(bridge=Bridge(name="virbr1")), running) != []


def test_subnet_in_use_by_a_route_or_an_address() -> None:
    routed = facts(routes=[RouteInfo(N("192.168.122.0/24"), "eth1", None, 0, 2, 254)])
    problems = BridgedDriver().preflight(nat_net(), routed)
    assert [str(p) for p in problems] == [
        "/network/ip[1]: subnet 192.168.122.0/24 overlaps the host route 192.168.122.0/24 on eth1"
    ]
    addressed = facts(addresses=[AddressInfo("eth1", ipaddress.ip_interface("192.168.122.9/16"))])
    problems = BridgedDriver().preflight(nat_net(), addressed)
    assert [str(p) for p in problems] == [
        "/network/ip[1]: subnet 192.168.122.0/24 overlaps the address 192.168.122.9/16 on eth1"
    ]
    # the default route covers everything and is no collision
    assert BridgedDriver().preflight(nat_net(), facts()) == []


def test_the_halves_of_a_default_route_are_no_collision() -> None:
    # a VPN's 0.0.0.0/1 + 128.0.0.0/1 (or ::/1 + 8000::/1) replace the default route
    halves = [RouteInfo(N(d), "tun0", None, 0, 3, 254)
              for d in ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1")]
    net = nat_net(ips=[IpDef(address=A("192.168.122.1"), prefix=24),
                       IpDef(address=A("2001:db8:ca2:2::1"), prefix=64)])
    assert BridgedDriver().preflight(net, facts(routes=halves)) == []


def test_any_overlap_collides_not_only_the_same_prefix() -> None:
    # libvirt 9.0 refuses only an identical prefix; a covering /16 or a /25 inside collide too
    for other in ("192.168.0.0/16", "192.168.122.128/25", "192.168.122.7/32"):
        host = facts(routes=[RouteInfo(N(other), "eth1", None, 0, 2, 254)])
        assert [p.message for p in BridgedDriver().preflight(nat_net(), host)] == [
            f"subnet 192.168.122.0/24 overlaps the host route {other} on eth1"]


def test_a_subnet_inside_an_active_network_names_that_network() -> None:
    # network A (192.168.122.0/24 on virbr0) is active; B asks for 192.168.122.128/25
    host = facts(
        links={"lo": link("lo", 1), "eth0": link("eth0", 2), "virbr0": link("virbr0", 3, "bridge")},
        addresses=[AddressInfo("virbr0", ipaddress.ip_interface("192.168.122.1/24"))],
        routes=[RouteInfo(N("192.168.122.0/24"), "virbr0", None, 0, 2, 254)],
        networks={"virbr0": "A"},
    )
    net_b = nat_net(name="B", bridge=Bridge(name="virbr1"), ips=[
        IpDef(address=A("192.168.122.129"), netmask=A("255.255.255.128"))])
    assert [str(p) for p in BridgedDriver().preflight(net_b, host)] == [
        "/network/ip[1]: subnet 192.168.122.128/25 overlaps 192.168.122.0/24 of active "
        "network 'A' (on virbr0)"
    ]
    # what lies on A's bridge is A's own when A itself is judged (doctor, A active)
    net_a = nat_net(name="A")
    assert host.subnet_collisions(net_a, active=True) == []
    assert host.subnet_collisions(nat_net(name="other", bridge=Bridge(name="virbr0")),
                                  active=True) == []


def test_ipv6_subnets_collide_too() -> None:
    host = facts(routes=[RouteInfo(N("2001:db8:ca2::/48"), "eth0", None, 0, 2, 254),
                         RouteInfo(N("fe80::/64"), "eth0", None, 0, 2, 254),
                         RouteInfo(N("::/0"), "eth0", A("2001:db8:ca2::1"), 0, 2, 254)])
    net = nat_net(ips=[IpDef(family="ipv6", address=A("2001:db8:ca2:2::1"), prefix=64)])
    assert [p.message for p in host.subnet_collisions(net)] == [
        "subnet 2001:db8:ca2:2::/64 overlaps the host route 2001:db8:ca2::/48 on eth0"]


def test_a_route_without_a_device_and_an_address_without_its_route() -> None:
    host = facts(routes=[RouteInfo(N("10.9.0.0/16"), None, None, 0, 4, 254)],
                 addresses=[AddressInfo("dummy0", ipaddress.ip_interface("10.8.0.7/32"))])
    net = nat_net(ips=[IpDef(address=A("10.9.1.1"), prefix=24),
                       IpDef(address=A("10.8.0.1"), prefix=24)])
    assert [str(p) for p in host.subnet_collisions(net)] == [
        "/network/ip[1]: subnet 10.9.1.0/24 overlaps the host route 10.9.0.0/16 (no device: "
        "unreachable, blackhole or prohibit)",
        "/network/ip[2]: subnet 10.8.0.0/24 overlaps the address 10.8.0.7/32 on dummy0",
    ]


def test_an_address_and_its_prefix_route_are_one_collision() -> None:
    host = facts(routes=[RouteInfo(N("192.168.0.0/16"), "eth1", None, 0, 2, 254)],
                 addresses=[AddressInfo("eth1", ipaddress.ip_interface("192.168.3.4/16"))])
    assert [p.message for p in host.subnet_collisions(nat_net())] == [
        "subnet 192.168.122.0/24 overlaps the host route 192.168.0.0/16 on eth1"]


def test_static_route_colliding_with_a_host_route() -> None:
    net = nat_net(routes=[Route(address=A("10.50.0.0"), prefix=16, gateway=A("192.168.122.5"))])
    host = facts(routes=[RouteInfo(N("10.50.0.0/16"), "eth0", A("198.51.100.9"), 0, 3, 254)])
    assert [str(p) for p in BridgedDriver().preflight(net, host)] == [
        "/network/route[1]: route 10.50.0.0/16 overlaps the host route 10.50.0.0/16 on eth0"
    ]


def test_forward_dev_must_exist() -> None:
    net = nat_net(forward=Forward(mode=ForwardMode.NAT, dev="eth9"))
    assert [str(p) for p in BridgedDriver().preflight(net, facts())] == [
        "/network/forward/@dev: forward device eth9 does not exist"
    ]
    net.forward.dev = "eth0"  # type: ignore[union-attr]
    assert BridgedDriver().preflight(net, facts()) == []


def test_ipv6_forwarding_refused_while_ra_routes_would_be_flushed() -> None:
    net = nat_net()
    net.ips.append(IpDef(family="ipv6", address=A("fd00:9::1"), prefix=64))
    host = facts(ra_accept={"eth0": 1, "eth1": 2})
    problems = BridgedDriver().preflight(net, host)
    assert len(problems) == 1 and "router advertisements on eth0;" in problems[0].message
    assert BridgedDriver().preflight(net, facts(ra_accept={"eth1": 2})) == []
    isolated = nat_net(forward=None)
    isolated.ips = net.ips
    assert BridgedDriver().preflight(isolated, host) == []  # no forwarding, no risk


def test_missing_tools_and_ipv6() -> None:
    net = nat_net()
    net.ips.append(IpDef(family="ipv6", address=A("fd00:9::1"), prefix=64))
    host = facts(dnsmasq=None, nftables=False, ipv6=False)
    messages = [p.message for p in BridgedDriver().preflight(net, host)]
    assert messages == [
        "the network has IPv6 addresses but the kernel has IPv6 disabled",
        "nftables is not installed (libnftables or nft)",
        "dnsmasq is not installed; it serves DHCP and DNS here",
    ]


def test_host_bridge_preflight() -> None:
    net = Network(name="lan", forward=Forward(mode=ForwardMode.BRIDGE), bridge=Bridge(name="br0"))
    driver = HostBridgeDriver()
    assert [p.message for p in driver.preflight(net, facts())] == [
        "bridge br0 does not exist on this host"
    ]
    assert [p.message for p in driver.preflight(net, facts(links={"br0": link("br0", 3, "veth")}))] == [
        "br0 is veth, not a bridge"
    ]
    ok = facts(links={"br0": link("br0", 3, "bridge")})
    assert driver.preflight(net, ok) == []
    net.bridge.mac_table_manager = MacTableManager.LIBVIRT  # type: ignore[union-attr]
    assert [p.path for p in driver.preflight(net, ok)] == ["/network/bridge/@macTableManager"]


# --- start plans -------------------------------------------------------------------------------


def test_default_nat_plan_follows_libvirt_order_but_launches_dnsmasq_early() -> None:
    plan = BridgedDriver().plan_start(nat_net(), facts(), PATHS)
    assert plan.network == "default"
    # libvirt's order, except that dnsmasq's files and dnsmasq itself come right after the
    # bridge's addresses (not before them: a port 53 it cannot bind must fail the start):
    # dnsmasq initialises while the other steps run (StartDnsmasq.overlaps)
    assert kinds(plan) == [
        "create-bridge",
        "set-sysctl", "set-sysctl", "set-sysctl",
        "add-address",
        "write-file", "write-file", "write-file",
        "start-dnsmasq",
        "load-firewall",
        "link-up",
        "set-sysctl",
    ]
    actions = plan.actions
    assert actions[0] == CreateBridge("virbr0", stp=True, delay=0, mac="52:54:00:11:22:33", mtu=None)
    files = [a.path for a in actions[5:8]]  # type: ignore[attr-defined]
    assert files == [
        "/state/lib/dnsmasq/default.conf",
        "/state/lib/dnsmasq/default.hostsfile",
        "/state/lib/dnsmasq/default.addnhosts",
    ]
    assert "interface=virbr0" in actions[5].content  # type: ignore[attr-defined]
    assert "bind-dynamic" in actions[5].content  # type: ignore[attr-defined]  # takes up
    # addresses that come later (an IPv6 one still tentative, a net-update) as they come
    dnsmasq = actions[8]
    assert isinstance(dnsmasq, StartDnsmasq) and dnsmasq.overlaps
    assert (dnsmasq.conf_file, dnsmasq.pid_file, dnsmasq.lease_file, dnsmasq.binary) == (
        "/state/lib/dnsmasq/default.conf",
        "/state/run/network/default.pid",
        "/state/lib/dnsmasq/default.leases",
        "/usr/sbin/dnsmasq",
    )
    assert f"pid-file={dnsmasq.pid_file}" in actions[5].content  # type: ignore[attr-defined]
    assert [a.key for a in actions[1:4]] == [  # type: ignore[attr-defined]
        "net/ipv6/conf/virbr0/disable_ipv6",
        "net/ipv6/conf/virbr0/accept_ra",
        "net/ipv6/conf/virbr0/autoconf",
    ]
    assert actions[1].value == "1"  # type: ignore[attr-defined]  # no IPv6 address: IPv6 off
    assert actions[4] == AddAddress("virbr0", "192.168.122.1/24")
    assert actions[10] == LinkUp("virbr0", down_on_undo=False)
    assert actions[11] == SetSysctl("net/ipv4/ip_forward", "1", restore=False)


def test_plan_is_deterministic() -> None:
    first = BridgedDriver().plan_start(nat_net(), facts(), PATHS).to_dict()
    assert BridgedDriver().plan_start(nat_net(), facts(), PATHS).to_dict() == first


def test_isolated_plan_has_firewall_but_no_forwarding() -> None:
    plan = BridgedDriver().plan_start(nat_net(forward=None), facts(), PATHS)
    assert "load-firewall" in kinds(plan)
    assert not any(isinstance(a, SetSysctl) and not a.restore for a in plan.actions)


def test_open_plan_forwards_without_firewall() -> None:
    plan = BridgedDriver().plan_start(nat_net(forward=Forward(mode=ForwardMode.OPEN)), facts(), PATHS)
    assert "load-firewall" not in kinds(plan)
    assert SetSysctl("net/ipv4/ip_forward", "1", restore=False) in plan.actions


def test_routed_ipv6_plan() -> None:
    net = nat_net(forward=Forward(mode=ForwardMode.ROUTE))
    net.ips = [IpDef(family="ipv6", address=A("fd00:9::1"), prefix=64)]
    net.routes = [Route(family="ipv6", address=A("fd00:aa::"), prefix=48, gateway=A("fd00:9::2"), metric=7)]
    plan = BridgedDriver().plan_start(net, facts(), PATHS)
    assert SetSysctl("net/ipv6/conf/virbr0/disable_ipv6", "0", missing_ok=True) in plan.actions
    assert SetSysctl("net/ipv6/conf/all/forwarding", "1", restore=False) in plan.actions
    assert SetSysctl("net/ipv4/ip_forward", "1", restore=False) not in plan.actions
    assert AddAddress("virbr0", "fd00:9::1/64") in plan.actions
    route = AddRoute("virbr0", "fd00:aa::/48", gateway="fd00:9::2", metric=7)
    assert route in plan.actions
    # routes come after the bridge is up, as in libvirt
    assert plan.actions.index(route) > plan.actions.index(LinkUp("virbr0", down_on_undo=False))


def test_bridge_attributes_reach_the_bridge() -> None:
    net = nat_net(bridge=Bridge(name="vb7", stp=False, delay=4), mtu=9000)
    create = BridgedDriver().plan_start(net, facts(), PATHS).actions[0]
    assert create == CreateBridge("vb7", stp=False, delay=4, mac="52:54:00:11:22:33", mtu=9000)
    net.bridge.mac_table_manager = MacTableManager.LIBVIRT  # type: ignore[union-attr]
    assert BridgedDriver().plan_start(net, facts(), PATHS).actions[0].vlan_filtering  # type: ignore[attr-defined]


def test_no_dnsmasq_without_addresses_or_with_nothing_to_serve() -> None:
    no_ips = BridgedDriver().plan_start(nat_net(ips=[]), facts(), PATHS)
    assert "start-dnsmasq" not in kinds(no_ips) and "add-address" not in kinds(no_ips)
    quiet = nat_net(dns=Dns(enable=False))
    quiet.ips = [IpDef(address=A("192.168.122.1"), prefix=24)]
    assert "start-dnsmasq" not in kinds(BridgedDriver().plan_start(quiet, facts(), PATHS))
    # DNS alone (no DHCP) still runs dnsmasq, as libvirt does
    dns_only = nat_net()
    dns_only.ips = [IpDef(address=A("192.168.122.1"), prefix=24)]
    assert "start-dnsmasq" in kinds(BridgedDriver().plan_start(dns_only, facts(), PATHS))


def test_ipv6_knobs_skipped_when_the_kernel_has_no_ipv6() -> None:
    plan = BridgedDriver().plan_start(nat_net(), facts(ipv6=False), PATHS)
    assert not any(isinstance(a, SetSysctl) and "ipv6" in a.key for a in plan.actions)


def test_firewall_action_carries_ruleset_and_teardown() -> None:
    plan = BridgedDriver().plan_start(nat_net(), facts(), PATHS)
    load = next(a for a in plan.actions if isinstance(a, LoadFirewall))
    assert (load.family, load.table, load.chain_prefix) == ("inet", "virtnet", "net-")
    assert "add chain inet virtnet net-default-nat" in load.ruleset
    assert "delete chain inet virtnet net-default-nat" in load.teardown


def test_host_bridge_plan_only_records() -> None:
    net = Network(name="lan", forward=Forward(mode=ForwardMode.BRIDGE), bridge=Bridge(name="br0"))
    plan = HostBridgeDriver().plan_start(net, facts(), PATHS)
    assert plan.actions == [AttachHostBridge("lan", "br0")]
    assert isinstance(plan.actions[0], AttachHostBridge) and not any(
        isinstance(a, (CreateBridge, WriteFile)) for a in plan.actions
    )
