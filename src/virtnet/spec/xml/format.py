"""Format the model as libvirt 9.0 formats a network definition, byte for byte.

The layout follows libvirt's virNetworkDefFormatBuf: two-space indentation, single-quoted
attributes in libvirt's order, text escaped the way virBufferEscapeString escapes it, the
forward dev/interface rules, <bridge stp delay> only for modes with a bridge of our own,
<ip> always written with an opening and a closing tag, the <metadata> element re-serialized
the way libxml2's xmlNodeDump does it, xmlns:dnsmasq on the root only when options exist, and
runtime connection counts only when ``inactive`` is False.

Where libvirt writes a string without escaping (a DHCP host name, a portgroup name, a domain
name) we escape it anyway: for the values libvirt's parser accepts the bytes are the same, and
for the rest libvirt's output would not be well-formed XML.

The newer-libvirt superset (<title>, <description>, <domain register>, <forwarder port>) is
written where newer libvirt writes it.
"""

from __future__ import annotations

import ipaddress

from virtnet.spec.model import (
    DNSMASQ_NAMESPACE,
    Bandwidth,
    BandwidthRate,
    DhcpHost,
    DhcpRange,
    Dns,
    Forward,
    ForwardInterface,
    ForwardMode,
    IpDef,
    Lease,
    Network,
    PciAddress,
    PortGroup,
    Route,
    VirtualPort,
    VirtualPortType,
    Vlan,
)
from virtnet.spec.xml.document import dump_metadata, parse_fragment

INDENT = "  "

# virBufferEscapeString drops these control characters silently and escapes the five XML
# specials; everything else (including tab, newline, carriage return) is copied.
_ESCAPES = {ord("<"): "&lt;", ord(">"): "&gt;", ord("&"): "&amp;", ord('"'): "&quot;",
            ord("'"): "&apos;"}
for _code in (*range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x1A)):
    _ESCAPES[_code] = None
_NEEDS_ESCAPE = frozenset(chr(c) for c in _ESCAPES)


def escape(text: str) -> str:
    """Escape like libvirt's virBufferEscapeString."""
    if _NEEDS_ESCAPE.isdisjoint(text):
        return text
    return text.translate(_ESCAPES)


def format_ip_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as glibc's inet_ntop writes it (what libvirt prints): Python's compressed
    form, except IPv4-compatible and IPv4-mapped IPv6 addresses keep their dotted quad."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    value = int(address)
    high, low32 = value >> 32, value & 0xFFFFFFFF
    if address.scope_id is None:
        if high == 0 and (low32 >> 16) != 0:
            return "::" + str(ipaddress.IPv4Address(low32))
        if high == 0xFFFF:
            return "::ffff:" + str(ipaddress.IPv4Address(low32))
    return str(address)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


# --- shared sub-elements ----------------------------------------------------------------


def format_bandwidth(bandwidth: Bandwidth | None, indent: str, out: list[str]) -> None:
    if bandwidth is None:
        return
    out.append(f"{indent}<bandwidth>\n")
    inner = indent + INDENT
    for name, rate in (("inbound", bandwidth.inbound), ("outbound", bandwidth.outbound)):
        if rate is not None:
            _format_rate(name, rate, inner, out)
    out.append(f"{indent}</bandwidth>\n")


def _format_rate(name: str, rate: BandwidthRate, indent: str, out: list[str]) -> None:
    if not (rate.average or rate.floor):
        return
    parts = [f"{indent}<{name}"]
    if rate.average:
        parts.append(f" average='{rate.average}'")
    if rate.peak:
        parts.append(f" peak='{rate.peak}'")
    if rate.floor:
        parts.append(f" floor='{rate.floor}'")
    if rate.burst:
        parts.append(f" burst='{rate.burst}'")
    parts.append("/>\n")
    out.append("".join(parts))


def format_vlan(vlan: Vlan | None, indent: str, out: list[str]) -> None:
    if vlan is None or not vlan.tags:
        return
    trunk = vlan.trunk is True or len(vlan.tags) > 1
    out.append(f"{indent}<vlan{' trunk=' + chr(39) + 'yes' + chr(39) if trunk else ''}>\n")
    # libvirt keeps one native (mode, tag id) pair and marks every tag with that id
    native = next((t for t in vlan.tags if t.native_mode is not None), None)
    inner = indent + INDENT
    for tag in vlan.tags:
        if native is not None and tag.id == native.id:
            out.append(f"{inner}<tag id='{tag.id}' nativeMode='{native.native_mode.value}'/>\n")
        else:
            out.append(f"{inner}<tag id='{tag.id}'/>\n")
    out.append(f"{indent}</vlan>\n")


def format_virtualport(port: VirtualPort | None, indent: str, out: list[str]) -> None:
    if port is None:
        return
    kind = port.type
    has_params = any(
        value is not None
        for value in (port.manager_id, port.type_id, port.type_id_version, port.instance_id,
                      port.profile_id, port.interface_id)
    )
    if kind is None or kind is VirtualPortType.NONE:
        if not has_params:
            return
        out.append(f"{indent}<virtualport>\n")
        kind = None
    elif not has_params:
        out.append(f"{indent}<virtualport type='{kind.value}'/>\n")
        return
    else:
        out.append(f"{indent}<virtualport type='{kind.value}'>\n")
    qbg_like = kind in (None, VirtualPortType.QBG)
    parts = [f"{indent}{INDENT}<parameters"]
    if port.manager_id is not None and qbg_like:
        parts.append(f" managerid='{port.manager_id}'")
    if port.type_id is not None and qbg_like:
        parts.append(f" typeid='{port.type_id}'")
    if port.type_id_version is not None and qbg_like:
        parts.append(f" typeidversion='{port.type_id_version}'")
    if port.instance_id is not None and qbg_like:
        parts.append(f" instanceid='{port.instance_id}'")
    if port.interface_id is not None and kind in (
        None, VirtualPortType.MIDONET, VirtualPortType.OPENVSWITCH
    ):
        parts.append(f" interfaceid='{port.interface_id}'")
    if port.profile_id and kind in (None, VirtualPortType.OPENVSWITCH, VirtualPortType.QBH):
        parts.append(f" profileid='{escape(port.profile_id)}'")
    parts.append("/>\n")
    out.append("".join(parts))
    out.append(f"{indent}</virtualport>\n")


def format_portgroup(group: PortGroup, indent: str, out: list[str]) -> None:
    parts = [f"{indent}<portgroup name='{escape(group.name)}'"]
    if group.default:
        parts.append(" default='yes'")
    if group.trust_guest_rx_filters is not None:
        parts.append(f" trustGuestRxFilters='{_yes_no(group.trust_guest_rx_filters)}'")
    parts.append(">\n")
    out.append("".join(parts))
    inner = indent + INDENT
    format_vlan(group.vlan, inner, out)
    format_virtualport(group.virtualport, inner, out)
    format_bandwidth(group.bandwidth, inner, out)
    out.append(f"{indent}</portgroup>\n")


# --- ip, dhcp, routes -------------------------------------------------------------------


def _format_lease(lease: Lease, indent: str, out: list[str]) -> None:
    if not lease.expiry:
        out.append(f"{indent}<lease expiry='0'/>\n")
    else:
        unit = lease.unit.value if lease.unit is not None else "minutes"
        out.append(f"{indent}<lease expiry='{lease.expiry}' unit='{unit}'/>\n")


def format_dhcp_range(dhcp_range: DhcpRange, indent: str, out: list[str]) -> None:
    head = (f"{indent}<range start='{format_ip_address(dhcp_range.start)}' "
            f"end='{format_ip_address(dhcp_range.end)}'")
    if dhcp_range.lease is None:
        out.append(head + "/>\n")
        return
    out.append(head + ">\n")
    _format_lease(dhcp_range.lease, indent + INDENT, out)
    out.append(f"{indent}</range>\n")


def format_dhcp_host(host: DhcpHost, indent: str, out: list[str]) -> None:
    parts = [f"{indent}<host"]
    if host.mac is not None:
        parts.append(f" mac='{escape(host.mac)}'")
    if host.id is not None:
        parts.append(f" id='{escape(host.id)}'")
    if host.name is not None:
        parts.append(f" name='{escape(host.name)}'")
    if host.ip is not None:
        parts.append(f" ip='{format_ip_address(host.ip)}'")
    if host.lease is None:
        parts.append("/>\n")
        out.append("".join(parts))
        return
    parts.append(">\n")
    out.append("".join(parts))
    _format_lease(host.lease, indent + INDENT, out)
    out.append(f"{indent}</host>\n")


def format_ip(ip: IpDef, indent: str, out: list[str]) -> None:
    parts = [f"{indent}<ip"]
    if ip.family is not None:
        parts.append(f" family='{escape(ip.family)}'")
    if ip.address is not None:
        parts.append(f" address='{format_ip_address(ip.address)}'")
    if ip.netmask is not None:
        parts.append(f" netmask='{ip.netmask}'")
    if ip.prefix:
        parts.append(f" prefix='{ip.prefix}'")
    if ip.local_ptr is not None:
        parts.append(f" localPtr='{_yes_no(ip.local_ptr)}'")
    parts.append(">\n")
    out.append("".join(parts))
    inner = indent + INDENT
    if ip.tftp_root is not None:
        out.append(f"{inner}<tftp root='{escape(ip.tftp_root)}'/>\n")
    if ip.ranges or ip.hosts:
        out.append(f"{inner}<dhcp>\n")
        deeper = inner + INDENT
        for dhcp_range in ip.ranges:
            format_dhcp_range(dhcp_range, deeper, out)
        for host in ip.hosts:
            format_dhcp_host(host, deeper, out)
        if ip.bootp is not None:
            bootp = f"{deeper}<bootp file='{escape(ip.bootp.file)}'"
            if ip.bootp.server is not None:
                bootp += f" server='{format_ip_address(ip.bootp.server)}'"
            out.append(bootp + "/>\n")
        out.append(f"{inner}</dhcp>\n")
    out.append(f"{indent}</ip>\n")


def format_route(route: Route, indent: str, out: list[str]) -> None:
    parts = [f"{indent}<route"]
    if route.family is not None:
        parts.append(f" family='{escape(route.family)}'")
    if route.address is not None:
        parts.append(f" address='{format_ip_address(route.address)}'")
    if route.netmask is not None:
        parts.append(f" netmask='{route.netmask}'")
    if route.prefix is not None:
        parts.append(f" prefix='{route.prefix}'")
    if route.gateway is not None:
        parts.append(f" gateway='{format_ip_address(route.gateway)}'")
    if route.metric:
        parts.append(f" metric='{route.metric}'")
    parts.append("/>\n")
    out.append("".join(parts))


# --- dns --------------------------------------------------------------------------------


def format_dns(dns: Dns, indent: str, out: list[str]) -> None:
    has_records = bool(dns.forwarders or dns.hosts or dns.srvs or dns.txts)
    if dns.enable is None and dns.forward_plain_names is None and not has_records:
        return
    head = f"{indent}<dns"
    if dns.enable is not None:
        head += f" enable='{_yes_no(dns.enable)}'"
    if dns.forward_plain_names is not None:
        head += f" forwardPlainNames='{_yes_no(dns.forward_plain_names)}'"
    if not has_records:
        out.append(head + "/>\n")
        return
    out.append(head + ">\n")
    inner = indent + INDENT
    for forwarder in dns.forwarders:
        parts = [f"{inner}<forwarder"]
        if forwarder.domain is not None:
            parts.append(f" domain='{escape(forwarder.domain)}'")
        if forwarder.addr is not None:
            parts.append(f" addr='{format_ip_address(forwarder.addr)}'")
        if forwarder.port is not None:
            parts.append(f" port='{forwarder.port}'")
        parts.append("/>\n")
        out.append("".join(parts))
    for txt in dns.txts:
        out.append(f"{inner}<txt name='{escape(txt.name)}' value='{escape(txt.value)}'/>\n")
    for srv in dns.srvs:
        if srv.service is None or srv.protocol is None:
            continue  # libvirt writes only complete SRV records
        parts = [f"{inner}<srv service='{escape(srv.service)}' protocol='{escape(srv.protocol)}'"]
        if srv.domain is not None:
            parts.append(f" domain='{escape(srv.domain)}'")
        if srv.target is not None:
            parts.append(f" target='{escape(srv.target)}'")
        if srv.port:
            parts.append(f" port='{srv.port}'")
        if srv.priority:
            parts.append(f" priority='{srv.priority}'")
        if srv.weight:
            parts.append(f" weight='{srv.weight}'")
        parts.append("/>\n")
        out.append("".join(parts))
    for host in dns.hosts:
        ip = format_ip_address(host.ip) if host.ip is not None else ""
        out.append(f"{inner}<host ip='{ip}'>\n")
        for name in host.hostnames:
            out.append(f"{inner}{INDENT}<hostname>{escape(name)}</hostname>\n")
        out.append(f"{inner}</host>\n")
    out.append(f"{indent}</dns>\n")


# --- forward ----------------------------------------------------------------------------


def _format_pci_address(address: PciAddress, indent: str) -> str:
    # libvirt prints the function with '0x%d' (decimal digits after 0x); it is at most 7
    return (f"{indent}<address type='pci' domain='0x{address.domain:04x}' "
            f"bus='0x{address.bus:02x}' slot='0x{address.slot:02x}' "
            f"function='0x{address.function}'/>\n")


def format_forward(forward: Forward, indent: str, inactive: bool, out: list[str]) -> None:
    if forward.mode is ForwardMode.NONE:
        return
    interfaces = forward.interfaces
    if not interfaces and forward.dev is not None and not forward.addresses:
        # a model built by hand may give only 'dev': it is the one-interface pool
        interfaces = [ForwardInterface(dev=forward.dev)]
    dev = interfaces[0].dev if interfaces and not forward.pfs else None
    nat = forward.nat if forward.mode is ForwardMode.NAT else None
    nat_has_address = nat is not None and (nat.address_start is not None
                                           or nat.address_end is not None)
    nat_has_port = nat is not None and bool(nat.port_start or nat.port_end)
    nat_has_ipv6 = nat is not None and nat.ipv6 is not None
    short = not (interfaces or forward.addresses or forward.pfs or nat_has_address
                 or nat_has_port or forward.driver is not None or nat_has_ipv6)
    head = f"{indent}<forward"
    if dev is not None:
        head += f" dev='{escape(dev)}'"
    head += f" mode='{forward.mode.value}'"
    if forward.mode is ForwardMode.HOSTDEV:
        head += f" managed='{_yes_no(forward.managed)}'"
    out.append(head + ("/>\n" if short else ">\n"))
    if short:
        return
    inner = indent + INDENT
    if forward.driver is not None:
        out.append(f"{inner}<driver name='{forward.driver.value}'/>\n")
    if nat is not None and (nat_has_address or nat_has_port or nat_has_ipv6):
        nat_head = f"{inner}<nat"
        if nat.ipv6 is not None:
            nat_head += f" ipv6='{_yes_no(nat.ipv6)}'"
        if not (nat_has_address or nat_has_port):
            out.append(nat_head + "/>\n")
        else:
            out.append(nat_head + ">\n")
            deeper = inner + INDENT
            if nat.address_start is not None:
                line = f"{deeper}<address start='{nat.address_start}'"
                if nat.address_end is not None:
                    line += f" end='{nat.address_end}'"
                out.append(line + "/>\n")
            if nat_has_port:
                line = f"{deeper}<port start='{nat.port_start or 0}'"
                if nat.port_end:
                    line += f" end='{nat.port_end}'"
                out.append(line + "/>\n")
            out.append(f"{inner}</nat>\n")
    if forward.pfs:
        # libvirt keeps at most one physical function
        out.append(f"{inner}<pf dev='{escape(forward.pfs[0].dev)}'/>\n")
    # with a PF, the interface pool is derived at runtime: shown only in live XML
    if not forward.pfs or not inactive:
        for interface in interfaces:
            line = f"{inner}<interface dev='{escape(interface.dev)}'"
            if not inactive and interface.connections > 0:
                line += f" connections='{interface.connections}'"
            out.append(line + "/>\n")
        for address in forward.addresses:
            out.append(_format_pci_address(address, inner))
    out.append(f"{indent}</forward>\n")


# --- metadata ---------------------------------------------------------------------------


def _format_metadata(metadata: str, indent: str, out: list[str]) -> None:
    element = parse_fragment(metadata, "<metadata>")
    out.append(indent + dump_metadata(element, level=len(indent) // len(INDENT)) + "\n")


# --- the network ------------------------------------------------------------------------


def format_network(net: Network, inactive: bool = True) -> str:
    """The definition as libvirt 9.0 prints it (virsh net-dumpxml; --inactive when
    ``inactive``)."""
    out: list[str] = []
    head = "<network"
    if net.dnsmasq_options:
        head += f" xmlns:dnsmasq='{DNSMASQ_NAMESPACE}'"
    if not inactive and net.connections > 0:
        head += f" connections='{net.connections}'"
    if net.ipv6:
        head += " ipv6='yes'"
    if net.trust_guest_rx_filters is not None:
        head += f" trustGuestRxFilters='{_yes_no(net.trust_guest_rx_filters)}'"
    out.append(head + ">\n")
    ind = INDENT
    out.append(f"{ind}<name>{escape(net.name)}</name>\n")
    if net.uuid is not None:
        out.append(f"{ind}<uuid>{net.uuid}</uuid>\n")
    if net.title is not None:
        out.append(f"{ind}<title>{escape(net.title)}</title>\n")
    if net.description is not None:
        out.append(f"{ind}<description>{escape(net.description)}</description>\n")
    if net.metadata is not None:
        _format_metadata(net.metadata, ind, out)
    if net.forward is not None:
        format_forward(net.forward, ind, inactive, out)
    own_bridge = net.forward_mode.has_own_bridge
    bridge = net.bridge
    name = bridge.name if bridge is not None else None
    manager = bridge.mac_table_manager if bridge is not None else None
    if own_bridge or name is not None or manager is not None:
        line = f"{ind}<bridge"
        if name is not None:
            line += f" name='{escape(name)}'"
        if bridge is not None and bridge.zone is not None:
            line += f" zone='{escape(bridge.zone)}'"
        if own_bridge:
            stp = bridge.stp if bridge is not None else True
            delay = bridge.delay if bridge is not None else 0
            line += f" stp='{'on' if stp else 'off'}' delay='{delay}'"
        if manager is not None:
            line += f" macTableManager='{manager.value}'"
        out.append(line + "/>\n")
    if net.mtu:
        out.append(f"{ind}<mtu size='{net.mtu}'/>\n")
    if net.mac is not None:
        out.append(f"{ind}<mac address='{escape(net.mac)}'/>\n")
    if net.domain is not None:
        line = f"{ind}<domain name='{escape(net.domain.name)}'"
        if net.domain.local_only is not None:
            line += f" localOnly='{_yes_no(net.domain.local_only)}'"
        if net.domain.register is not None:
            line += f" register='{_yes_no(net.domain.register)}'"
        out.append(line + "/>\n")
    format_dns(net.dns, ind, out)
    format_vlan(net.vlan, ind, out)
    format_bandwidth(net.bandwidth, ind, out)
    if net.port_isolated is not None:
        out.append(f"{ind}<port isolated='{_yes_no(net.port_isolated)}'/>\n")
    for ip in net.ips:
        format_ip(ip, ind, out)
    for route in net.routes:
        format_route(route, ind, out)
    format_virtualport(net.virtualport, ind, out)
    for group in net.portgroups:
        format_portgroup(group, ind, out)
    if net.dnsmasq_options:
        out.append(f"{ind}<dnsmasq:options>\n")
        for option in net.dnsmasq_options:
            out.append(f"{ind}{INDENT}<dnsmasq:option value='{escape(option)}'/>\n")
        out.append(f"{ind}</dnsmasq:options>\n")
    out.append("</network>\n")
    return "".join(out)


__all__ = [
    "format_network",
    "format_portgroup",
    "format_dhcp_host",
    "format_dhcp_range",
    "format_ip",
    "format_route",
    "format_dns",
    "format_forward",
    "format_bandwidth",
    "format_vlan",
    "format_virtualport",
    "format_ip_address",
    "escape",
    "dump_metadata",
]
