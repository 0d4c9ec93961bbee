"""The definition rules of addressing: each <ip> (prefix, netmask, TFTP and BOOTP), its DHCP
ranges, static hosts and lease times, and the static <route>s."""

from __future__ import annotations

import ipaddress

from virtnet.spec.model import DhcpHost, DhcpRange, ForwardMode, IpDef, Lease, LeaseUnit, Route
from virtnet.spec.validate_base import (
    Scan,
    describe,
    ip_subnet,
    ip_version,
    libvirt_prefix,
    mac_problem,
    unsafe_char,
)

DHCP_ID_CHARS = frozenset("0123456789abcdefABCDEF:")
MIN_LEASE_SECONDS = 120  # dnsmasq's minimum lease time


# --- ip, dhcp ---------------------------------------------------------------------------


def check_ips(scan: Scan) -> None:
    net = scan.net
    if net.ips and not scan.own_bridge:
        scan.add("/network/ip[1]", net.ips[0].address,
                 f"<ip address='{net.ips[0].address}'> is not allowed with forward "
                 f"mode='{scan.mode.value}': there is no bridge of ours to put addresses on",
                 at_define=True)
    if not net.ips and scan.mode in (ForwardMode.NAT, ForwardMode.ROUTE):
        scan.add("/network/forward", scan.mode.value,
                 f"forward mode='{scan.mode.value}' needs at least one <ip>: there is "
                 "nothing to forward without an address")
    dhcp_seen: dict[int, int] = {}
    for index, ip in enumerate(net.ips, start=1):
        path = f"/network/ip[{index}]"
        check_ip(scan, ip, path)
        if ip.has_dhcp:
            version = ip_version(ip)
            if version in dhcp_seen:
                scan.add(f"{path}/dhcp", ip.address,
                         f"a second IPv{version} <ip> with <dhcp> ('{ip.address}'): DHCP is "
                         f"supported on one IPv{version} address per network (ip"
                         f"[{dhcp_seen[version]}] has it already)", at_define=True)
            else:
                dhcp_seen[version] = index


def check_ip(scan: Scan, ip: IpDef, path: str) -> None:
    if ip.family not in (None, "ipv4", "ipv6"):
        scan.add(path, ip.family, f"unknown family '{ip.family}': use 'ipv4' or 'ipv6'")
        return
    if ip.address is None:
        scan.add(path, None, "an <ip> needs an 'address'")
        return
    address = ip.address
    if ip.family == "ipv6" and address.version != 6:
        scan.add(path, address, f"family 'ipv6' given for the IPv4 address '{address}'")
        return
    if ip.family != "ipv6" and address.version != 4:
        scan.add(path, address, f"IPv6 address '{address}' needs family='ipv6'")
        return
    maximum = 32 if address.version == 4 else 128
    if ip.netmask is not None:
        if address.version == 6:
            scan.add(path, ip.netmask, f"netmask '{ip.netmask}' is not allowed for the "
                     f"IPv6 address '{address}': use 'prefix'")
        elif ip.prefix:
            scan.add(path, ip.netmask, f"both netmask '{ip.netmask}' and prefix "
                     f"'{ip.prefix}' given for '{address}': use one")
        elif libvirt_prefix(ip) is None:
            scan.add(path, ip.netmask, f"netmask '{ip.netmask}' is not contiguous")
    if ip.prefix is not None:
        if ip.prefix > maximum or ip.prefix < 0:
            scan.add(path, ip.prefix, f"prefix '{ip.prefix}' for '{address}' is outside "
                     f"1..{maximum}")
        elif ip.prefix == 0:
            scan.add(path, 0, f"prefix '0' for '{address}' is not a usable subnet")
    elif ip.netmask is None and libvirt_prefix(ip) is None:
        scan.add(path, address, f"no prefix or netmask given and '{address}' has no "
                 "classful default (class D/E): give a prefix")
    elif ip.netmask is None and libvirt_prefix(ip) == 0:
        scan.add(path, address, f"the unspecified address '{address}' without a prefix "
                 "gives prefix 0, which is not a usable subnet")
    subnet = ip_subnet(ip) if not (ip.netmask is not None and ip.prefix) else None
    if address.version == 6:
        if ip.tftp_root is not None:
            scan.add(f"{path}/tftp", ip.tftp_root, f"<tftp root='{ip.tftp_root}'> is only "
                     "supported in an IPv4 <ip>")
        if ip.bootp is not None:
            scan.add(f"{path}/dhcp/bootp", ip.bootp.file,
                     f"<bootp file='{ip.bootp.file}'> is only supported in an IPv4 <ip>")
    if ip.tftp_root is not None:
        # dnsmasq's tftp-root=DIR[,INTERFACE]
        bad = unsafe_char(ip.tftp_root, forbidden=",")
        if bad is not None:
            scan.add(f"{path}/tftp", ip.tftp_root,
                     f"tftp root {ip.tftp_root!r} contains {describe(bad)}")
    if ip.bootp is not None:
        # dnsmasq's dhcp-boot=FILE,,SERVER
        bad = unsafe_char(ip.bootp.file, forbidden=",")
        if bad is not None:
            scan.add(f"{path}/dhcp/bootp", ip.bootp.file,
                     f"bootp file {ip.bootp.file!r} contains {describe(bad)}")
        if not ip.bootp.file:
            scan.add(f"{path}/dhcp/bootp", ip.bootp.file, "bootp file is empty")
    for index, dhcp_range in enumerate(ip.ranges, start=1):
        check_range(scan, dhcp_range, ip, subnet, f"{path}/dhcp/range[{index}]")
    for index, host in enumerate(ip.hosts, start=1):
        check_host(scan, host, ip, subnet, f"{path}/dhcp/host[{index}]")


def check_range(scan: Scan, dhcp_range: DhcpRange, ip: IpDef,
                subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
                path: str) -> None:
    start, end = dhcp_range.start, dhcp_range.end
    text = f"{start} - {end}"
    assert ip.address is not None
    if start.version != end.version or start.version != ip.address.version:
        scan.add(path, text, f"dhcp range {text} does not match the address family of "
                 f"ip '{ip.address}'")
        return
    if subnet is not None:
        if start not in subnet or end not in subnet:
            scan.add(path, text, f"dhcp range {text} is not entirely inside {subnet}, "
                     f"the subnet of ip '{ip.address}'")
            return
        if start.version == 4:
            if start == subnet.network_address:
                scan.add(path, text, f"dhcp range {text} starts at the network address "
                         f"of {subnet}")
            if end == subnet.broadcast_address:
                scan.add(path, text, f"dhcp range {text} ends at the broadcast address "
                         f"of {subnet}")
    if int(start) > int(end):
        scan.add(path, text, f"dhcp range {text} is reversed: start is after end")
    elif (int(start) >> 16) != (int(end) >> 16):
        # libvirt (and its lease accounting) limit a range to the last 16 address bits
        scan.add(path, text, f"dhcp range {text} is too large: start and end must differ "
                 "only in the last 16 bits (at most 65536 addresses)")
    if dhcp_range.lease is not None:
        check_lease(scan, dhcp_range.lease, f"{path}/lease")


def check_host(scan: Scan, host: DhcpHost, ip: IpDef,
               subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
               path: str) -> None:
    assert ip.address is not None
    ipv6 = ip.address.version == 6
    label = host.name or host.mac or host.id or str(host.ip)
    if host.mac is not None:
        if ipv6:
            scan.add(path, host.mac, f"MAC address '{host.mac}' is not allowed in an "
                     "IPv6 static host: use 'id' or 'name'")
        reason = mac_problem(host.mac)
        if reason is not None:
            scan.add(path, host.mac, f"dhcp host MAC address '{host.mac}' {reason}")
    if host.id is not None:
        bad = next((c for c in host.id if c not in DHCP_ID_CHARS), None)
        if bad is not None:
            scan.add(path, host.id, f"dhcp host id {host.id!r} contains the invalid "
                     f"character {bad!r}: only hex digits and ':' are allowed")
    if host.name is not None:
        if not host.name or not (host.name[0].isascii() and host.name[0].isalnum()):
            scan.add(path, host.name, f"dhcp host name {host.name!r} must start with a "
                     "letter or digit")
        else:
            # the dnsmasq hostsfile line is 'MAC,IP,NAME'
            scan.dns_name(path, "dhcp host name", host.name)
    if ipv6:
        if host.id is None and host.name is None:
            scan.add(path, label, f"IPv6 static host '{label}' needs an 'id' or a 'name'")
    elif host.mac is None and host.name is None:
        scan.add(path, label, f"IPv4 static host '{label}' needs a 'mac' or a 'name'")
    if host.ip is None:
        scan.add(path, label, f"static host '{label}' needs an 'ip'")
    elif host.ip.version != ip.address.version:
        scan.add(path, host.ip, f"static host ip '{host.ip}' is not of the family of "
                 f"ip '{ip.address}'")
    elif subnet is not None and host.ip not in subnet:
        scan.add(path, host.ip, f"static host ip '{host.ip}' is not inside {subnet}, the "
                 f"subnet of ip '{ip.address}'")
    if host.lease is not None:
        check_lease(scan, host.lease, f"{path}/lease")


def check_lease(scan: Scan, lease: Lease, path: str) -> None:
    if lease.expiry < 0:
        scan.add(path, lease.expiry, f"lease expiry '{lease.expiry}' is negative")
        return
    seconds = lease.seconds
    if seconds is not None and seconds < MIN_LEASE_SECONDS:
        unit = (lease.unit or LeaseUnit.MINUTES).value
        scan.add(path, lease.expiry, f"lease time {lease.expiry} {unit} is shorter than "
                 "dnsmasq's 2 minute minimum (use expiry='0' for an infinite lease)")


# --- routes -----------------------------------------------------------------------------


def check_routes(scan: Scan) -> None:
    for index, route in enumerate(scan.net.routes, start=1):
        check_route(scan, route, f"/network/route[{index}]")


def check_route(scan: Scan, route: Route, path: str) -> None:
    if route.family not in (None, "ipv4", "ipv6"):
        scan.add(path, route.family, f"unknown route family '{route.family}'")
        return
    if route.address is None or route.gateway is None:
        missing = "address" if route.address is None else "gateway"
        scan.add(path, None, f"a <route> needs an '{missing}'")
        return
    version = 6 if route.family == "ipv6" else 4
    for what, value in (("address", route.address), ("gateway", route.gateway)):
        if value.version != version:
            hint = "" if route.family else " (add family='ipv6')"
            scan.add(path, value, f"route {what} '{value}' is not IPv{version}{hint}")
    if route.address.version != version or route.gateway.version != version:
        return
    if route.metric is not None and route.metric < 1:
        scan.add(path, route.metric, f"route metric '{route.metric}' must be at least 1")
    maximum = 32 if version == 4 else 128
    prefix: int | None
    if route.netmask is not None:
        if version == 6:
            scan.add(path, route.netmask,
                     f"netmask '{route.netmask}' is not allowed in an IPv6 route")
            return
        if route.prefix is not None:
            scan.add(path, route.netmask, f"both netmask '{route.netmask}' and prefix "
                     f"'{route.prefix}' given: use one")
            return
        inverted = ~int(route.netmask) & 0xFFFFFFFF
        if inverted & (inverted + 1):
            scan.add(path, route.netmask, f"route netmask '{route.netmask}' is not "
                     "contiguous")
            return
        prefix = 32 - inverted.bit_length()
    else:
        # as libvirt: a route without prefix or netmask has prefix 0
        prefix = route.prefix or 0
    if not 0 <= prefix <= maximum:
        scan.add(path, prefix, f"route prefix '{prefix}' is outside 0..{maximum}")
        return
    network = ipaddress.ip_network(f"{route.address}/{prefix}", strict=False)
    if network.network_address != route.address:
        scan.add(path, route.address, f"route address '{route.address}' is not a network "
                 f"address for prefix {prefix} (did you mean '{network.network_address}'?)")
    # the gateway must be directly reachable: inside the subnet of one of our <ip>s
    for ip in scan.net.ips:
        subnet = ip_subnet(ip) if ip.address is not None else None
        if subnet is not None and subnet.version == version and route.gateway in subnet:
            return
    scan.add(path, route.gateway, f"route gateway '{route.gateway}' is not directly "
             "reachable: it lies in the subnet of none of the network's <ip> elements")
