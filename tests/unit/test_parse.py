"""virtnet.spec.xml.parse: hardening, normalization as libvirt 9.0 does it, and precise errors."""

from __future__ import annotations

import ipaddress

import pytest

from virtnet.errors import XMLParseError
from virtnet.spec.model import (
    DNSMASQ_NAMESPACE,
    ForwardMode,
    LeaseUnit,
    MacTableManager,
    NativeVlanMode,
    Network,
    VirtualPortType,
)
from virtnet.spec.xml.parse import MAX_DOCUMENT_BYTES, parse_fragment, parse_network
from virtnet.spec.xml.parse_dns import parse_dns_host, parse_dns_srv, parse_dns_txt
from virtnet.spec.xml.parse_forward import parse_forward_interface, parse_portgroup
from virtnet.spec.xml.parse_ip import parse_dhcp_host, parse_dhcp_range, parse_ip

BASE = """<network>
  <name>unit</name>
  <uuid>81ff0d90-c91e-6742-64da-4a736edb9a9b</uuid>
  <forward mode='nat'/>
  <bridge name='vnt0'/>
  <ip address='10.1.0.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.1.0.10' end='10.1.0.20'/>
      <host mac='52:54:00:00:00:01' name='one' ip='10.1.0.11'/>
      <host mac='52:54:00:00:00:02' name='two' ip='10.1.0.12'/>
    </dhcp>
  </ip>
</network>
"""


def net_with(extra: str = "", replace: tuple[str, str] | None = None) -> Network:
    text = BASE
    if replace is not None:
        assert replace[0] in text, replace[0]
        text = text.replace(replace[0], replace[1], 1)
    text = text.replace("</network>", extra + "</network>")
    return parse_network(text, source="unit.xml")


def refused(extra: str = "", replace: tuple[str, str] | None = None) -> XMLParseError:
    with pytest.raises(XMLParseError) as info:
        net_with(extra, replace)
    return info.value


# --- normalization ----------------------------------------------------------------------


def test_base_document_parses() -> None:
    net = net_with()
    assert net.name == "unit"
    assert net.forward_mode is ForwardMode.NAT
    assert net.bridge is not None and net.bridge.name == "vnt0"
    assert net.bridge.stp is True and net.bridge.delay == 0
    assert [h.name for h in net.ips[0].hosts] == ["one", "two"]


@pytest.mark.parametrize(
    "written",
    ["81FF0D90-C91E-6742-64DA-4A736EDB9A9B", "81ff0d90c91e674264da4a736edb9a9b",
     "  81 ff 0d 90 c9 1e 67 42 64 da 4a 73 6e db 9a 9b  ",
     "81ff-0d90-c91e-6742-64da-4a73-6edb-9a9b"],
)
def test_uuid_is_canonical(written: str) -> None:
    net = net_with(replace=("81ff0d90-c91e-6742-64da-4a736edb9a9b", written))
    assert net.uuid == "81ff0d90-c91e-6742-64da-4a736edb9a9b"


def test_missing_uuid_stays_none() -> None:
    net = net_with(replace=("  <uuid>81ff0d90-c91e-6742-64da-4a736edb9a9b</uuid>\n", ""))
    assert net.uuid is None


def test_bridge_mac_is_lowercase_two_digit() -> None:
    assert net_with("<mac address='2:54:0:AB:cd:E'/>").mac == "02:54:00:ab:cd:0e"


def test_dhcp_host_mac_is_kept_as_written() -> None:
    # libvirt keeps the host MAC string: it reaches dnsmasq and net-dumpxml unchanged
    net = net_with(replace=("52:54:00:00:00:01", "52:54:00:AA:BB:01"))
    assert net.ips[0].hosts[0].mac == "52:54:00:AA:BB:01"


def test_addresses_are_ip_objects() -> None:
    net = net_with("<ip family='ipv6' address='2001:DB8:0:0::1' prefix='64'/>")
    assert net.ips[1].address == ipaddress.IPv6Address("2001:db8::1")
    assert net.ips[0].netmask == ipaddress.IPv4Address("255.255.255.0")


def test_prefix_zero_means_not_given() -> None:
    net = net_with(replace=("netmask='255.255.255.0'", "prefix='0'"))
    assert net.ips[0].prefix is None
    assert net.ips[0].effective_prefix == 8  # classful default, as libvirt


def test_forward_dev_is_first_pool_interface() -> None:
    net = net_with(replace=("<forward mode='nat'/>", "<forward mode='nat' dev='eth1'/>"))
    assert net.forward is not None
    assert net.forward.dev == "eth1"
    assert [i.dev for i in net.forward.interfaces] == ["eth1"]


def test_forward_dev_and_matching_interface_list_once() -> None:
    net = net_with(replace=(
        "<forward mode='nat'/>",
        "<forward mode='bridge' dev='eth1'><interface dev='eth1'/><interface dev='eth2'/>"
        "</forward>",
    ))
    assert [i.dev for i in net.forward.interfaces] == ["eth1", "eth2"]


def test_empty_forward_means_nat() -> None:
    net = net_with(replace=("<forward mode='nat'/>", "<forward/>"))
    assert net.forward is not None and net.forward.mode is ForwardMode.NAT


def test_forward_mode_none_is_isolated() -> None:
    net = net_with(replace=("<forward mode='nat'/>", "<forward mode='none'/>"))
    assert net.forward is None and net.forward_mode is ForwardMode.NONE


def test_hostdev_pool_and_driver() -> None:
    net = net_with(replace=(
        "<forward mode='nat'/>",
        "<forward mode='hostdev' managed='YES'><driver name='vfio'/>"
        "<address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x1'/>"
        "<address type='pci' domain='0' bus='010' slot='2' function='7'/></forward>",
    ))
    forward = net.forward
    assert forward.managed is True
    assert forward.driver is not None and forward.driver.value == "vfio"
    assert [str(a) for a in forward.addresses] == ["0000:03:10.1", "0000:08:02.7"]


def test_nat_range_and_ports() -> None:
    net = net_with(replace=(
        "<forward mode='nat'/>",
        "<forward mode='nat'><nat ipv6='yes'><address start='1.2.3.4' end='1.2.3.10'/>"
        "<port start='500' end='1000'/></nat></forward>",
    ))
    nat = net.forward.nat
    assert (str(nat.address_start), str(nat.address_end)) == ("1.2.3.4", "1.2.3.10")
    assert (nat.port_start, nat.port_end, nat.ipv6) == (500, 1000, True)


def test_bridge_attributes() -> None:
    net = net_with(replace=("<bridge name='vnt0'/>", "<bridge name='vnt0' stp='off' delay='7' "
                            "macTableManager='libvirt' zone='trusted'/>"))
    bridge = net.bridge
    assert (bridge.stp, bridge.delay, bridge.zone) == (False, 7, "trusted")
    assert bridge.mac_table_manager is MacTableManager.LIBVIRT


def test_empty_bridge_name_is_not_given() -> None:
    # libvirt reads it as an XPath string: empty is absent
    assert net_with(replace=("<bridge name='vnt0'/>", "<bridge name=''/>")).bridge.name is None


def test_leases() -> None:
    net = net_with(replace=(
        "<range start='10.1.0.10' end='10.1.0.20'/>",
        "<range start='10.1.0.10' end='10.1.0.20'><lease expiry='0'/></range>"
        "<range start='10.1.0.30' end='10.1.0.40'><lease expiry='2' unit='hours'/></range>",
    ))
    first, second = net.ips[0].ranges
    assert first.lease.expiry == 0 and first.lease.seconds is None
    assert second.lease.unit is LeaseUnit.HOURS and second.lease.seconds == 7200


def test_dns_records_and_newer_attributes() -> None:
    net = net_with(
        "<domain name='example.com' localOnly='yes' register='yes'/>"
        "<dns enable='yes' forwardPlainNames='no'>"
        "<forwarder addr='8.8.8.8' port='5353'/><forwarder domain='lan'/>"
        "<txt name='t' value='v w'/>"
        "<srv service='ldap' protocol='tcp' domain='d' target='t' port='389' priority='1' "
        "weight='2'/>"
        "<host ip='10.1.0.5'><hostname>a</hostname><hostname/><hostname>b</hostname></host>"
        "</dns>"
    )
    assert net.domain.register is True and net.domain.local_only is True
    dns = net.dns
    assert (dns.enable, dns.forward_plain_names) == (True, False)
    assert dns.forwarders[0].port == 5353 and dns.forwarders[1].domain == "lan"
    assert dns.txts[0].value == "v w"
    assert (dns.srvs[0].port, dns.srvs[0].priority, dns.srvs[0].weight) == (389, 1, 2)
    assert dns.hosts[0].hostnames == ["a", "b"]  # an empty <hostname/> is skipped


def test_open_mode_without_ip_is_not_a_parse_error() -> None:
    # newer libvirt allows it; whether 9.0's rule applies is virtnet.spec.validate's business
    net = parse_network("<network><name>o</name><forward mode='open'/></network>")
    assert net.forward_mode is ForwardMode.OPEN and not net.ips


def test_vlan_portgroup_virtualport() -> None:
    net = net_with(
        "<vlan trunk='yes'><tag id='42' nativeMode='untagged'/><tag id='47'/></vlan>"
        "<virtualport type='openvswitch'><parameters interfaceid="
        "'09B11C53-8B5C-4EEB-8F00-D84EAA0AAA4F' profileid='p'/></virtualport>"
        "<portgroup name='pg' default='yes' trustGuestRxFilters='no'>"
        "<bandwidth><inbound average='1000' peak='2000' burst='512'/></bandwidth></portgroup>"
    )
    assert net.vlan.trunk is True
    assert [(t.id, t.native_mode) for t in net.vlan.tags] == [
        (42, NativeVlanMode.UNTAGGED), (47, None)]
    assert net.virtualport.type is VirtualPortType.OPENVSWITCH
    assert net.virtualport.interface_id == "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"
    group = net.portgroups[0]
    assert group.default is True and group.trust_guest_rx_filters is False
    assert group.bandwidth.inbound.average == 1000


def test_routes() -> None:
    net = net_with(
        "<route address='192.168.222.0' netmask='255.255.255.0' gateway='10.1.0.2'/>"
        "<route family='ipv6' address='2001:db8:ac10:fc00::' prefix='64' "
        "gateway='2001:db8::1' metric='5'/>"
    )
    assert net.routes[0].effective_prefix == 24
    assert net.routes[1].metric == 5 and net.routes[1].prefix == 64


def test_dnsmasq_options() -> None:
    text = BASE.replace("<network>", f"<network xmlns:dnsmasq='{DNSMASQ_NAMESPACE}'>").replace(
        "</network>", "<dnsmasq:options><dnsmasq:option value='foo=bar'/>"
        "<dnsmasq:option value='x y'/></dnsmasq:options></network>")
    assert parse_network(text).dnsmasq_options == ["foo=bar", "x y"]


def test_metadata_kept_like_libvirt() -> None:
    net = parse_network(
        "<network xmlns:o='urn:o'><name>m</name><metadata>text<plain/>"
        "<a:x xmlns:a='urn:a'>1</a:x><a:y xmlns:a='urn:a'/><o:z/></metadata></network>"
    )
    # only namespaced elements, one per namespace; the outer declaration moves onto it
    assert net.metadata == (
        '<metadata xmlns:o="urn:o">\n  <a:x xmlns:a="urn:a">1</a:x>\n  <o:z/>\n</metadata>'
    )


def test_unknown_elements_are_ignored_like_libvirt() -> None:
    net = net_with("<futureElement foo='bar'/>")
    assert net.name == "unit"


# --- hardening --------------------------------------------------------------------------


def test_doctype_refused_even_without_entities() -> None:
    with pytest.raises(XMLParseError, match="DOCTYPE"):
        parse_network("<!DOCTYPE network>\n<network><name>x</name></network>")


def test_doctype_text_inside_comment_is_harmless() -> None:
    net = parse_network("<!-- <!DOCTYPE x> -->\n<network><name>x</name></network>")
    assert net.name == "x"


def test_parameter_entity_refused() -> None:
    doc = ("<?xml version='1.0'?>\n<!DOCTYPE n [<!ENTITY % p SYSTEM 'http://127.0.0.1:9/x'>"
           " %p;]>\n<network><name>x</name></network>")
    with pytest.raises(XMLParseError, match="DOCTYPE"):
        parse_network(doc)


def test_size_limit_checked_before_parsing() -> None:
    big = b"<network><name>x</name>" + b" " * MAX_DOCUMENT_BYTES + b"</network>"
    with pytest.raises(XMLParseError, match="too large"):
        parse_network(big)


def test_bom_and_str_input_accepted() -> None:
    assert parse_network(b"\xef\xbb\xbf" + BASE.encode()).name == "unit"
    assert parse_network(BASE.replace("unit", "ünït")).name == "ünït"


def test_fragment_is_hardened_too() -> None:
    with pytest.raises(XMLParseError, match="DOCTYPE"):
        parse_fragment("<!DOCTYPE h [<!ENTITY e 'x'>]><host ip='&e;'/>", "snippet")
    assert parse_fragment("<host ip='1.2.3.4'/>", "snippet").get("ip") == "1.2.3.4"


# --- errors: where and what -------------------------------------------------------------


def test_error_carries_source_line_path_value() -> None:
    error = refused(replace=("name='two'", "name='-two'"))
    assert error.source == "unit.xml"
    assert error.line == 10
    assert error.path == "/network/ip[1]/dhcp/host[2]/@name"
    assert "'-two'" in error.message
    assert str(error).startswith("unit.xml:10: /network/ip[1]/dhcp/host[2]/@name: ")


ERROR_CASES = [
    # (id, replace, extra, path, fragment of the message)
    ("no-name", ("<name>unit</name>", ""), "", "/network/name", "name"),
    ("slash-in-name", ("<name>unit</name>", "<name>a/b</name>"), "", "/network/name", "a/b"),
    ("ipv6-yesno", ("<network>", "<network ipv6='true'>"), "", "/network/@ipv6", "'true'"),
    ("trust-yesno", ("<network>", "<network trustGuestRxFilters='1'>"), "",
     "/network/@trustGuestRxFilters", "'1'"),
    ("stp", ("<bridge name='vnt0'/>", "<bridge stp='yes'/>"), "", "/network/bridge/@stp", "yes"),
    ("delay-text", ("<bridge name='vnt0'/>", "<bridge delay='soon'/>"), "",
     "/network/bridge/@delay", "soon"),
    ("mac-table-default", ("<bridge name='vnt0'/>", "<bridge macTableManager='default'/>"), "",
     "/network/bridge/@macTableManager", "'default'"),
    ("mac-syntax", None, "<mac address='52-54-00-00-00-01'/>", "/network/mac/@address",
     "52-54-00-00-00-01"),
    ("mtu", None, "<mtu size='big'/>", "/network/mtu/@size", "big"),
    ("duplicate-bridge", None, "<bridge name='x'/>", "/network/bridge", "only once"),
    ("ip-no-address", ("address='10.1.0.1' ", ""), "", "/network/ip[1]", "address"),
    ("ip-bad-address", ("address='10.1.0.1'", "address='10.1.0'"), "",
     "/network/ip[1]/@address", "10.1.0"),
    ("ip-family", None, "<ip family='ipv5' address='1.2.3.4'/>", "/network/ip[2]/@family",
     "ipv5"),
    ("ip-v6-without-family", None, "<ip address='2001:db8::1'/>", "/network/ip[2]/@address",
     "2001:db8::1"),
    ("ip-family-mismatch", None, "<ip family='ipv6' address='1.2.3.4'/>",
     "/network/ip[2]/@address", "1.2.3.4"),
    ("prefix-and-netmask", ("netmask='255.255.255.0'", "netmask='255.255.255.0' prefix='24'"),
     "", "/network/ip[1]", "both"),
    ("netmask-noncontiguous", ("255.255.255.0", "255.0.255.0"), "", "/network/ip[1]/@netmask",
     "255.0.255.0"),
    ("ipv6-netmask", None, "<ip family='ipv6' address='2001:db8::1' netmask='255.0.0.0'/>",
     "/network/ip[2]/@netmask", "255.0.0.0"),
    ("ipv6-prefix", None, "<ip family='ipv6' address='2001:db8::1' prefix='129'/>",
     "/network/ip[2]/@prefix", "129"),
    ("localptr", ("netmask='255.255.255.0'", "netmask='255.255.255.0' localPtr='on'"), "",
     "/network/ip[1]/@localPtr", "'on'"),
    ("range-missing-end", ("end='10.1.0.20'", ""), "", "/network/ip[1]/dhcp/range[1]", "end"),
    ("range-reversed", ("start='10.1.0.10' end='10.1.0.20'", "start='10.1.0.30' end='10.1.0.20'"),
     "", "/network/ip[1]/dhcp/range[1]", "10.1.0.30"),
    ("lease-too-short", ("<range start='10.1.0.10' end='10.1.0.20'/>",
                         "<range start='10.1.0.10' end='10.1.0.20'><lease expiry='60' "
                         "unit='seconds'/></range>"), "",
     "/network/ip[1]/dhcp/range[1]/lease/@expiry", "'60'"),
    ("lease-unit", ("<range start='10.1.0.10' end='10.1.0.20'/>",
                    "<range start='10.1.0.10' end='10.1.0.20'><lease expiry='6' unit='days'/>"
                    "</range>"), "", "/network/ip[1]/dhcp/range[1]/lease/@unit", "'days'"),
    ("host-multicast-mac", ("52:54:00:00:00:02", "33:33:00:00:00:02"), "",
     "/network/ip[1]/dhcp/host[2]/@mac", "33:33:00:00:00:02"),
    ("host-no-ip", (" ip='10.1.0.12'", ""), "", "/network/ip[1]/dhcp/host[2]", "'ip'"),
    ("host-no-mac-no-name", ("mac='52:54:00:00:00:02' name='two' ", ""), "",
     "/network/ip[1]/dhcp/host[2]", "'mac' or a 'name'"),
    ("host-ipv6-mac", None, "<ip family='ipv6' address='2001:db8::1' prefix='64'><dhcp>"
     "<host mac='52:54:00:00:00:09' name='h' ip='2001:db8::9'/></dhcp></ip>",
     "/network/ip[2]/dhcp/host[1]/@mac", "52:54:00:00:00:09"),
    ("host-id-chars", None, "<ip family='ipv6' address='2001:db8::1' prefix='64'><dhcp>"
     "<host id='0:1:zz' ip='2001:db8::9'/></dhcp></ip>", "/network/ip[2]/dhcp/host[1]/@id",
     "0:1:zz"),
    ("tftp-in-ipv6", None, "<ip family='ipv6' address='2001:db8::1'><tftp root='/t'/></ip>",
     "/network/ip[2]/tftp", "IPv4"),
    ("bootp-no-file", ("</dhcp>", "<bootp server='10.1.0.1'/></dhcp>"), "",
     "/network/ip[1]/dhcp/bootp", "'file'"),
    ("forward-mode", ("mode='nat'", "mode='NAT'"), "", "/network/forward/@mode", "'NAT'"),
    ("forward-dev-mismatch", ("<forward mode='nat'/>", "<forward dev='eth0'><interface "
                              "dev='eth1'/></forward>"), "",
     "/network/forward/interface[1]/@dev", "eth1"),
    ("forward-interface-no-dev", ("<forward mode='nat'/>", "<forward mode='bridge'><interface/>"
                                  "</forward>"), "", "/network/forward/interface[1]", "dev"),
    ("forward-dev-with-pf", ("<forward mode='nat'/>", "<forward mode='passthrough' dev='e'>"
                             "<pf dev='p'/></forward>"), "", "/network/forward/@dev", "'e'"),
    ("two-pfs", ("<forward mode='nat'/>", "<forward mode='passthrough'><pf dev='p'/>"
                 "<pf dev='q'/></forward>"), "", "/network/forward/pf[2]", "one <pf>"),
    ("nat-in-route-mode", ("<forward mode='nat'/>", "<forward mode='route'><nat/></forward>"),
     "", "/network/forward/nat", "route"),
    ("nat-port-range", ("<forward mode='nat'/>", "<forward><nat><port start='1000' end='10'/>"
                        "</nat></forward>"), "", "/network/forward/nat/port", "'10'"),
    ("nat-port-70000", ("<forward mode='nat'/>", "<forward><nat><port start='1' end='70000'/>"
                        "</nat></forward>"), "", "/network/forward/nat/port/@end", "70000"),
    ("nat-ipv6-address", ("<forward mode='nat'/>", "<forward><nat><address start='::1' "
                          "end='::2'/></nat></forward>"), "",
     "/network/forward/nat/address/@start", "::1"),
    ("pci-slot", ("<forward mode='nat'/>", "<forward mode='hostdev'><address type='pci' "
                  "bus='1' slot='0x20'/></forward>"), "", "/network/forward/address[1]/@slot",
     "0x20"),
    ("pci-type", ("<forward mode='nat'/>", "<forward mode='hostdev'><address type='usb' "
                  "bus='1'/></forward>"), "", "/network/forward/address[1]/@type", "usb"),
    ("driver-name", ("<forward mode='nat'/>", "<forward mode='hostdev'><driver name='xen'/>"
                     "</forward>"), "", "/network/forward/driver/@name", "xen"),
    ("dns-enable", None, "<dns enable='off'/>", "/network/dns/@enable", "'off'"),
    ("dns-disabled-with-records", None, "<dns enable='no'><txt name='a' value='b'/></dns>",
     "/network/dns/@enable", "enable='no'"),
    ("txt-name-space", None, "<dns><txt name='a b' value='c'/></dns>",
     "/network/dns/txt[1]/@name", "a b"),
    ("srv-port-without-target", None, "<dns><srv service='s' protocol='tcp' port='5'/></dns>",
     "/network/dns/srv[1]/@port", "target"),
    ("srv-protocol-chars", None, "<dns><srv service='s' protocol='t.cp'/></dns>",
     "/network/dns/srv[1]/@protocol", "t.cp"),
    ("srv-priority", None, "<dns><srv service='s' protocol='tcp' target='t' priority='65536'/>"
     "</dns>", "/network/dns/srv[1]/@priority", "65536"),
    ("dns-host-no-hostname", None, "<dns><host ip='10.1.0.3'/></dns>", "/network/dns/host[1]",
     "hostname"),
    ("forwarder-empty", None, "<dns><forwarder/></dns>", "/network/dns/forwarder[1]", "addr"),
    ("forwarder-port", None, "<dns><forwarder addr='1.1.1.1' port='0'/></dns>",
     "/network/dns/forwarder[1]/@port", "'0'"),
    ("vlan-no-tag", None, "<vlan/>", "/network/vlan", "tag"),
    ("vlan-id", None, "<vlan><tag id='4096'/></vlan>", "/network/vlan/tag[1]/@id", "4096"),
    ("vlan-two-natives", None, "<vlan trunk='yes'><tag id='1' nativeMode='tagged'/>"
     "<tag id='2' nativeMode='untagged'/></vlan>", "/network/vlan/tag[2]/@nativeMode",
     "duplicate"),
    ("vlan-trunk-no", None, "<vlan trunk='no'><tag id='1'/><tag id='2'/></vlan>",
     "/network/vlan/@trunk", "'no'"),
    ("bandwidth-floor", None, "<bandwidth><inbound average='1' floor='2'/></bandwidth>",
     "/network/bandwidth/inbound/@floor", "floor"),
    ("bandwidth-peak-only", None, "<bandwidth><outbound peak='2'/></bandwidth>",
     "/network/bandwidth/outbound", "average"),
    ("bandwidth-number", None, "<bandwidth><inbound average='1k'/></bandwidth>",
     "/network/bandwidth/inbound/@average", "1k"),
    ("virtualport-untyped", None, "<virtualport/>", "/network/virtualport", "type"),
    ("virtualport-type", None, "<virtualport type='vxlan'/>", "/network/virtualport/@type",
     "vxlan"),
    ("virtualport-extra", None, "<virtualport type='802.1Qbh'><parameters managerid='1'/>"
     "</virtualport>", "/network/virtualport/parameters/@managerid", "managerid"),
    ("virtualport-managerid", None, "<virtualport type='802.1Qbg'><parameters "
     "managerid='256'/></virtualport>", "/network/virtualport/parameters/@managerid", "256"),
    ("portgroup-no-name", None, "<portgroup/>", "/network/portgroup[1]", "name"),
    ("portgroup-default", None, "<portgroup name='p' default='maybe'/>",
     "/network/portgroup[1]/@default", "maybe"),
    ("route-not-network", None, "<route address='192.168.1.5' prefix='24' gateway='10.1.0.2'/>",
     "/network/route[1]/@address", "192.168.1.5"),
    ("route-metric-zero", None, "<route address='192.168.1.0' prefix='24' gateway='10.1.0.2' "
     "metric='0'/>", "/network/route[1]/@metric", "'0'"),
    ("route-family-gateway", None, "<route address='192.168.1.0' prefix='24' "
     "gateway='2001:db8::1'/>", "/network/route[1]/@gateway", "2001:db8::1"),
    ("port-isolated", None, "<port isolated='true'/>", "/network/port/@isolated", "'true'"),
    ("domain-no-name", None, "<domain localOnly='yes'/>", "/network/domain", "name"),
    ("title-newline", None, "<title>a\nb</title>", "/network/title", "newline"),
    ("dnsmasq-option-no-value", ("<network>", f"<network xmlns:d='{DNSMASQ_NAMESPACE}'>"),
     "<d:options><d:option/></d:options>", "/network/dnsmasq:options[1]/dnsmasq:option[1]",
     "value"),
]


@pytest.mark.parametrize(
    ("replace", "extra", "path", "fragment"),
    [pytest.param(r, e, p, f, id=i) for i, r, e, p, f in ERROR_CASES],
)
def test_refused_with_path_and_value(
    replace: tuple[str, str] | None, extra: str, path: str, fragment: str
) -> None:
    error = refused(extra, replace)
    assert error.path == path, str(error)
    assert fragment in error.message, str(error)
    assert error.line is not None and error.source == "unit.xml"


def test_malformed_xml_reports_line() -> None:
    with pytest.raises(XMLParseError) as info:
        parse_network("<network>\n<name>x</name>\n<ip>\n</network>", source="m.xml")
    assert info.value.line == 4 and "malformed XML" in info.value.message


# --- the per-element parsers net-update uses --------------------------------------------


def test_parse_dhcp_host_fragment() -> None:
    el = parse_fragment("<host mac='52:54:00:00:00:07' name='x' ip='10.1.0.7'/>", "cmd")
    host = parse_dhcp_host(el, "/host", ipv6=False)
    assert (host.mac, host.name, str(host.ip)) == ("52:54:00:00:00:07", "x", "10.1.0.7")
    with pytest.raises(XMLParseError, match="IPv6"):
        parse_dhcp_host(el, "/host", ipv6=True)


def test_parse_dhcp_host_partial_for_delete() -> None:
    el = parse_fragment("<host mac='52:54:00:00:00:07'/>", "cmd")
    with pytest.raises(XMLParseError, match="'ip'"):
        parse_dhcp_host(el, "/host", ipv6=False)
    assert parse_dhcp_host(el, "/host", ipv6=False, partial=True).ip is None


def test_parse_dhcp_range_fragment() -> None:
    rng = parse_dhcp_range(parse_fragment("<range start='10.0.0.2' end='10.0.0.9'/>", "c"), "/r")
    assert (str(rng.start), str(rng.end)) == ("10.0.0.2", "10.0.0.9")
    with pytest.raises(XMLParseError, match="different"):
        parse_dhcp_range(parse_fragment("<range start='10.0.0.2' end='::9'/>", "c"), "/r")


def test_parse_dns_fragments() -> None:
    host = parse_dns_host(parse_fragment("<host ip='10.0.0.2'><hostname>h</hostname></host>",
                                         "c"), "/h")
    assert host.hostnames == ["h"]
    assert parse_dns_host(parse_fragment("<host><hostname>h</hostname></host>", "c"), "/h",
                          partial=True).ip is None
    txt = parse_dns_txt(parse_fragment("<txt name='n' value='v'/>", "c"), "/t")
    assert (txt.name, txt.value) == ("n", "v")
    srv = parse_dns_srv(parse_fragment("<srv service='s' protocol='udp'/>", "c"), "/s")
    assert (srv.service, srv.protocol, srv.port) == ("s", "udp", None)


def test_parse_forward_interface_portgroup_ip_fragments() -> None:
    assert parse_forward_interface(parse_fragment("<interface dev='eth9'/>", "c"), "/i").dev == \
        "eth9"
    group = parse_portgroup(parse_fragment(
        "<portgroup name='g'><vlan><tag id='3'/></vlan></portgroup>", "c"), "/p")
    assert group.name == "g" and group.vlan.tags[0].id == 3
    ip = parse_ip(parse_fragment("<ip address='10.9.0.1' prefix='16'/>", "c"), "/ip")
    assert str(ip.network) == "10.9.0.0/16"
    with pytest.raises(XMLParseError) as info:
        parse_ip(parse_fragment("<ip address='10.9.0.1' prefix='33'/>", "c"), "/ip[3]")
    assert info.value.path == "/ip[3]/@prefix"
