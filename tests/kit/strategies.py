"""Hypothesis strategies that write network definitions (libvirt Network XML text).

- ``network_xml()``: varied definitions that are valid by construction for libvirt 9.0 and for
  virtnet: every forward mode, several <ip>s with DHCP ranges, hosts and leases, DNS records,
  routes, portgroups, bandwidth, vlans, virtualports, mtu, domain, dnsmasq options...
- ``broken_network_xml()``: a valid definition with exactly one deliberate defect, named, so a
  test can say which rule must refuse it.

Both build an ``xml.etree.ElementTree`` tree first (so defects are applied to structure, not to
text) and return the serialized document. Differential tests against libvirt 9.0 use the
defaults; ``newer_features=True`` adds what only newer libvirt knows (title, description,
<domain register>, forwarder ports, open networks without an address), and
``pci_pools=True`` adds hostdev pools of PCI addresses (libvirt checks those against the
host's sysfs at define time).
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from virtnet.spec.model import DNSMASQ_NAMESPACE

ET.register_namespace("dnsmasq", DNSMASQ_NAMESPACE)

OWN_BRIDGE_MODES = ("none", "nat", "route", "open")
DIRECT_MODES = ("private", "vepa", "passthrough")
ALL_MODES = OWN_BRIDGE_MODES + ("hostbridge", "macvtap-bridge") + DIRECT_MODES + ("hostdev",)

Draw = Callable[[st.SearchStrategy], object]

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_LABEL_CHARS = _LOWER + "0123456789"


def _sub(parent: ET.Element, tag: str, **attrs: object) -> ET.Element:
    """A child element with the given attributes (None values left out, in order)."""
    return ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})


def _label(draw: Draw, max_size: int = 8) -> str:
    """A DNS label: a letter then letters and digits."""
    head = draw(st.sampled_from(_LOWER))
    tail = draw(st.text(_LABEL_CHARS, max_size=max_size - 1))
    return str(head) + str(tail)


def _dns_name(draw: Draw) -> str:
    count = int(draw(st.integers(1, 3)))  # type: ignore[arg-type]
    return ".".join(_label(draw) for _ in range(count))


def _ifname(draw: Draw, prefix: str) -> str:
    return prefix + str(draw(st.integers(0, 99)))


def _unicast_mac(draw: Draw) -> str:
    tail = draw(st.lists(st.integers(0, 255), min_size=3, max_size=3))
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)  # type: ignore[union-attr]


def _uuid(draw: Draw) -> str:
    return str(draw(st.uuids()))


def _maybe(draw: Draw, probability_true: int = 50) -> bool:
    """True with roughly ``probability_true`` percent. A narrow integers() range comes out
    near its low end far too often, so take a wide one modulo 100; it still shrinks to 0, i.e.
    to False and the plainest definition."""
    return bool(int(draw(st.integers(0, 2**32 - 1))) % 100 >= 100 - probability_true)  # type: ignore[arg-type]


# --- shared sub-elements ----------------------------------------------------------------


def _bandwidth(draw: Draw, parent: ET.Element) -> None:
    element = _sub(parent, "bandwidth")
    directions = draw(st.sampled_from([("inbound",), ("outbound",), ("inbound", "outbound")]))
    for direction in directions:  # type: ignore[union-attr]
        average = draw(st.integers(1, 10**6))
        peak = draw(st.one_of(st.none(), st.integers(1, 10**7)))
        burst = draw(st.one_of(st.none(), st.integers(1, 10**6)))
        _sub(element, direction, average=average, peak=peak, burst=burst)


def _vlan(draw: Draw, parent: ET.Element) -> None:
    ids = draw(st.lists(st.integers(0, 4095), min_size=1, max_size=3, unique=True))
    trunk = "yes" if len(ids) > 1 else draw(st.sampled_from([None, "yes", "no"]))  # type: ignore[arg-type]
    element = _sub(parent, "vlan", trunk=trunk)
    native_at = draw(st.integers(-1, len(ids) - 1)) if trunk == "yes" else -1  # type: ignore[arg-type]
    for index, tag_id in enumerate(ids):  # type: ignore[arg-type]
        mode = draw(st.sampled_from(["tagged", "untagged"])) if index == native_at else None
        _sub(element, "tag", id=tag_id, nativeMode=mode)


def _virtualport(draw: Draw, parent: ET.Element, kind: str | None) -> None:
    element = _sub(parent, "virtualport", type=kind)
    if kind == "802.1Qbg":
        params = {
            "managerid": draw(st.one_of(st.none(), st.integers(0, 255))),
            "typeid": draw(st.one_of(st.none(), st.integers(0, 0xFFFFFF))),
            "typeidversion": draw(st.one_of(st.none(), st.integers(0, 255))),
            "instanceid": _uuid(draw) if _maybe(draw, 30) else None,
        }
    elif kind == "802.1Qbh":
        params = {"profileid": _label(draw, 20)}
    elif kind == "openvswitch":
        params = {
            "interfaceid": _uuid(draw) if _maybe(draw, 30) else None,
            "profileid": _label(draw, 20) if _maybe(draw, 30) else None,
        }
    else:
        params = {}
    if any(v is not None for v in params.values()):
        _sub(element, "parameters", **params)


def _portgroups(draw: Draw, root: ET.Element, bandwidth: bool, vlan: bool,
                vport_kinds: list[str | None]) -> None:
    names = draw(st.lists(st.sampled_from(["alice", "bob", "carol", "dave", "eve"]),
                          max_size=3, unique=True))
    default_at = draw(st.integers(-1, len(names) - 1))  # type: ignore[arg-type]
    for index, name in enumerate(names):  # type: ignore[arg-type]
        group = _sub(root, "portgroup", name=name,
                     default="yes" if index == default_at else None,
                     trustGuestRxFilters=draw(st.sampled_from([None, "yes", "no"])))
        if vport_kinds and _maybe(draw, 30):
            kind = draw(st.sampled_from(vport_kinds))
            _virtualport(draw, group, kind)  # type: ignore[arg-type]
        if bandwidth and _maybe(draw, 30):
            _bandwidth(draw, group)
        if vlan and _maybe(draw, 30):
            _vlan(draw, group)


# --- ip, dhcp, routes -------------------------------------------------------------------


def _lease(draw: Draw, parent: ET.Element) -> None:
    unit = draw(st.sampled_from([None, "seconds", "minutes", "hours"]))
    minimum = {None: 2, "minutes": 2, "seconds": 120, "hours": 1}[unit]  # type: ignore[index]
    expiry = draw(st.one_of(st.just(0), st.integers(minimum, minimum * 1000)))
    _sub(parent, "lease", expiry=expiry, unit=unit)


def _ipv4(draw: Draw, root: ET.Element, second_octet: int, dhcp: bool,
          subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
    form = draw(st.sampled_from(["prefix", "netmask", "classful"]))
    if form == "classful":
        subnet = ipaddress.IPv4Network(f"192.168.{second_octet}.0/24")
    else:
        prefix = draw(st.sampled_from([16, 20, 24, 28]))
        subnet = ipaddress.IPv4Network(f"10.{second_octet}.0.0/{prefix}")
    subnets.append(subnet)
    hosts = subnet.num_addresses
    address = subnet.network_address + 1
    attrs: dict[str, object] = {"address": address}
    if form == "prefix":
        attrs["prefix"] = subnet.prefixlen
    elif form == "netmask":
        attrs["netmask"] = subnet.netmask
    if _maybe(draw, 20):
        attrs["localPtr"] = "yes" if subnet.prefixlen % 8 == 0 else "no"
    element = _sub(root, "ip", **attrs)
    if dhcp and _maybe(draw, 20):
        _sub(element, "tftp", root="/srv/tftp")
    if not dhcp:
        return
    dhcp_element = _sub(element, "dhcp")
    # offsets stay inside the subnet, away from the network and broadcast addresses, and
    # within one 65536-address block as libvirt requires
    last = min(hosts - 2, 65535)
    for _ in range(int(draw(st.integers(0, 2)))):  # type: ignore[arg-type]
        start = int(draw(st.integers(2, last)))  # type: ignore[arg-type]
        end = int(draw(st.integers(start, last)))  # type: ignore[arg-type]
        element_range = _sub(dhcp_element, "range", start=subnet.network_address + start,
                             end=subnet.network_address + end)
        if _maybe(draw, 25):
            _lease(draw, element_range)
    for index in range(int(draw(st.integers(0, 2)))):  # type: ignore[arg-type]
        offset = int(draw(st.integers(2, last)))  # type: ignore[arg-type]
        kind = draw(st.sampled_from(["mac", "name", "both"]))
        host = _sub(dhcp_element, "host",
                    mac=_unicast_mac(draw) if kind in ("mac", "both") else None,
                    name=f"{_label(draw)}{index}" if kind in ("name", "both") else None,
                    ip=subnet.network_address + offset)
        if _maybe(draw, 25):
            _lease(draw, host)
    if _maybe(draw, 15):
        _sub(dhcp_element, "bootp", file="pxelinux.0",
             server=subnet.network_address + 2 if _maybe(draw) else None)


def _ipv6(draw: Draw, root: ET.Element, group: int, dhcp: bool,
          subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
    prefix = draw(st.sampled_from([48, 56, 64]))
    subnet = ipaddress.IPv6Network(f"2001:db8:{group:x}::/{prefix}")
    subnets.append(subnet)
    element = _sub(root, "ip", family="ipv6", address=subnet.network_address + 1, prefix=prefix)
    if not dhcp:
        return
    dhcp_element = _sub(element, "dhcp")
    for _ in range(int(draw(st.integers(0, 2)))):  # type: ignore[arg-type]
        start = int(draw(st.integers(0x100, 0xFFFF)))  # type: ignore[arg-type]
        end = int(draw(st.integers(start, 0xFFFF)))  # type: ignore[arg-type]
        element_range = _sub(dhcp_element, "range", start=subnet.network_address + start,
                             end=subnet.network_address + end)
        if _maybe(draw, 25):
            _lease(draw, element_range)
    for index in range(int(draw(st.integers(0, 2)))):  # type: ignore[arg-type]
        kind = draw(st.sampled_from(["id", "name", "both"]))
        duid = "0:1:0:1:" + ":".join(f"{b:x}" for b in draw(
            st.lists(st.integers(0, 255), min_size=4, max_size=8)))  # type: ignore[union-attr]
        _sub(dhcp_element, "host",
             id=duid if kind in ("id", "both") else None,
             name=f"{_label(draw)}{index}" if kind in ("name", "both") else None,
             ip=subnet.network_address + int(draw(st.integers(2, 0xFF))))  # type: ignore[arg-type]


def _routes(draw: Draw, root: ET.Element,
            subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
    for index in range(int(draw(st.integers(0, 2)))):  # type: ignore[arg-type]
        via = draw(st.sampled_from(subnets))
        gateway = via.network_address + 2  # type: ignore[union-attr]
        metric = draw(st.one_of(st.none(), st.integers(1, 1000)))
        if via.version == 4:  # type: ignore[union-attr]
            prefix = draw(st.integers(8, 32))
            network = ipaddress.IPv4Network(f"172.{16 + index}.{draw(st.integers(0, 255))}.0/"
                                            f"{prefix}", strict=False)
            if _maybe(draw, 30):
                _sub(root, "route", address=network.network_address, netmask=network.netmask,
                     gateway=gateway, metric=metric)
            else:
                _sub(root, "route", family=draw(st.sampled_from([None, "ipv4"])),
                     address=network.network_address, prefix=prefix, gateway=gateway,
                     metric=metric)
        else:
            prefix = draw(st.sampled_from([32, 48, 64]))
            network = ipaddress.IPv6Network(f"2001:db9:{index:x}::/{prefix}", strict=False)
            _sub(root, "route", family="ipv6", address=network.network_address, prefix=prefix,
                 gateway=gateway, metric=metric)


def _dns(draw: Draw, root: ET.Element, records: bool, newer: bool) -> None:
    enable = draw(st.sampled_from([None, "yes"]))
    element = _sub(root, "dns", enable=enable,
                   forwardPlainNames=draw(st.sampled_from([None, "yes", "no"])))
    for _ in range(int(draw(st.integers(0, 2)))):  # type: ignore[arg-type]
        kind = draw(st.sampled_from(["addr", "domain", "both"]))
        addr = draw(st.sampled_from(["8.8.8.8", "192.0.2.53", "2001:db8::53"]))
        port = draw(st.one_of(st.none(), st.integers(1, 65535))) if newer else None
        _sub(element, "forwarder",
             domain=_dns_name(draw) if kind in ("domain", "both") else None,
             addr=addr if kind in ("addr", "both") else None,
             port=port if kind in ("addr", "both") else None)
    if not records:
        return
    for _ in range(int(draw(st.integers(0, 2)))):  # type: ignore[arg-type]
        host = _sub(element, "host", ip=draw(st.sampled_from(
            ["192.168.122.2", "10.1.2.3", "2001:db8::2"])))
        for _ in range(int(draw(st.integers(1, 2)))):  # type: ignore[arg-type]
            ET.SubElement(host, "hostname").text = _dns_name(draw)
    for _ in range(int(draw(st.integers(0, 2)))):  # type: ignore[arg-type]
        target = _dns_name(draw) if _maybe(draw, 60) else None
        _sub(element, "srv", service=_label(draw),
             protocol=draw(st.sampled_from(["tcp", "udp"])),
             domain=_dns_name(draw) if _maybe(draw) else None,
             target=target,
             port=draw(st.integers(1, 65535)) if target and _maybe(draw) else None,
             priority=draw(st.integers(0, 65535)) if target and _maybe(draw) else None,
             weight=draw(st.integers(0, 65535)) if target and _maybe(draw) else None)
    for _ in range(int(draw(st.integers(0, 2)))):  # type: ignore[arg-type]
        value = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                             min_size=1, max_size=30))
        _sub(element, "txt", name=_dns_name(draw), value=value)


# --- per-mode builders ------------------------------------------------------------------


def _own_bridge(draw: Draw, root: ET.Element, mode: str, newer: bool) -> None:
    if mode != "none":
        forward = _sub(root, "forward", mode=mode if mode != "nat" or _maybe(draw) else None)
        if mode in ("nat", "route") and _maybe(draw, 30):
            forward.set("dev", _ifname(draw, "eth"))
        if mode == "nat" and _maybe(draw, 40):
            nat = _sub(forward, "nat", ipv6=draw(st.sampled_from([None, "yes"])))
            if _maybe(draw):
                start = int(draw(st.integers(1, 200)))  # type: ignore[arg-type]
                _sub(nat, "address", start=f"203.0.113.{start}",
                     end=f"203.0.113.{draw(st.integers(start, 254))}")
            if _maybe(draw):
                low = int(draw(st.integers(0, 65535)))  # type: ignore[arg-type]
                _sub(nat, "port", start=low, end=draw(st.integers(low, 65535)))
    if _maybe(draw, 70):
        bridge = _sub(root, "bridge",
                      name=f"vnt{_label(draw, 6)}" if _maybe(draw, 70) else None,
                      stp=draw(st.sampled_from([None, "on", "off"])),
                      delay=draw(st.one_of(st.none(), st.integers(0, 5))),
                      macTableManager=draw(st.sampled_from([None, "kernel", "libvirt"])))
        if _maybe(draw, 10):
            bridge.set("zone", "trusted")
    if _maybe(draw, 30):
        _sub(root, "mac", address=_unicast_mac(draw))
    if _maybe(draw, 20):
        _sub(root, "mtu", size=draw(st.integers(1280, 9000)))
    if _maybe(draw, 30):
        _sub(root, "domain", name=_dns_name(draw),
             localOnly=draw(st.sampled_from([None, "yes", "no"])),
             register=draw(st.sampled_from([None, "yes", "no"])) if newer else None)
    if _maybe(draw, 40):
        _dns(draw, root, records=True, newer=newer)
    if _maybe(draw, 20):
        _bandwidth(draw, root)
    if _maybe(draw, 15):
        _sub(root, "port", isolated=draw(st.sampled_from(["yes", "no"])))
    _portgroups(draw, root, bandwidth=True, vlan=False, vport_kinds=[])
    subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    need_ip = mode in ("nat", "route") or (mode == "open" and not newer)
    n4 = int(draw(st.integers(1 if need_ip else 0, 2)))  # type: ignore[arg-type]
    n6 = int(draw(st.integers(0, 2)))  # type: ignore[arg-type]
    octets = draw(st.lists(st.integers(0, 255), min_size=n4, max_size=n4, unique=True))
    for index, octet in enumerate(octets):  # type: ignore[arg-type]
        _ipv4(draw, root, int(octet), dhcp=index == 0, subnets=subnets)
    groups = draw(st.lists(st.integers(1, 0xFFFF), min_size=n6, max_size=n6, unique=True))
    for index, group in enumerate(groups):  # type: ignore[arg-type]
        _ipv6(draw, root, int(group), dhcp=index == 0, subnets=subnets)
    if subnets:
        _routes(draw, root, subnets)
    if _maybe(draw, 15):
        options = _sub(root, f"{{{DNSMASQ_NAMESPACE}}}options")
        for value in draw(st.lists(st.sampled_from(
                ["cname=*.foo.example.com,master.example.com", "log-queries",
                 "dhcp-option=option:ntp-server,192.0.2.123", "no-negcache"]),
                min_size=1, max_size=2, unique=True)):  # type: ignore[union-attr]
            _sub(options, f"{{{DNSMASQ_NAMESPACE}}}option", value=value)


def _host_bridge(draw: Draw, root: ET.Element) -> None:
    _sub(root, "forward", mode="bridge")
    ovs = _maybe(draw, 30)
    _sub(root, "bridge", name=_ifname(draw, "br"),
         macTableManager=None if ovs else draw(st.sampled_from([None, "kernel", "libvirt"])))
    if ovs:
        _virtualport(draw, root, "openvswitch")
        if _maybe(draw, 30):
            _vlan(draw, root)
    if _maybe(draw, 30):
        _bandwidth(draw, root)
    if _maybe(draw, 20):
        _dns(draw, root, records=False, newer=False)
    # vlans on portgroups only with Open vSwitch: a plain host bridge tags only in newer libvirt
    _portgroups(draw, root, bandwidth=True, vlan=ovs,
                vport_kinds=["openvswitch"] if ovs else [])


def _pool(draw: Draw, forward: ET.Element, max_interfaces: int) -> None:
    kind = draw(st.sampled_from(["dev", "interfaces", "dev+interfaces", "pf"]))
    if kind == "pf":
        _sub(forward, "pf", dev=_ifname(draw, "enp"))
        return
    names = draw(st.lists(st.integers(0, 99), min_size=1, max_size=max_interfaces, unique=True))
    devs = [f"eth{n}" for n in names]  # type: ignore[union-attr]
    if kind in ("dev", "dev+interfaces"):
        forward.set("dev", devs[0])
    if kind in ("interfaces", "dev+interfaces"):
        for dev in devs:
            _sub(forward, "interface", dev=dev)


def _direct(draw: Draw, root: ET.Element, mode: str) -> None:
    forward = _sub(root, "forward", mode=mode)
    _pool(draw, forward, max_interfaces=4)
    kinds: list[str | None] = ["802.1Qbg", "802.1Qbh"]
    if _maybe(draw, 30):
        _virtualport(draw, root, draw(st.sampled_from(kinds)))  # type: ignore[arg-type]
    vlan_ok = mode == "passthrough"
    if vlan_ok and _maybe(draw, 30):
        _vlan(draw, root)
    if _maybe(draw, 20):
        _dns(draw, root, records=False, newer=False)
    _portgroups(draw, root, bandwidth=False, vlan=vlan_ok, vport_kinds=[])


def _hostdev(draw: Draw, root: ET.Element, pci_pools: bool) -> None:
    forward = _sub(root, "forward", mode="hostdev",
                   managed=draw(st.sampled_from([None, "yes", "no"])))
    if _maybe(draw, 40):
        _sub(forward, "driver", name=draw(st.sampled_from(["kvm", "vfio"])))
    if pci_pools and _maybe(draw):
        functions = draw(st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True))
        bus = draw(st.integers(1, 255))
        for function in functions:  # type: ignore[union-attr]
            _sub(forward, "address", type="pci", domain="0x0000", bus=f"{bus:#04x}",
                 slot="0x10", function=f"{function:#x}")
    else:
        _sub(forward, "pf", dev=_ifname(draw, "enp"))
    if _maybe(draw, 30):
        _vlan(draw, root)
    _portgroups(draw, root, bandwidth=False, vlan=True, vport_kinds=[])


@st.composite
def network_trees(draw: Draw, newer_features: bool = False, pci_pools: bool = False,
                  modes: tuple[str, ...] = ALL_MODES) -> ET.Element:
    """A valid <network> element tree (see the module docstring) of one of ``modes`` (names
    from ALL_MODES: the forward modes, with 'hostbridge' and 'macvtap-bridge' for the two
    kinds of mode='bridge')."""
    unknown = set(modes) - set(ALL_MODES)
    if unknown or not modes:
        raise ValueError(f"unknown tree modes {sorted(unknown)!r}; known: {ALL_MODES!r}")
    root = ET.Element("network")
    # wide integer modulo the count: an even spread that still shrinks to the first mode
    mode = modes[int(draw(st.integers(0, 2**32 - 1))) % len(modes)]  # type: ignore[arg-type]
    if _maybe(draw, 10):
        root.set("ipv6", "yes")
    if _maybe(draw, 10):
        root.set("trustGuestRxFilters", draw(st.sampled_from(["yes", "no"])))  # type: ignore[arg-type]
    ET.SubElement(root, "name").text = f"vnt-{mode[:4]}-{_label(draw, 6)}"
    if _maybe(draw, 40):
        ET.SubElement(root, "uuid").text = _uuid(draw)
    if newer_features and _maybe(draw, 20):
        ET.SubElement(root, "title").text = _label(draw, 20)
    if newer_features and _maybe(draw, 20):
        ET.SubElement(root, "description").text = "generated by hypothesis"
    if mode in OWN_BRIDGE_MODES:
        _own_bridge(draw, root, mode, newer_features)
    elif mode == "hostbridge":
        _host_bridge(draw, root)
    elif mode == "macvtap-bridge":
        _direct(draw, root, "bridge")
    elif mode == "hostdev":
        _hostdev(draw, root, pci_pools)
    else:
        _direct(draw, root, mode)
    return root


def to_xml(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def network_xml(newer_features: bool = False, pci_pools: bool = False,
                modes: tuple[str, ...] = ALL_MODES) -> st.SearchStrategy[str]:
    """Valid network definitions as XML text."""
    return network_trees(newer_features=newer_features, pci_pools=pci_pools,
                         modes=modes).map(to_xml)


# --- broken definitions -----------------------------------------------------------------


@dataclass(frozen=True)
class BrokenNetwork:
    """A definition with one deliberate defect; ``defect`` names the rule it breaks."""

    xml: str
    defect: str


def _ipv4_with_subnet(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.findall("ip") if e.get("family") != "ipv6"]


def _subnet_of(element: ET.Element) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address = element.get("address")
    if element.get("prefix"):
        return ipaddress.ip_network(f"{address}/{element.get('prefix')}", strict=False)
    if element.get("netmask"):
        return ipaddress.ip_network(f"{address}/{element.get('netmask')}", strict=False)
    if element.get("family") == "ipv6":
        return ipaddress.ip_network(f"{address}/64", strict=False)
    return ipaddress.ip_network(f"{address}/24", strict=False)  # our trees use 192.168.X.1


def _range_outside(draw: Draw, root: ET.Element) -> None:
    ip = _ipv4_with_subnet(root)[0]
    subnet = _subnet_of(ip)
    dhcp = ip.find("dhcp")
    if dhcp is None:
        dhcp = _sub(ip, "dhcp")
    outside = subnet.broadcast_address + 2
    _sub(dhcp, "range", start=outside, end=outside + 3)


def _range_reversed(draw: Draw, root: ET.Element) -> None:
    ip = _ipv4_with_subnet(root)[0]
    subnet = _subnet_of(ip)
    dhcp = ip.find("dhcp")
    if dhcp is None:
        dhcp = _sub(ip, "dhcp")
    _sub(dhcp, "range", start=subnet.network_address + 9, end=subnet.network_address + 3)


def _host_without_mac_or_name(draw: Draw, root: ET.Element) -> None:
    ip = _ipv4_with_subnet(root)[0]
    dhcp = ip.find("dhcp")
    if dhcp is None:
        dhcp = _sub(ip, "dhcp")
    _sub(dhcp, "host", ip=_subnet_of(ip).network_address + 5)  # neither mac nor name


def _second_dhcp(draw: Draw, root: ET.Element) -> None:
    first = _ipv4_with_subnet(root)[0]
    dhcp = first.find("dhcp")
    if dhcp is None:
        dhcp = _sub(first, "dhcp")
    if dhcp.find("range") is None and dhcp.find("host") is None:
        subnet = _subnet_of(first)
        _sub(dhcp, "range", start=subnet.network_address + 2, end=subnet.network_address + 3)
    element = _sub(root, "ip", address="198.51.100.1", prefix=24)
    _sub(_sub(element, "dhcp"), "range", start="198.51.100.10", end="198.51.100.20")


def _two_default_portgroups(draw: Draw, root: ET.Element) -> None:
    _sub(root, "portgroup", name="zz-first", default="yes")
    _sub(root, "portgroup", name="zz-second", default="yes")


def _duplicate_portgroup(draw: Draw, root: ET.Element) -> None:
    _sub(root, "portgroup", name="zz-dup")
    _sub(root, "portgroup", name="zz-dup")


def _ip_without_own_bridge(draw: Draw, root: ET.Element) -> None:
    _sub(root, "ip", address="192.0.2.1", prefix=24)


def _mtu_without_own_bridge(draw: Draw, root: ET.Element) -> None:
    _sub(root, "mtu", size=9000)


def _multicast_mac(draw: Draw, root: ET.Element) -> None:
    for mac in root.findall("mac"):
        root.remove(mac)
    _sub(root, "mac", address="01:00:5e:00:00:01")


def _netmask_and_prefix(draw: Draw, root: ET.Element) -> None:
    _sub(root, "ip", address="198.51.100.1", netmask="255.255.255.0", prefix=24)


def _ipv6_netmask(draw: Draw, root: ET.Element) -> None:
    _sub(root, "ip", family="ipv6", address="2001:db8:ffff::1", netmask="255.255.255.0")


def _prefix_too_long(draw: Draw, root: ET.Element) -> None:
    _sub(root, "ip", address="198.51.100.1", prefix=draw(st.integers(33, 200)))


def _short_lease(draw: Draw, root: ET.Element) -> None:
    ip = _ipv4_with_subnet(root)[0]
    subnet = _subnet_of(ip)
    dhcp = ip.find("dhcp")
    if dhcp is None:
        dhcp = _sub(ip, "dhcp")
    element = _sub(dhcp, "range", start=subnet.network_address + 2,
                   end=subnet.network_address + 3)
    _sub(element, "lease", expiry=draw(st.integers(1, 119)), unit="seconds")


def _unreachable_gateway(draw: Draw, root: ET.Element) -> None:
    _sub(root, "route", address="172.31.0.0", prefix=16, gateway="198.18.0.1")


def _disabled_dns_with_host(draw: Draw, root: ET.Element) -> None:
    for dns in root.findall("dns"):
        root.remove(dns)
    dns = _sub(root, "dns", enable="no")
    ET.SubElement(_sub(dns, "host", ip="192.0.2.5"), "hostname").text = "gone"


def _srv_port_without_target(draw: Draw, root: ET.Element) -> None:
    dns = root.find("dns")
    if dns is None:
        dns = _sub(root, "dns")
    _sub(dns, "srv", service="ldap", protocol="tcp", port=389)


def _txt_name_with_space(draw: Draw, root: ET.Element) -> None:
    dns = root.find("dns")
    if dns is None:
        dns = _sub(root, "dns")
    _sub(dns, "txt", name="two words", value="v")


def _vlan_tag_too_big(draw: Draw, root: ET.Element) -> None:
    for vlan in root.findall("vlan"):
        root.remove(vlan)
    _sub(_sub(root, "vlan"), "tag", id=draw(st.integers(4096, 100000)))


def _duplicate_interface(draw: Draw, root: ET.Element) -> None:
    forward = root.find("forward")
    assert forward is not None
    for key in ("dev",):
        forward.attrib.pop(key, None)
    for child in list(forward):
        if child.tag in ("interface", "pf", "address"):
            forward.remove(child)
    _sub(forward, "interface", dev="eth7")
    _sub(forward, "interface", dev="eth7")


def _forward_dev_mismatch(draw: Draw, root: ET.Element) -> None:
    forward = root.find("forward")
    assert forward is not None
    for child in list(forward):
        if child.tag in ("interface", "pf", "address"):
            forward.remove(child)
    forward.set("dev", "eth1")
    _sub(forward, "interface", dev="eth2")


def _nat_in_route_mode(draw: Draw, root: ET.Element) -> None:
    forward = root.find("forward")
    assert forward is not None
    forward.set("mode", "route")
    for child in list(forward):
        if child.tag == "nat":
            forward.remove(child)
    _sub(_sub(forward, "nat"), "port", start=1024, end=65535)


def _nat_port_reversed(draw: Draw, root: ET.Element) -> None:
    forward = root.find("forward")
    assert forward is not None
    for child in list(forward):
        if child.tag == "nat":
            forward.remove(child)
    _sub(_sub(forward, "nat"), "port", start=2000, end=1000)


def _network_floor(draw: Draw, root: ET.Element) -> None:
    for bandwidth in root.findall("bandwidth"):
        root.remove(bandwidth)
    _sub(_sub(root, "bandwidth"), "inbound", average=1000, floor=draw(st.integers(1, 500)))


def _name_with_slash(draw: Draw, root: ET.Element) -> None:
    name = root.find("name")
    assert name is not None
    name.text = f"{name.text}/x"


def _l3_without_ip(draw: Draw, root: ET.Element) -> None:
    for child in root.findall("ip") + root.findall("route"):
        root.remove(child)
    for dns in root.findall("dns"):
        root.remove(dns)


NON_OWN_BRIDGE_MODES = tuple(m for m in ALL_MODES if m not in OWN_BRIDGE_MODES)
MACVTAP_MODES = ("macvtap-bridge",) + DIRECT_MODES
L3_MODES = ("nat", "route")  # these always have an IPv4 <ip> with a <dhcp>

# Each defect: (name, the tree modes it applies to, mutate(draw, root)). The mutations give
# documents that libvirt 9.0 refuses (at parse or define time) as well as virtnet.
_DEFECTS: list[tuple[str, tuple[str, ...], Callable[[Draw, ET.Element], None]]] = [
    ("dhcp range outside its subnet", L3_MODES, _range_outside),
    ("dhcp range reversed", L3_MODES, _range_reversed),
    ("dhcp host without mac or name", L3_MODES, _host_without_mac_or_name),
    ("two IPv4 dhcp sections", L3_MODES, _second_dhcp),
    ("lease under 2 minutes", L3_MODES, _short_lease),
    ("nat element in route mode", L3_MODES, _nat_in_route_mode),
    ("nat or route without ip", L3_MODES, _l3_without_ip),
    ("nat port range reversed", ("nat",), _nat_port_reversed),
    ("two default portgroups", ALL_MODES, _two_default_portgroups),
    ("duplicate portgroup name", ALL_MODES, _duplicate_portgroup),
    ("multicast bridge mac", ALL_MODES, _multicast_mac),
    ("unreachable route gateway", ALL_MODES, _unreachable_gateway),
    ("vlan tag over 4095", ALL_MODES, _vlan_tag_too_big),
    ("network name with '/'", ALL_MODES, _name_with_slash),
    ("ip without a bridge of ours", NON_OWN_BRIDGE_MODES, _ip_without_own_bridge),
    ("mtu without a bridge of ours", NON_OWN_BRIDGE_MODES, _mtu_without_own_bridge),
    ("netmask and prefix", OWN_BRIDGE_MODES, _netmask_and_prefix),
    ("IPv6 netmask", OWN_BRIDGE_MODES, _ipv6_netmask),
    ("IPv4 prefix over 32", OWN_BRIDGE_MODES, _prefix_too_long),
    ("disabled dns with a host", OWN_BRIDGE_MODES, _disabled_dns_with_host),
    ("srv port without target", OWN_BRIDGE_MODES, _srv_port_without_target),
    ("txt name with a space", OWN_BRIDGE_MODES, _txt_name_with_space),
    ("floor in network bandwidth", OWN_BRIDGE_MODES, _network_floor),
    ("duplicate forward interface", MACVTAP_MODES, _duplicate_interface),
    ("forward dev differs from first interface", MACVTAP_MODES, _forward_dev_mismatch),
]

DEFECT_NAMES = tuple(name for name, _, _ in _DEFECTS)


@st.composite
def broken_network_trees(draw: Draw,
                         defects: tuple[str, ...] = DEFECT_NAMES) -> tuple[ET.Element, str]:
    """A valid tree of a suitable mode with one defect applied; returns (tree, defect name)."""
    chosen = [d for d in _DEFECTS if d[0] in defects]
    if not chosen:
        raise ValueError(f"no known defect among {defects!r}")
    # a wide integer modulo the count spreads the choice more evenly than sampled_from, whose
    # small indices come up far more often; it still shrinks to the first defect
    choice = int(draw(st.integers(0, 2**32 - 1)))  # type: ignore[arg-type]
    name, modes, mutate = chosen[choice % len(chosen)]
    root = draw(network_trees(modes=modes))
    mutate(draw, root)
    return root, name  # type: ignore[return-value]


def broken_network_xml(defects: tuple[str, ...] = DEFECT_NAMES) -> st.SearchStrategy[BrokenNetwork]:
    """Definitions with one deliberate defect each (one of ``defects``), as XML text with the
    defect's name."""
    return broken_network_trees(defects).map(lambda pair: BrokenNetwork(to_xml(pair[0]), pair[1]))
