"""net-update: add, delete or modify one entry of a network definition, as libvirt 9.0 does.

``apply_update`` is a pure function: it takes a parsed ``Network``, a command, a section and the
XML snippet of one entry, and returns a new ``Network`` (the input is never changed). Whether the
change also reaches a running network (libvirt's --live/--config/--current) is the driver's
business; this module only changes the definition.

Behaviour follows libvirt 9.0's network update code, including its quirks, so that a definition
updated here and by libvirt comes out the same:
- Sections bridge, domain, ip, forward and forward-pf are recognised but cannot be updated.
- DNS hosts, DNS TXT and SRV records, DHCP ranges and forward interfaces can only be added or
  deleted, never modified.
- The snippet of an added or modified entry must be complete (the same rules as inside a full
  definition); the snippet of a deleted entry is a pattern, and only the attributes given take
  part in the match.
- ``parent_index`` picks the <ip> element of a dhcp host/range update by its position among all
  <ip> elements; a negative index picks the first <ip> that already has DHCP, else the first IPv4
  one, else the first IPv6 one.
- Entries are the same entry when: dhcp host - same MAC, IP or name (add, modify), or every
  given attribute equal (delete); dhcp range - same start and end (a merely overlapping range is
  accepted, as libvirt does); DNS host - same IP (add), same IP or a shared hostname (delete);
  TXT - same name; SRV - every given one of domain, service, protocol, target equal.

Two refusals go beyond libvirt 9.0, because libvirt's result would be wrong or lost: a dhcp
host outside its <ip>'s subnet (virtnet's validation refuses it in any definition), and an
interface added to an isolated network (libvirt drops it silently when it writes the network).
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Callable

from lxml import etree

from virtnet.errors import UpdateError, XMLParseError
from virtnet.spec.model import (
    DhcpHost,
    DhcpRange,
    ForwardInterface,
    IPAddress,
    IpDef,
    Network,
    PortGroup,
)
from virtnet.spec import update_dns
from virtnet.spec.update_request import (
    COMMAND_ALIASES,
    SECTION_ELEMENT,
    UNSUPPORTED_SECTIONS,
    PendingUpdate,
    UpdateCommand,
    UpdateSection,
)
from virtnet.spec.validate_base import libvirt_prefix
from virtnet.spec.xml import parse as xml_parse
from virtnet.spec.xml.parse_forward import parse_forward_interface, parse_portgroup
from virtnet.spec.xml.parse_ip import parse_dhcp_host, parse_dhcp_range

# The request types live in update_request; they stay importable from here.
__all__ = [
    "COMMAND_ALIASES",
    "SECTION_ELEMENT",
    "UNSUPPORTED_SECTIONS",
    "UpdateCommand",
    "UpdateSection",
    "apply_update",
    "parse_command",
    "parse_section",
]



_MAC_OCTET = re.compile(r"[0-9a-fA-F]{1,2}")


def parse_command(command: str) -> UpdateCommand:
    """The command named as virsh names it ("add" is "add-last")."""
    if command in COMMAND_ALIASES:
        return COMMAND_ALIASES[command]
    try:
        return UpdateCommand(command)
    except ValueError:
        names = ", ".join(["add", *(c.value for c in UpdateCommand)])
        raise UpdateError(
            f"unknown update command '{command}' (expected one of: {names})"
        ) from None


def parse_section(section: str) -> UpdateSection:
    """The section named as virsh names it."""
    try:
        return UpdateSection(section)
    except ValueError:
        names = ", ".join(s.value for s in UpdateSection)
        raise UpdateError(
            f"unknown update section '{section}' (expected one of: {names})"
        ) from None


def apply_update(
    net: Network, command: str, section: str, xml: str, parent_index: int = -1
) -> Network:
    """Apply one net-update command to a copy of ``net`` and return the copy.

    ``command`` is add, add-first, add-last, delete or modify; ``section`` one of virsh's section
    names; ``xml`` the snippet of one entry. Raises UpdateError (and leaves ``net`` untouched)
    when libvirt 9.0 would refuse the update.
    """
    update_command = parse_command(command)
    update_section = parse_section(section)
    # libvirt reads the snippet before it looks at the section, so a malformed snippet is
    # reported as such even for a section that cannot be updated.
    element = _read_snippet(xml, update_section)
    if update_section in UNSUPPORTED_SECTIONS:
        raise UpdateError(
            f"{update_section.value}: this section of network '{net.name}' cannot be updated "
            "(libvirt 9.0 supports updating only ip-dhcp-host, ip-dhcp-range, forward-interface, "
            "portgroup, dns-host, dns-txt and dns-srv)"
        )
    updated = copy.deepcopy(net)
    _HANDLERS[update_section](
        PendingUpdate(updated, update_command, update_section, element), parent_index
    )
    return updated


# --- plumbing --------------------------------------------------------------------------


def _read_snippet(xml: str, section: UpdateSection) -> etree._Element:
    try:
        return xml_parse.parse_fragment(xml, source=f"{section.value} snippet")
    except XMLParseError as exc:
        raise UpdateError(f"{section.value}: invalid XML snippet: {exc}") from None


def _mac_octets(text: str) -> bytes | None:
    """The six octets of a colon-separated MAC address (1-2 hex digits each), or None."""
    parts = text.split(":")
    if len(parts) != 6 or not all(_MAC_OCTET.fullmatch(part) for part in parts):
        return None
    return bytes(int(part, 16) for part in parts)


def _same_mac(first: str | None, second: str | None) -> bool:
    if first is None or second is None:
        return False
    a, b = _mac_octets(first), _mac_octets(second)
    if a is None or b is None:
        return first.lower() == second.lower()
    return a == b


def _family_name(ipv6: bool) -> str:
    return "IPv6" if ipv6 else "IPv4"


# --- which <ip> a dhcp update works on -----------------------------------------------


def _select_ip(update: PendingUpdate, parent_index: int) -> IpDef:
    """The <ip> whose <dhcp> the update works on (see the module docstring)."""
    ips = update.net.ips
    if parent_index >= 0:
        if parent_index >= len(ips):
            raise update.error(
                f"there is no <ip> element at parent index {parent_index} "
                f"(the network has {len(ips)})"
            )
        return ips[parent_index]
    for ip in ips:
        if ip.ranges or ip.hosts:
            return ip
    ipv4 = update.net.ipv4_defs()
    if ipv4:
        return ipv4[0]
    ipv6 = update.net.ipv6_defs()
    if ipv6:
        return ipv6[0]
    raise update.error("there is no <ip> element to hold DHCP entries")


def _ip_position(net: Network, ipdef: IpDef) -> int:
    return next(i for i, ip in enumerate(net.ips) if ip is ipdef)


def _check_single_dhcp(update: PendingUpdate, ipdef: IpDef) -> None:
    """DHCP may be served on only one <ip> of each family; adding to a second one is refused."""
    for ip in update.net.ips:
        if ip is not ipdef and ip.is_ipv6 == ipdef.is_ipv6 and (ip.ranges or ip.hosts):
            raise update.error(
                f"DHCP is already configured on {_family_name(ip.is_ipv6)} address "
                f"{ip.address} (ip[{_ip_position(update.net, ip) + 1}]); only one "
                f"{_family_name(ipdef.is_ipv6)} address per network may have DHCP"
            )


def _subnet(ipdef: IpDef) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The subnet of an <ip>, with the prefix libvirt derives (prefix, netmask or class)."""
    prefix = libvirt_prefix(ipdef)
    if ipdef.address is None or prefix is None or prefix > ipdef.address.max_prefixlen:
        return None
    return ipaddress.ip_network(f"{ipdef.address}/{prefix}", strict=False)


def _ip_family_of(address: IPAddress | None) -> bool | None:
    """True for IPv6, False for IPv4, None when there is no address."""
    if address is None:
        return None
    return isinstance(address, ipaddress.IPv6Address)


# --- ip-dhcp-host ----------------------------------------------------------------------


def _host_text(mac: str | None, name: str | None, ip: object, host_id: str | None = None) -> str:
    parts = []
    if mac is not None:
        parts.append(f"mac='{mac}'")
    if host_id is not None:
        parts.append(f"id='{host_id}'")
    if name is not None:
        parts.append(f"name='{name}'")
    if ip is not None:
        parts.append(f"ip='{ip}'")
    return "<host " + " ".join(parts) + "/>" if parts else "<host/>"


def _update_dhcp_host(update: PendingUpdate, parent_index: int) -> None:
    update.check_element_name()
    ipdef = _select_ip(update, parent_index)
    hosts = ipdef.hosts
    path = f"/network/ip[{_ip_position(update.net, ipdef) + 1}]/dhcp/host"

    if update.command is UpdateCommand.DELETE:
        # A delete's snippet is a search pattern: any of mac, name and ip.
        pattern = update.parse(parse_dhcp_host, path, ipdef.is_ipv6, True)
        assert isinstance(pattern, DhcpHost)
        # Every attribute given must match; a host without a MAC matches any MAC (libvirt).
        for index, host in enumerate(hosts):
            if (
                (pattern.mac is None or host.mac is None or _same_mac(pattern.mac, host.mac))
                and (pattern.name is None or pattern.name == host.name)
                and (pattern.ip is None or pattern.ip == host.ip)
            ):
                del hosts[index]
                return
        raise update.error(
            "no DHCP host matches " + _host_text(pattern.mac, pattern.name, pattern.ip)
        )

    new = update.parse(parse_dhcp_host, path, ipdef.is_ipv6)
    assert isinstance(new, DhcpHost)
    if _ip_family_of(new.ip) != _ip_family_of(ipdef.address):
        raise update.error(
            f"host address {new.ip} is not of the same family as its <ip> address {ipdef.address}"
        )
    # libvirt 9.0 itself accepts such a host (dnsmasq then never hands it out); virtnet's
    # validation refuses it in a definition, so it is refused here already, in update terms.
    subnet = _subnet(ipdef)
    if subnet is not None and new.ip not in subnet:
        raise update.error(f"host address {new.ip} is outside the subnet {subnet} of its <ip>")

    def matches(host: DhcpHost) -> bool:
        # A host is the same entry if its MAC, IP or name is the same.
        return (
            _same_mac(new.mac, host.mac)
            or (new.ip is not None and new.ip == host.ip)
            or (new.name is not None and new.name == host.name)
        )

    described = _host_text(new.mac, new.name, new.ip, new.id)
    if update.command is UpdateCommand.MODIFY:
        for index, host in enumerate(hosts):
            if matches(host):
                hosts[index] = new
                return
        raise update.error(f"no existing DHCP host matches {described}")

    _check_single_dhcp(update, ipdef)
    existing = next((host for host in hosts if matches(host)), None)
    if existing is not None:
        raise update.error(
            f"{described} duplicates the existing entry "
            + _host_text(existing.mac, existing.name, existing.ip, existing.id)
        )
    hosts.insert(update.insert_position(hosts), new)


# --- ip-dhcp-range ---------------------------------------------------------------------


def _range_problem(ipdef: IpDef, start: IPAddress, end: IPAddress) -> str | None:
    """Why a DHCP range cannot belong to this <ip>, or None when it can."""
    text = f"range {start} - {end}"
    if start.version != end.version:
        return f"{text} mixes address families"
    if ipdef.address is None or start.version != ipdef.address.version:
        return f"{text} is not of the same family as its <ip> address {ipdef.address}"
    network = _subnet(ipdef)
    if network is None:
        return f"{text}: the <ip> address {ipdef.address} has no usable prefix"
    where = f"{ipdef.address}/{network.prefixlen}"
    if start not in network or end not in network:
        return f"{text} is not entirely within network {where}"
    if start.version == 4:
        if start == network.network_address:
            return f"{text} starts at the network address of {where}"
        if end == network.broadcast_address:
            return f"{text} ends at the broadcast address of {where}"
        # libvirt's historical size check: only the last two octets may differ.
        if int(start) >> 16 != int(end) >> 16:
            return f"{text} is too large (more than 65535 addresses)"
    elif int(start) >> 16 != int(end) >> 16:
        return f"{text} is too large (more than 65535 addresses)"
    if int(end) < int(start):
        return f"{text} is reversed (start after end)"
    return None


def _update_dhcp_range(update: PendingUpdate, parent_index: int) -> None:
    update.check_element_name()
    ipdef = _select_ip(update, parent_index)
    update.refuse_modify("DHCP ranges")
    path = f"/network/ip[{_ip_position(update.net, ipdef) + 1}]/dhcp/range"
    new = update.parse(parse_dhcp_range, path)
    assert isinstance(new, DhcpRange)
    problem = _range_problem(ipdef, new.start, new.end)
    if problem is not None:
        raise update.error(problem)

    ranges = ipdef.ranges
    found = next(
        (i for i, r in enumerate(ranges) if r.start == new.start and r.end == new.end), None
    )
    described = f"<range start='{new.start}' end='{new.end}'/>"
    if update.command is UpdateCommand.DELETE:
        if found is None:
            raise update.error(f"no DHCP range matches {described}")
        del ranges[found]
        return
    _check_single_dhcp(update, ipdef)
    if found is not None:
        raise update.error(f"{described} already exists")
    ranges.insert(update.insert_position(ranges), new)


# --- forward-interface -----------------------------------------------------------------


def _update_forward_interface(update: PendingUpdate, parent_index: int) -> None:
    update.check_element_name()
    update.refuse_modify("forward interfaces")
    new = update.parse(parse_forward_interface, "/network/forward/interface")
    assert isinstance(new, ForwardInterface)
    dev = new.dev
    forward = update.net.forward
    interfaces = forward.interfaces if forward is not None else []
    found = next((i for i, iface in enumerate(interfaces) if iface.dev == dev), None)
    described = f"<interface dev='{dev}'/>"

    if update.command is UpdateCommand.DELETE:
        if found is None:
            raise update.error(f"no forward interface matches {described}")
        if interfaces[found].connections > 0:
            raise update.error(
                f"forward interface '{dev}' is in use by {interfaces[found].connections} "
                "guest interface(s) and cannot be deleted"
            )
        del interfaces[found]
    else:
        if found is not None:
            raise update.error(f"{described} already exists")
        if forward is None:
            # libvirt would accept this and then drop it silently when the definition is
            # written out (an isolated network has no <forward> to hold it); say so instead.
            raise update.error(
                f"cannot add {described}: the network is isolated (it has no <forward> element)"
            )
        interfaces.insert(update.insert_position(interfaces), new)
    assert forward is not None
    # libvirt has no separate forward dev: it is always the pool's first interface.
    forward.dev = interfaces[0].dev if interfaces else None


# --- portgroup -------------------------------------------------------------------------


def _update_portgroup(update: PendingUpdate, parent_index: int) -> None:
    update.check_element_name()
    new = update.parse(parse_portgroup, "/network/portgroup")
    assert isinstance(new, PortGroup)
    groups = update.net.portgroups
    found_name = next((i for i, g in enumerate(groups) if g.name == new.name), None)
    # libvirt remembers the last default it sees.
    found_default = next(
        (i for i in range(len(groups) - 1, -1, -1) if groups[i].default), None
    )
    described = f"<portgroup name='{new.name}'>"
    if found_name is None and not update.command.is_add:
        raise update.error(f"no portgroup matches {described}")
    if found_name is not None and update.command.is_add:
        raise update.error(f"{described} already exists")
    if (
        update.command is not UpdateCommand.DELETE
        and new.default
        and found_default is not None
        and found_default != found_name
    ):
        raise update.error(
            f"cannot make portgroup '{new.name}' the default: portgroup "
            f"'{groups[found_default].name}' already is, and only one default is allowed"
        )
    if update.command is UpdateCommand.MODIFY:
        assert found_name is not None
        groups[found_name] = new
    elif update.command is UpdateCommand.DELETE:
        assert found_name is not None
        del groups[found_name]
    else:
        groups.insert(update.insert_position(groups), new)


_HANDLERS: dict[UpdateSection, Callable[[PendingUpdate, int], None]] = {
    UpdateSection.IP_DHCP_HOST: _update_dhcp_host,
    UpdateSection.IP_DHCP_RANGE: _update_dhcp_range,
    UpdateSection.FORWARD_INTERFACE: _update_forward_interface,
    UpdateSection.PORTGROUP: _update_portgroup,
    UpdateSection.DNS_HOST: update_dns.update_dns_host,
    UpdateSection.DNS_TXT: update_dns.update_dns_txt,
    UpdateSection.DNS_SRV: update_dns.update_dns_srv,
}
