"""virtnet.insight.netnew: the model net-new builds from its flags and how it picks free subnets (pure;
hand-made host facts). Each built model must also survive format → parse → validate."""

from __future__ import annotations

import ipaddress

import pytest

from virtnet.service.engine import Engine
from virtnet.facts import AddressInfo, HostFacts, RouteInfo
from virtnet.spec.model import ForwardMode, IpDef, Network
from virtnet.insight.netnew import (
    NetNewError,
    NewNetworkOptions,
    build_network,
    pick_free,
    resolve_addresses,
    taken_networks,
    ula_candidates,
)

N = ipaddress.ip_network
I4 = ipaddress.IPv4Interface
I6 = ipaddress.IPv6Interface


def roundtrip(net: Network) -> Network:
    return Engine.parse(Engine.format(net, inactive=True), "test")


def test_nat_default_is_a_24_with_the_whole_range_for_dhcp() -> None:
    options = NewNetworkOptions("demo")
    ipv4, ipv6 = resolve_addresses(options, [])
    assert ipv4 == I4("192.168.122.1/24") and ipv6 is None
    net = roundtrip(build_network(options, ipv4, ipv6))
    assert net.forward is not None and net.forward.mode is ForwardMode.NAT
    [ip] = net.ips
    assert [(str(r.start), str(r.end)) for r in ip.ranges] == [("192.168.122.2",
                                                               "192.168.122.254")]


def test_auto_skips_taken_subnets_in_order() -> None:
    taken = [N("192.168.122.0/24"), N("192.168.100.0/24"), N("192.168.123.0/25")]
    ipv4, _ = resolve_addresses(NewNetworkOptions("demo"), taken)
    assert ipv4 == I4("192.168.124.1/24")
    # a wide route covering all of 192.168/16 sends it to 10/8
    ipv4, _ = resolve_addresses(NewNetworkOptions("demo"), [N("192.168.0.0/16")])
    assert ipv4 == I4("10.0.0.1/24")


def test_pick_free_fails_clearly_when_nothing_is_free() -> None:
    with pytest.raises(NetNewError, match="no free subnet"):
        pick_free([N("10.0.0.0/24")], [N("10.0.0.0/8")])


def test_taken_networks_ignores_the_default_route() -> None:
    facts = HostFacts(
        addresses=[AddressInfo("eth0", ipaddress.ip_interface("192.168.122.7/24"))],
        routes=[RouteInfo(N("0.0.0.0/0"), "eth0", ipaddress.ip_address("192.168.122.1"), 0, 3,
                          254),
                RouteInfo(N("192.168.100.0/24"), "eth1", None, 0, 3, 254)],
    )
    other = Network(name="other", ips=[IpDef(address=ipaddress.ip_address("10.9.0.1"),
                                             prefix=16)])
    taken = taken_networks(facts, [other])
    assert set(taken) == {N("192.168.122.0/24"), N("192.168.100.0/24"), N("10.9.0.0/16")}


def test_ula_is_stable_per_name_and_skips_taken_prefixes() -> None:
    first = next(ula_candidates("demo"))
    assert first.prefixlen == 64 and first.subnet_of(N("fd00::/8"))
    assert next(ula_candidates("demo")) == first and next(ula_candidates("other")) != first
    _, ipv6 = resolve_addresses(NewNetworkOptions("demo", ipv6="auto"), [first])
    assert ipv6 is not None and ipv6.network != first and ipv6.ip == ipv6.network[1]


def test_given_cidrs_keep_a_host_address_or_take_the_first() -> None:
    ipv4, ipv6 = resolve_addresses(
        NewNetworkOptions("demo", subnet="10.5.0.0/16", ipv6="fd00:5::/64"), [])
    assert ipv4 == I4("10.5.0.1/16") and ipv6 == I6("fd00:5::1/64")
    ipv4, _ = resolve_addresses(NewNetworkOptions("demo", subnet="10.5.0.9/24"), [])
    assert ipv4 == I4("10.5.0.9/24")
    net = roundtrip(build_network(NewNetworkOptions("demo"), I4("10.5.0.9/24"), None))
    assert [(str(r.start), str(r.end)) for r in net.ips[0].ranges] == [("10.5.0.1",
                                                                       "10.5.0.254")]


@pytest.mark.parametrize("options, message", [
    (NewNetworkOptions("d", subnet="10.0.0.0/33"), "not an address/prefix"),
    (NewNetworkOptions("d", subnet="fd00::/64"), "not an IPv4 CIDR"),
    (NewNetworkOptions("d", ipv6="fd00::/48"), "needs a /64"),
    (NewNetworkOptions("d", mode="bridge", subnet="auto", bridge="br0"), "do not apply"),
])
def test_bad_address_flags_are_named(options: NewNetworkOptions, message: str) -> None:
    with pytest.raises(NetNewError, match=message):
        resolve_addresses(options, [])


def test_isolated_without_dhcp_with_domain_and_ipv6() -> None:
    options = NewNetworkOptions("iso", mode="isolated", dhcp=False, domain="lab")
    net = roundtrip(build_network(options, I4("10.7.0.1/24"), I6("fd00:7::1/64")))
    assert net.forward is None and net.domain is not None and net.domain.name == "lab"
    assert [ip.ranges for ip in net.ips] == [[], []]
    assert [ip.is_ipv6 for ip in net.ips] == [False, True]


def test_route_and_nat_take_an_uplink() -> None:
    net = roundtrip(build_network(NewNetworkOptions("r", mode="route", dev="eth0"),
                                  I4("10.8.0.1/24"), None))
    assert net.forward is not None and net.forward.mode is ForwardMode.ROUTE
    assert net.forward.dev == "eth0"


def test_host_bridge_and_macvtap_modes() -> None:
    bridged = roundtrip(build_network(NewNetworkOptions("b", mode="bridge", bridge="br0"),
                                      None, None))
    assert bridged.forward is not None and bridged.forward.mode is ForwardMode.BRIDGE
    assert bridged.bridge_name == "br0" and bridged.ips == []
    for mode in ("bridge", "private", "vepa", "passthrough"):
        net = roundtrip(build_network(
            NewNetworkOptions("m", mode="macvtap", dev="eth1", macvtap_mode=mode), None, None))
        assert net.forward is not None and net.forward.mode is ForwardMode(mode)
        assert [i.dev for i in net.forward.interfaces] == ["eth1"] and net.bridge is None


@pytest.mark.parametrize("options, message", [
    (NewNetworkOptions("b", mode="bridge"), "needs --bridge"),
    (NewNetworkOptions("m", mode="macvtap"), "needs --dev"),
    (NewNetworkOptions("m", mode="macvtap", dev="eth0", bridge="br0"), "not --bridge"),
    (NewNetworkOptions("b", mode="bridge", bridge="br0", domain="x"), "--domain needs"),
    (NewNetworkOptions("i", mode="isolated", dev="eth0"), "not used in mode isolated"),
])
def test_inconsistent_flags_are_named(options: NewNetworkOptions, message: str) -> None:
    with pytest.raises(NetNewError, match=message):
        build_network(options, None, None)


def test_libvirt_subnets_from_definitions_and_status_files() -> None:
    from virtnet.spec.libvirtnets import libvirt_subnets

    files = [
        ("/etc/libvirt/qemu/networks/a.xml", b"<network><name>a</name>"
         b"<ip address='10.7.0.1' netmask='255.255.0.0'/>"
         b"<ip family='ipv6' address='fd00:7::1' prefix='64'/></network>"),
        ("/run/libvirt/network/b.xml", b"<networkstatus><class_id bitmap='0'/>"
         b"<network><name>b</name><ip address='10.8.1.1' prefix='24'/></network>"
         b"</networkstatus>"),
        ("/etc/libvirt/qemu/networks/c.xml", b"<network><name>c</name>"
         b"<ip address='10.9.1.1'/></network>"),  # no prefix: libvirt's /24
        ("/etc/libvirt/qemu/networks/broken.xml", b"<network><ip address="),
        ("/etc/libvirt/qemu/networks/odd.xml", b"<network><ip address='nonsense'/></network>"),
    ]
    assert [str(n) for n in libvirt_subnets(files)] == [
        "10.7.0.0/16", "fd00:7::/64", "10.8.1.0/24", "10.9.1.0/24"]


def test_summary_names_bridge_and_subnets() -> None:
    from virtnet.insight.netnew import summary

    options = NewNetworkOptions(name="s", mode="nat", ipv6="fd00:1::/64")
    net = build_network(options, *resolve_addresses(
        NewNetworkOptions(name="s", subnet="10.3.3.0/24", ipv6="fd00:1::/64"), []))
    made = summary(net)
    assert made["name"] == "s" and made["mode"] == "nat"
    assert made["ips"] == [
        {"family": "ipv4", "address": "10.3.3.1/24", "dhcp": ["10.3.3.2 - 10.3.3.254"]},
        {"family": "ipv6", "address": "fd00:1::1/64"}]
