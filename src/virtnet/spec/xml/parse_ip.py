"""Reading a network's <ip> elements (address, netmask or prefix, tftp, and the <dhcp> ranges,
static hosts and bootp inside) and its <route> elements.

The DHCP range and host readers are public because net-update reads a single entry with them.
"""

from __future__ import annotations

from virtnet.spec.model import Bootp, DhcpHost, DhcpRange, IpDef, Lease, LeaseUnit, Route
from virtnet.spec.xml.document import Element
from virtnet.spec.xml.parse_common import (
    ULLONG_MAX,
    Kids,
    fail,
    parse_address,
    parse_enum,
    parse_ipv4,
    parse_mac,
    parse_netmask,
    parse_uint,
    required_attr,
    uint_attr,
    yes_no,
)

DHCP_ID_CHARS = frozenset("0123456789abcdefABCDEF:")


def _parse_lease(el: Element, path: str) -> Lease:
    expiry_value = el.get("expiry")
    if expiry_value is None:
        fail(el, path, "missing required attribute 'expiry' in <lease>")
    expiry = parse_uint(el, f"{path}/@expiry", "expiry", expiry_value, maximum=ULLONG_MAX,
                        what="lease expiry")
    unit = None
    unit_value = el.get("unit")
    if unit_value is not None:
        unit = parse_enum(el, f"{path}/@unit", "lease unit", LeaseUnit, unit_value)
    if expiry > 0:
        # dnsmasq's minimum lease time is two minutes.
        if (unit is LeaseUnit.SECONDS and expiry < 120) or (
            unit in (None, LeaseUnit.MINUTES) and expiry < 2
        ):
            fail(el, f"{path}/@expiry",
                 f"lease expiry '{expiry_value}' is shorter than the 2 minute minimum")
    return Lease(expiry=expiry, unit=unit)


def _optional_lease(el: Element, path: str) -> Lease | None:
    kids = Kids(el, path)
    found = kids.one("lease")
    return _parse_lease(*found) if found else None


def parse_dhcp_range(el: Element, path: str) -> DhcpRange:
    """<range start end> with an optional <lease>. Whether the range lies inside its
    subnet is checked by virtnet.spec.validate."""
    start_value = required_attr(el, path, "start")
    start = parse_address(el, f"{path}/@start", "start", start_value)
    end_value = required_attr(el, path, "end")
    end = parse_address(el, f"{path}/@end", "end", end_value)
    if start.version != end.version:
        fail(el, path, f"range start '{start_value}' and end '{end_value}' are of different "
             "address families")
    if int(start) > int(end):
        fail(el, path, f"reversed range: start '{start_value}' is after end '{end_value}'")
    return DhcpRange(start=start, end=end, lease=_optional_lease(el, path))


def parse_dhcp_host(el: Element, path: str, ipv6: bool, partial: bool = False) -> DhcpHost:
    """<host mac id name ip> inside <dhcp>. ``ipv6`` says whether the enclosing <ip> is IPv6
    (a MAC is then refused). ``partial`` accepts the incomplete form net-update uses to
    find an entry (any one of mac, name or ip)."""
    host = DhcpHost()
    mac = el.get("mac")
    if mac is not None:
        if ipv6:
            fail(el, f"{path}/@mac", f"a MAC address ('{mac}') is not allowed in an IPv6 "
                 "static host definition; use 'id' or 'name'")
        parse_mac(el, f"{path}/@mac", mac)
        # libvirt keeps the host MAC as written (it reaches dnsmasq and the formatter as is)
        host.mac = mac
    host_id = el.get("id")
    if host_id is not None:
        bad = next((c for c in host_id if c not in DHCP_ID_CHARS), None)
        if bad is not None or host_id == "":
            fail(el, f"{path}/@id", f"invalid DHCP client id '{host_id}': only hex digits and "
                 "':' are allowed")
        host.id = host_id
    name = el.get("name")
    if name is not None:
        if not name or not (name[0].isascii() and name[0].isalnum()):
            fail(el, f"{path}/@name", f"invalid host name '{name}': it must start with a "
                 "letter or digit")
        host.name = name
    ip_value = el.get("ip")
    if ip_value is not None:
        host.ip = parse_address(el, f"{path}/@ip", "ip", ip_value)
    if partial:
        if host.mac is None and host.name is None and host.ip is None:
            fail(el, path, "a static host needs at least one of 'mac', 'name' or 'ip'")
    else:
        if ipv6:
            if host.id is None and host.name is None:
                fail(el, path, "a static host in an IPv6 network needs an 'id' or a 'name'")
        elif host.mac is None and host.name is None:
            fail(el, path, "a static host in an IPv4 network needs a 'mac' or a 'name'")
        if host.ip is None:
            fail(el, path, "missing required attribute 'ip' in static host definition")
    host.lease = _optional_lease(el, path)
    return host


def _parse_dhcp(el: Element, path: str, ip: IpDef, ipv6: bool) -> None:
    kids = Kids(el, path)
    for child, child_path in kids.many("range"):
        ip.ranges.append(parse_dhcp_range(child, child_path))
    for child, child_path in kids.many("host"):
        ip.hosts.append(parse_dhcp_host(child, child_path, ipv6))
    found = kids.one("bootp")
    if found is not None:
        bootp_el, bootp_path = found
        if ipv6:
            fail(bootp_el, bootp_path, "<bootp> is only supported in an IPv4 <ip>")
        file_value = required_attr(bootp_el, bootp_path, "file")
        server = None
        server_value = bootp_el.get("server")
        if server_value is not None:
            server = parse_ipv4(bootp_el, f"{bootp_path}/@server", "server", server_value)
        ip.bootp = Bootp(file=file_value, server=server)


def parse_ip(el: Element, path: str) -> IpDef:
    """<ip family address netmask prefix localPtr> with <tftp> and <dhcp>."""
    ip = IpDef()
    kids = Kids(el, path)
    family = el.get("family") or None
    if family is not None and family not in ("ipv4", "ipv6"):
        fail(el, f"{path}/@family", f"unknown family '{family}': expected 'ipv4' or 'ipv6'")
    ip.family = family
    address_value = el.get("address") or None
    if address_value is None:
        fail(el, path, "missing required attribute 'address' in <ip>")
    ip.address = parse_address(el, f"{path}/@address", "address", address_value)
    netmask_value = el.get("netmask") or None
    prefix = uint_attr(el, path, "prefix")
    ip.local_ptr = yes_no(el, path, "localPtr")
    if family == "ipv6":
        if ip.address.version != 6:
            fail(el, f"{path}/@address", f"family 'ipv6' given for non-IPv6 address "
                 f"'{address_value}'")
        if netmask_value is not None:
            fail(el, f"{path}/@netmask", f"netmask '{netmask_value}' is not allowed for IPv6 "
                 "address; use 'prefix'")
        if prefix is not None and prefix > 128:
            fail(el, f"{path}/@prefix", f"IPv6 prefix '{prefix}' out of range 0..128")
    else:
        if ip.address.version != 4:
            fail(el, f"{path}/@address",
                 f"{'family ipv4' if family else 'no family'} given for non-IPv4 address "
                 f"'{address_value}' (add family='ipv6')")
        if netmask_value is not None:
            ip.netmask = parse_netmask(el, f"{path}/@netmask", netmask_value)
            if prefix:
                fail(el, path, "an <ip> cannot have both a 'prefix' and a 'netmask'")
        elif prefix is not None and prefix > 32:
            fail(el, f"{path}/@prefix", f"IPv4 prefix '{prefix}' out of range 0..32")
    # libvirt treats prefix 0 as "not given" (classful default for IPv4, 64 for IPv6)
    ip.prefix = prefix or None
    ipv6 = ip.address.version == 6
    found = kids.one("tftp")
    if found is not None:
        tftp_el, tftp_path = found
        if ipv6:
            fail(tftp_el, tftp_path, "<tftp> is only supported in an IPv4 <ip>")
        ip.tftp_root = required_attr(tftp_el, tftp_path, "root")
    found = kids.one("dhcp")
    if found is not None:
        _parse_dhcp(found[0], found[1], ip, ipv6)
    return ip


def parse_route(el: Element, path: str) -> Route:
    """<route family address netmask|prefix gateway metric>: the address must be the network
    address of the route. Whether the gateway is reachable is checked by virtnet.spec.validate."""
    route = Route()
    family = el.get("family")
    if family is not None and family not in ("ipv4", "ipv6"):
        fail(el, f"{path}/@family", f"unknown family '{family}': expected 'ipv4' or 'ipv6'")
    route.family = family
    route.prefix = uint_attr(el, path, "prefix")
    route.metric = uint_attr(el, path, "metric", minimum=1)
    address_value = required_attr(el, path, "address")
    gateway_value = required_attr(el, path, "gateway")
    route.address = parse_address(el, f"{path}/@address", "address", address_value)
    route.gateway = parse_address(el, f"{path}/@gateway", "gateway", gateway_value)
    netmask_value = el.get("netmask")
    want = 6 if family == "ipv6" else 4
    if route.address.version != want:
        fail(el, f"{path}/@address", f"route address '{address_value}' is not IPv{want}"
             + ("" if family else " (add family='ipv6')"))
    if route.gateway.version != want:
        fail(el, f"{path}/@gateway", f"route gateway '{gateway_value}' is not IPv{want}")
    if want == 6:
        if netmask_value is not None:
            fail(el, f"{path}/@netmask", "netmask is not allowed for an IPv6 route; use "
                 "'prefix'")
        if route.prefix is not None and route.prefix > 128:
            fail(el, f"{path}/@prefix", f"route prefix '{route.prefix}' out of range 0..128")
    else:
        if netmask_value is not None:
            route.netmask = parse_netmask(el, f"{path}/@netmask", netmask_value)
            if route.prefix is not None:
                fail(el, path, "a <route> cannot have both a 'prefix' and a 'netmask'")
        if route.prefix is not None and route.prefix > 32:
            fail(el, f"{path}/@prefix", f"route prefix '{route.prefix}' out of range 0..32")
    bits = 128 if want == 6 else 32
    if route.netmask is not None:
        prefix_len = bits - (~int(route.netmask) & 0xFFFFFFFF).bit_length()
    else:
        # as libvirt: no prefix and no netmask means prefix 0
        prefix_len = route.prefix or 0
    host_bits = (1 << (bits - prefix_len)) - 1
    if int(route.address) & host_bits:
        network_address = type(route.address)(int(route.address) & ~host_bits & (2**bits - 1))
        fail(el, f"{path}/@address", f"route address '{address_value}' is not a network "
             f"address for prefix {prefix_len} (did you mean '{network_address}'?)")
    return route
