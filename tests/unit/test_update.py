"""Unit tests of virtnet.spec.update: each command and section, and each refusal."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

import pytest

from virtnet.errors import UpdateError
from virtnet.spec.model import (
    DhcpHost,
    DhcpRange,
    Dns,
    DnsHost,
    DnsSrv,
    DnsTxt,
    Forward,
    ForwardInterface,
    ForwardMode,
    IpDef,
    Network,
    PortGroup,
)
from virtnet.spec.update import apply_update

ip = ipaddress.ip_address


def ipv4_def(address: str = "192.168.122.1", prefix: int = 24, **kwargs: object) -> IpDef:
    return IpDef(address=ip(address), prefix=prefix, **kwargs)  # type: ignore[arg-type]


def ipv6_def(address: str = "2001:db8::1", prefix: int = 64, **kwargs: object) -> IpDef:
    return IpDef(
        family="ipv6", address=ip(address), prefix=prefix, **kwargs  # type: ignore[arg-type]
    )


def host_a() -> DhcpHost:
    return DhcpHost(mac="00:16:3e:77:e2:ed", name="a.example.com", ip=ip("192.168.122.10"))


def host_b() -> DhcpHost:
    return DhcpHost(mac="00:16:3e:3e:a9:1a", name="b.example.com", ip=ip("192.168.122.11"))


def nat_network() -> Network:
    """A NAT network like libvirt's nat-network test: a range and two hosts on one IPv4 <ip>."""
    return Network(
        name="default",
        forward=Forward(mode=ForwardMode.NAT, dev="eth1", interfaces=[ForwardInterface("eth1")]),
        ips=[
            ipv4_def(
                ranges=[DhcpRange(ip("192.168.122.2"), ip("192.168.122.254"))],
                hosts=[host_a(), host_b()],
            ),
            ipv6_def(),
        ],
        dns=Dns(
            hosts=[
                DnsHost(ip("192.168.122.1"), ["gateway", "router"]),
                DnsHost(ip("192.168.122.2"), ["printer"]),
            ],
            txts=[DnsTxt("example", "example value")],
            srvs=[
                DnsSrv("name", "tcp", "test-domain", ".", 1024, 10, 10),
                DnsSrv("name", "udp", "other-domain", ".", 53, 10, 10),
            ],
        ),
        portgroups=[PortGroup("bob", default=True), PortGroup("alice")],
    )


def update(net: Network, command: str, section: str, xml: str, parent_index: int = -1) -> Network:
    """apply_update, checking on the way that the input network is never changed."""
    before = copy.deepcopy(net)
    try:
        return apply_update(net, command, section, xml, parent_index)
    finally:
        assert net == before, "apply_update changed its input"


def refused(net: Network, command: str, section: str, xml: str, parent_index: int = -1) -> str:
    with pytest.raises(UpdateError) as info:
        update(net, command, section, xml, parent_index)
    return str(info.value)


def update_nat(command: str, section: str, xml: str, parent_index: int = -1) -> Network:
    return update(nat_network(), command, section, xml, parent_index)


def refused_nat(command: str, section: str, xml: str, parent_index: int = -1) -> str:
    return refused(nat_network(), command, section, xml, parent_index)


# --- commands, sections, snippets ------------------------------------------------------


def test_add_is_add_last() -> None:
    snippet = "<txt name='new' value='v'/>"
    by_add = update_nat("add", "dns-txt", snippet)
    by_add_last = update_nat("add-last", "dns-txt", snippet)
    assert by_add == by_add_last
    assert [t.name for t in by_add.dns.txts] == ["example", "new"]


def test_returns_a_new_network() -> None:
    net = nat_network()
    result = update(net, "add-first", "dns-txt", "<txt name='new' value='v'/>")
    assert result is not net
    assert result.dns.txts is not net.dns.txts


def test_unknown_command_is_refused() -> None:
    message = refused_nat("insert", "dns-txt", "<txt name='x' value='y'/>")
    assert "'insert'" in message


@pytest.mark.parametrize("section", ["ip-dhcp-bootp", "dns", "hosts"])
def test_unknown_section_is_refused(section: str) -> None:
    message = refused_nat("add", section, "<txt name='x' value='y'/>")
    assert f"'{section}'" in message


@pytest.mark.parametrize("section", ["bridge", "domain", "ip", "forward", "forward-pf"])
def test_sections_libvirt_cannot_update_are_refused(section: str) -> None:
    message = refused_nat("modify", section, "<bridge name='virbr9'/>")
    assert message.startswith(f"{section}:")
    assert "cannot be updated" in message
    assert "'default'" in message


@pytest.mark.parametrize("snippet", ["<txt name='x'", "", "not xml", "<a/><b/>"])
def test_malformed_snippet_is_refused(snippet: str) -> None:
    message = refused_nat("add", "dns-txt", snippet)
    assert message.startswith("dns-txt: invalid XML snippet")


def test_malformed_snippet_is_reported_before_unsupported_section() -> None:
    assert "invalid XML snippet" in refused_nat("add", "bridge", "<bridge")


@pytest.mark.parametrize(
    ("section", "snippet", "expected"),
    [
        ("ip-dhcp-host", "<range start='192.168.122.3' end='192.168.122.4'/>", "<host>"),
        ("ip-dhcp-range", "<host mac='00:16:3e:00:00:01' ip='192.168.122.3'/>", "<range>"),
        ("forward-interface", "<pf dev='eth3'/>", "<interface>"),
        ("portgroup", "<group name='x'/>", "<portgroup>"),
        ("dns-host", "<hostname>x</hostname>", "<host>"),
        ("dns-txt", "<srv service='a' protocol='tcp'/>", "<txt>"),
        ("dns-srv", "<txt name='a' value='b'/>", "<srv>"),
    ],
)
def test_wrong_element_is_refused(section: str, snippet: str, expected: str) -> None:
    message = refused_nat("add", section, snippet)
    assert message.startswith(f"{section}:")
    assert f"expected {expected}" in message


# --- ip-dhcp-host ----------------------------------------------------------------------

NEW_HOST = "<host mac='00:16:3e:77:f0:0d' name='m.example.com' ip='192.168.122.12'/>"


def test_dhcp_host_add_last_and_first() -> None:
    last = update_nat("add-last", "ip-dhcp-host", NEW_HOST)
    names = [h.name for h in last.ips[0].hosts]
    assert names == ["a.example.com", "b.example.com", "m.example.com"]
    first = update_nat("add-first", "ip-dhcp-host", NEW_HOST)
    assert first.ips[0].hosts[0] == DhcpHost(
        mac="00:16:3e:77:f0:0d", name="m.example.com", ip=ip("192.168.122.12")
    )


@pytest.mark.parametrize(
    ("snippet", "value"),
    [
        # The same MAC written differently is still the same MAC.
        ("<host mac='0:16:3E:77:E2:ED' name='new' ip='192.168.122.50'/>", "0:16:3E:77:E2:ED"),
        (
            "<host mac='00:16:3e:00:00:01' name='a.example.com' ip='192.168.122.50'/>",
            "a.example.com",
        ),
        ("<host mac='00:16:3e:00:00:01' name='new' ip='192.168.122.10'/>", "192.168.122.10"),
    ],
)
def test_dhcp_host_add_duplicate_is_refused(snippet: str, value: str) -> None:
    message = refused_nat("add", "ip-dhcp-host", snippet)
    assert message.startswith("ip-dhcp-host:")
    assert value in message
    assert "a.example.com" in message  # names the existing entry


@pytest.mark.parametrize(
    "snippet",
    [
        "<host mac='00:16:3e:00:00:01'/>",  # no ip
        "<host name='tea'/>",  # no ip
        "<host ip='192.168.122.50'/>",  # neither mac nor name
        "<host mac='01:16:3e:00:00:01' ip='192.168.122.50'/>",  # multicast MAC
        "<host mac='zz:16:3e:00:00:01' ip='192.168.122.50'/>",  # not a MAC
    ],
)
def test_dhcp_host_add_incomplete_or_invalid_is_refused(snippet: str) -> None:
    assert refused_nat("add", "ip-dhcp-host", snippet).startswith("ip-dhcp-host:")


def test_dhcp_host_address_family_must_match_its_ip() -> None:
    message = refused_nat("add", "ip-dhcp-host", "<host name='x' ip='2001:db8::5'/>", 0)
    assert "2001:db8::5" in message


def test_dhcp_host_outside_the_subnet_is_refused() -> None:
    for command in ("add", "modify"):
        snippet = "<host mac='00:16:3e:77:e2:ed' name='a.example.com' ip='192.168.123.10'/>"
        message = refused_nat(command, "ip-dhcp-host", snippet)
        assert "192.168.123.10" in message and "192.168.122.0/24" in message


def test_dhcp_host_ipv6_by_id_and_name() -> None:
    net = update_nat(
        "add", "ip-dhcp-host", "<host id='0:3:0:1:0:16:3e:11:22:33' ip='2001:db8::20'/>", 1
    )
    assert net.ips[1].hosts == [DhcpHost(id="0:3:0:1:0:16:3e:11:22:33", ip=ip("2001:db8::20"))]
    assert net.ips[0].hosts == nat_network().ips[0].hosts


def test_dhcp_host_ipv6_refuses_mac() -> None:
    message = refused_nat(
        "add", "ip-dhcp-host", "<host mac='00:16:3e:00:00:01' ip='2001:db8::20'/>", 1
    )
    assert message.startswith("ip-dhcp-host:")
    # ... also as a delete pattern.
    message = refused_nat("delete", "ip-dhcp-host", "<host mac='00:16:3e:00:00:01'/>", 1)
    assert "00:16:3e:00:00:01" in message


def test_dhcp_host_ipv6_needs_id_or_name() -> None:
    refused_nat("add", "ip-dhcp-host", "<host ip='2001:db8::20'/>", 1)


def test_dhcp_host_modify_by_mac_replaces_the_entry() -> None:
    snippet = "<host mac='00:16:3e:77:e2:ed' name='a.example.com' ip='192.168.122.47'/>"
    net = update_nat("modify", "ip-dhcp-host", snippet)
    assert net.ips[0].hosts[0].ip == ip("192.168.122.47")
    assert net.ips[0].hosts[1] == host_b()


def test_dhcp_host_modify_by_name_or_ip() -> None:
    by_name = update_nat(
        "modify", "ip-dhcp-host", "<host name='b.example.com' ip='192.168.122.99'/>"
    )
    assert by_name.ips[0].hosts[1] == DhcpHost(name="b.example.com", ip=ip("192.168.122.99"))
    by_ip = update_nat(
        "modify", "ip-dhcp-host", "<host mac='00:16:3e:00:00:99' ip='192.168.122.11'/>"
    )
    assert by_ip.ips[0].hosts[1].mac == "00:16:3e:00:00:99"


def test_dhcp_host_modify_missing_or_incomplete_is_refused() -> None:
    message = refused_nat("modify", "ip-dhcp-host", NEW_HOST)
    assert "00:16:3e:77:f0:0d" in message and "192.168.122.12" in message
    refused_nat("modify", "ip-dhcp-host", "<host mac='00:16:3e:77:e2:ed'/>")


def test_dhcp_host_delete_with_partial_pattern() -> None:
    net = update_nat("delete", "ip-dhcp-host", "<host mac='00:16:3e:77:e2:ed'/>")
    assert net.ips[0].hosts == [host_b()]
    net = update_nat("delete", "ip-dhcp-host", "<host ip='192.168.122.11'/>")
    assert net.ips[0].hosts == [host_a()]


def test_dhcp_host_delete_needs_every_given_attribute_to_match() -> None:
    message = refused_nat(
        "delete", "ip-dhcp-host", "<host name='a.example.com' ip='192.168.122.11'/>"
    )
    assert "a.example.com" in message and "192.168.122.11" in message


def test_dhcp_host_delete_pattern_matches_any_mac_of_a_host_without_one() -> None:
    # libvirt's quirk: a host that has no MAC never contradicts the pattern's MAC.
    net = nat_network()
    net.ips[0].hosts.append(DhcpHost(name="c.example.com", ip=ip("192.168.122.12")))
    result = update(net, "delete", "ip-dhcp-host", "<host mac='00:16:3e:99:99:99'/>")
    assert [h.name for h in result.ips[0].hosts] == ["a.example.com", "b.example.com"]


def test_dhcp_host_delete_empty_pattern_or_missing_host_is_refused() -> None:
    refused_nat("delete", "ip-dhcp-host", "<host/>")
    message = refused_nat("delete", "ip-dhcp-host", NEW_HOST)
    assert "m.example.com" in message


def test_parent_index_selects_the_ip_among_all_families() -> None:
    net = Network(name="n", ips=[ipv6_def(), ipv4_def()])
    result = update(net, "add", "ip-dhcp-host", "<host name='x' ip='192.168.122.5'/>", 1)
    assert result.ips[1].hosts and not result.ips[0].hosts
    message = refused(net, "add", "ip-dhcp-host", "<host name='x' ip='192.168.122.5'/>", 0)
    assert "192.168.122.5" in message


def test_parent_index_beyond_the_ips_is_refused() -> None:
    message = refused_nat("add", "ip-dhcp-host", NEW_HOST, 5)
    assert "5" in message and "ip-dhcp-host" in message


def test_negative_parent_index_prefers_the_ip_that_has_dhcp() -> None:
    net = Network(
        name="n",
        ips=[ipv4_def(), ipv6_def(hosts=[DhcpHost(name="old", ip=ip("2001:db8::9"))])],
    )
    result = update(net, "add", "ip-dhcp-host", "<host name='new' ip='2001:db8::10'/>")
    assert [h.name for h in result.ips[1].hosts] == ["old", "new"]


def test_negative_parent_index_without_dhcp_picks_ipv4_first() -> None:
    net = Network(name="n", ips=[ipv6_def(), ipv4_def()])
    result = update(net, "add", "ip-dhcp-host", "<host name='x' ip='192.168.122.5'/>")
    assert result.ips[1].hosts and not result.ips[0].hosts
    only_v6 = Network(name="n", ips=[ipv6_def()])
    result = update(only_v6, "add", "ip-dhcp-host", "<host name='x' ip='2001:db8::5'/>")
    assert result.ips[0].hosts


def test_dhcp_update_without_any_ip_is_refused() -> None:
    assert "no <ip>" in refused(Network(name="n"), "add", "ip-dhcp-host", NEW_HOST)


def test_dhcp_only_on_one_ip_per_family() -> None:
    net = nat_network()
    net.ips.append(ipv4_def("10.0.0.1", 8))
    message = refused(net, "add", "ip-dhcp-host", "<host name='x' ip='10.0.0.5'/>", 2)
    assert "192.168.122.1" in message


# --- ip-dhcp-range ---------------------------------------------------------------------


def test_dhcp_range_add_first_and_last() -> None:
    existing = DhcpRange(ip("192.168.122.2"), ip("192.168.122.9"))
    net = Network(name="n", ips=[ipv4_def(ranges=[existing])])
    snippet = "<range start='192.168.122.10' end='192.168.122.100'/>"
    first = update(net, "add-first", "ip-dhcp-range", snippet)
    assert first.ips[0].ranges[0] == DhcpRange(ip("192.168.122.10"), ip("192.168.122.100"))
    last = update(net, "add-last", "ip-dhcp-range", snippet)
    assert last.ips[0].ranges[1].start == ip("192.168.122.10")


def test_dhcp_range_ipv6() -> None:
    net = update_nat(
        "add", "ip-dhcp-range", "<range start='2001:db8::100' end='2001:db8::1ff'/>", 1
    )
    assert net.ips[1].ranges == [DhcpRange(ip("2001:db8::100"), ip("2001:db8::1ff"))]


@pytest.mark.parametrize(
    ("snippet", "reason"),
    [
        ("<range start='10.0.0.10' end='10.0.0.100'/>", "not entirely within"),
        ("<range start='192.168.122.0' end='192.168.122.9'/>", "network address"),
        ("<range start='192.168.122.200' end='192.168.122.255'/>", "broadcast address"),
        ("<range start='192.168.122.50' end='192.168.122.40'/>", "reversed"),
        ("<range start='2001:db8::1' end='2001:db8::9'/>", "family"),
    ],
)
def test_dhcp_range_outside_or_invalid_is_refused(snippet: str, reason: str) -> None:
    net = Network(name="n", ips=[ipv4_def()])
    message = refused(net, "add", "ip-dhcp-range", snippet)
    assert message.startswith("ip-dhcp-range:")
    assert reason in message


def test_dhcp_range_larger_than_65535_addresses_is_refused() -> None:
    net = Network(name="n", ips=[ipv4_def("10.0.0.1", 8)])
    snippet = "<range start='10.0.0.2' end='10.1.0.2'/>"
    assert "too large" in refused(net, "add", "ip-dhcp-range", snippet)


def test_dhcp_range_duplicate_is_refused() -> None:
    message = refused_nat(
        "add", "ip-dhcp-range", "<range start='192.168.122.2' end='192.168.122.254'/>"
    )
    assert "192.168.122.2" in message and "already exists" in message


def test_dhcp_range_delete_and_missing() -> None:
    snippet = "<range start='192.168.122.2' end='192.168.122.254'/>"
    assert update_nat("delete", "ip-dhcp-range", snippet).ips[0].ranges == []
    message = refused_nat(
        "delete", "ip-dhcp-range", "<range start='192.168.122.2' end='192.168.122.9'/>"
    )
    assert "192.168.122.9" in message


def test_dhcp_range_cannot_be_modified() -> None:
    message = refused_nat(
        "modify", "ip-dhcp-range", "<range start='192.168.122.2' end='192.168.122.254'/>"
    )
    assert "cannot be modified" in message


# --- forward-interface -----------------------------------------------------------------


def test_forward_interface_add_first_becomes_the_dev() -> None:
    net = update_nat("add-first", "forward-interface", "<interface dev='eth47'/>")
    assert net.forward is not None
    assert [i.dev for i in net.forward.interfaces] == ["eth47", "eth1"]
    assert net.forward.dev == "eth47"


def test_forward_interface_add_last() -> None:
    net = update_nat("add", "forward-interface", "<interface dev='eth47'/>")
    assert net.forward is not None
    assert [i.dev for i in net.forward.interfaces] == ["eth1", "eth47"]
    assert net.forward.dev == "eth1"


def test_forward_interface_delete_last_clears_the_dev() -> None:
    net = update_nat("delete", "forward-interface", "<interface dev='eth1'/>")
    assert net.forward is not None
    assert net.forward.interfaces == [] and net.forward.dev is None


def test_forward_interface_refusals() -> None:
    assert "eth1" in refused_nat("add", "forward-interface", "<interface dev='eth1'/>")
    assert "eth47" in refused_nat("delete", "forward-interface", "<interface dev='eth47'/>")
    assert "cannot be modified" in refused_nat(
        "modify", "forward-interface", "<interface dev='eth1'/>"
    )
    assert "dev" in refused_nat("add", "forward-interface", "<interface/>")
    isolated = Network(name="iso")
    assert "isolated" in refused(isolated, "add", "forward-interface", "<interface dev='eth1'/>")


def test_forward_interface_in_use_cannot_be_deleted() -> None:
    net = nat_network()
    assert net.forward is not None
    net.forward.interfaces[0].connections = 2
    message = refused(net, "delete", "forward-interface", "<interface dev='eth1'/>")
    assert "in use" in message and "eth1" in message


# --- portgroup -------------------------------------------------------------------------


def test_portgroup_add_modify_delete() -> None:
    added = update_nat("add-first", "portgroup", "<portgroup name='carol'/>")
    assert [g.name for g in added.portgroups] == ["carol", "bob", "alice"]
    snippet = "<portgroup name='alice' trustGuestRxFilters='yes'/>"
    modified = update_nat("modify", "portgroup", snippet)
    assert modified.portgroups[1] == PortGroup("alice", trust_guest_rx_filters=True)
    deleted = update_nat("delete", "portgroup", "<portgroup name='bob'/>")
    assert [g.name for g in deleted.portgroups] == ["alice"]


def test_portgroup_refusals() -> None:
    assert "alice" in refused_nat("add", "portgroup", "<portgroup name='alice'/>")
    assert "carol" in refused_nat("modify", "portgroup", "<portgroup name='carol'/>")
    assert "carol" in refused_nat("delete", "portgroup", "<portgroup name='carol'/>")
    refused_nat("add", "portgroup", "<portgroup/>")


def test_portgroup_only_one_default() -> None:
    message = refused_nat("add", "portgroup", "<portgroup name='carol' default='yes'/>")
    assert "bob" in message and "default" in message
    message = refused_nat("modify", "portgroup", "<portgroup name='alice' default='yes'/>")
    assert "bob" in message
    # The default itself may stay the default, and may be deleted.
    kept = update_nat("modify", "portgroup", "<portgroup name='bob' default='yes'/>")
    assert kept.portgroups[0].default
    update_nat("delete", "portgroup", "<portgroup name='bob' default='yes'/>")


# --- dns-host --------------------------------------------------------------------------


def test_dns_host_add_first_and_last() -> None:
    snippet = "<host ip='f0:0d::f0:0d'><hostname>pudding</hostname></host>"
    first = update_nat("add-first", "dns-host", snippet)
    assert first.dns.hosts[0] == DnsHost(ip("f0:0d::f0:0d"), ["pudding"])
    last = update_nat("add", "dns-host", snippet)
    assert last.dns.hosts[-1].hostnames == ["pudding"]


def test_dns_host_add_may_repeat_a_hostname_but_not_an_address() -> None:
    net = update_nat(
        "add", "dns-host", "<host ip='192.168.122.3'><hostname>gateway</hostname></host>"
    )
    assert len(net.dns.hosts) == 3
    message = refused_nat(
        "add", "dns-host", "<host ip='192.168.122.2'><hostname>x</hostname></host>"
    )
    assert "192.168.122.2" in message


@pytest.mark.parametrize(
    "snippet",
    [
        "<host><hostname>gateway</hostname></host>",  # no ip
        "<host ip='192.168.122.9'/>",  # no hostname
        "<host ip='nonsense'><hostname>x</hostname></host>",
    ],
)
def test_dns_host_add_incomplete_is_refused(snippet: str) -> None:
    assert refused_nat("add", "dns-host", snippet).startswith("dns-host:")


def test_dns_host_delete_by_hostname_or_ip() -> None:
    by_name = update_nat("delete", "dns-host", "<host><hostname>router</hostname></host>")
    assert [h.hostnames for h in by_name.dns.hosts] == [["printer"]]
    by_ip = update_nat("delete", "dns-host", "<host ip='192.168.122.2'/>")
    assert [h.hostnames for h in by_ip.dns.hosts] == [["gateway", "router"]]


def test_dns_host_delete_refusals() -> None:
    message = refused_nat(
        "delete", "dns-host", "<host ip='192.168.122.1'><hostname>printer</hostname></host>"
    )
    assert "2 DNS host records match" in message
    assert "nothere" in refused_nat(
        "delete", "dns-host", "<host><hostname>nothere</hostname></host>"
    )
    assert "needs an 'ip'" in refused_nat("delete", "dns-host", "<host protocol='name'/>")
    refused_nat("delete", "dns-host", "<host ip='bad'/>")


def test_dns_host_cannot_be_modified() -> None:
    message = refused_nat(
        "modify", "dns-host", "<host ip='192.168.122.2'><hostname>x</hostname></host>"
    )
    assert "cannot be modified" in message


# --- dns-txt ---------------------------------------------------------------------------


def test_dns_txt_add_and_delete_by_name() -> None:
    added = update_nat("add-first", "dns-txt", "<txt name='snowman' value='water'/>")
    assert added.dns.txts[0] == DnsTxt("snowman", "water")
    deleted = update_nat("delete", "dns-txt", "<txt name='example'/>")
    assert deleted.dns.txts == []


def test_dns_txt_refusals() -> None:
    assert "example" in refused_nat("add", "dns-txt", "<txt name='example' value='other'/>")
    assert "snowman" in refused_nat("delete", "dns-txt", "<txt name='snowman'/>")
    assert "cannot be modified" in refused_nat(
        "modify", "dns-txt", "<txt name='example' value='v'/>"
    )
    refused_nat("add", "dns-txt", "<txt name='novalue'/>")
    refused_nat("delete", "dns-txt", "<txt value='v'/>")
    assert "'a b'" in refused_nat("delete", "dns-txt", "<txt name='a b'/>")


# --- dns-srv ---------------------------------------------------------------------------


def test_dns_srv_add() -> None:
    snippet = (
        "<srv service='name' protocol='tcp' domain='donkey' target='.' port='404' "
        "priority='10' weight='10'/>"
    )
    net = update_nat("add", "dns-srv", snippet)
    assert net.dns.srvs[-1] == DnsSrv("name", "tcp", "donkey", ".", 404, 10, 10)
    first = update_nat("add-first", "dns-srv", snippet)
    assert first.dns.srvs[0].domain == "donkey"


def test_dns_srv_add_matching_all_given_fields_is_refused() -> None:
    # domain is not given, so the new record matches an existing name/tcp record.
    message = refused_nat("add", "dns-srv", "<srv service='name' protocol='tcp'/>")
    assert "test-domain" in message


def test_dns_srv_delete_by_given_fields() -> None:
    net = update_nat("delete", "dns-srv", "<srv protocol='udp'/>")
    assert [s.protocol for s in net.dns.srvs] == ["tcp"]


def test_dns_srv_delete_refusals() -> None:
    assert "2 DNS SRV records match" in refused_nat("delete", "dns-srv", "<srv service='name'/>")
    assert "pudding" in refused_nat("delete", "dns-srv", "<srv protocol='pudding'/>")
    assert "invalid character" in refused_nat("delete", "dns-srv", "<srv service='na.me'/>")
    assert "without 'target'" in refused_nat("delete", "dns-srv", "<srv protocol='tcp' port='5'/>")
    assert "port" in refused_nat("delete", "dns-srv", "<srv protocol='tcp' target='.' port='0'/>")


def test_dns_srv_add_incomplete_is_refused() -> None:
    refused_nat("add", "dns-srv", "<srv protocol='tcp'/>")
    refused_nat("add", "dns-srv", "<srv service='x'/>")


def test_dns_srv_cannot_be_modified() -> None:
    assert "cannot be modified" in refused_nat(
        "modify", "dns-srv", "<srv service='name' protocol='tcp'/>"
    )


# --- the `virtnet update` command ------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from virtnet.face.cli import main

    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_update_prints_the_updated_definition(libvirt_corpus: Path, tmp_path: Path) -> None:
    tests = libvirt_corpus / "tests"
    source = str(tests / "networkxml2xmlin" / "nat-network.xml")
    snippet = "<host mac='00:16:3e:77:f0:0d' name='m.example.com' ip='192.168.122.12'/>"
    expected = (tests / "networkxml2xmlupdateout" / "nat-network-hosts.xml").read_text()
    assert run_cli("update", source, "add", "ip-dhcp-host", snippet) == (0, expected, "")
    # The same snippet from a file, with @path and (as virsh allows) a bare path.
    snippet_file = tmp_path / "host.xml"
    snippet_file.write_text(snippet)
    for reference in (f"@{snippet_file}", str(snippet_file)):
        assert run_cli("update", source, "add", "ip-dhcp-host", reference)[:2] == (0, expected)


def test_cli_update_parent_index(libvirt_corpus: Path) -> None:
    source = str(libvirt_corpus / "tests" / "networkxml2xmlin" / "dhcp6host-routed-network.xml")
    snippet = "<range start='2001:db8:ac10:fd01::100' end='2001:db8:ac10:fd01::1ff'/>"
    code, out, _ = run_cli("update", source, "add", "ip-dhcp-range", snippet, "--parent-index", "1")
    assert code == 0
    assert "<range start='2001:db8:ac10:fd01::100' end='2001:db8:ac10:fd01::1ff'/>" in out
    code, out, _ = run_cli("update", source, "add", "ip-dhcp-range", snippet, "--parent-index", "0")
    assert (code, out) == (1, "")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("add", "ip-dhcp-host", "<host mac='00:16:3e:77:e2:ed' name='x' ip='192.168.122.99'/>"),
         "error: ip-dhcp-host: "),
        (("add", "ip-dhcp-host", "@/nonexistent/host.xml"), "error: /nonexistent/host.xml: "),
        (("add", "ip", "<ip address='10.0.0.1'/>"), "error: ip: "),
        (("frobnicate", "dns-txt", "<txt name='a' value='b'/>"), "error: unknown update command"),
    ],
)
def test_cli_update_errors_are_one_line(
    libvirt_corpus: Path, args: tuple[str, ...], expected: str
) -> None:
    source = str(libvirt_corpus / "tests" / "networkxml2xmlin" / "nat-network.xml")
    code, out, err = run_cli("update", source, *args)
    assert (code, out) == (1, "")
    assert err.startswith(expected) and err.count("\n") == 1
