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
"""

from __future__ import annotations

import copy
import enum
import ipaddress
import re
from collections.abc import Callable

from lxml import etree

from virtnet.errors import UpdateError, XMLParseError
from virtnet.model import (
    DhcpHost,
    DhcpRange,
    DnsHost,
    DnsSrv,
    DnsTxt,
    ForwardInterface,
    IPAddress,
    IpDef,
    Network,
    PortGroup,
)
from virtnet.xml import parse as xml_parse


class UpdateCommand(enum.Enum):
    """virsh net-update's commands; values are the names virsh accepts."""

    ADD_FIRST = "add-first"
    ADD_LAST = "add-last"
    DELETE = "delete"
    MODIFY = "modify"

    @property
    def is_add(self) -> bool:
        return self in (UpdateCommand.ADD_FIRST, UpdateCommand.ADD_LAST)


class UpdateSection(enum.Enum):
    """virsh net-update's sections; values are the names virsh accepts."""

    BRIDGE = "bridge"
    DOMAIN = "domain"
    IP = "ip"
    IP_DHCP_HOST = "ip-dhcp-host"
    IP_DHCP_RANGE = "ip-dhcp-range"
    FORWARD = "forward"
    FORWARD_INTERFACE = "forward-interface"
    FORWARD_PF = "forward-pf"
    PORTGROUP = "portgroup"
    DNS_HOST = "dns-host"
    DNS_TXT = "dns-txt"
    DNS_SRV = "dns-srv"


# virsh's "add" is add-last.
COMMAND_ALIASES = {"add": UpdateCommand.ADD_LAST}

# Sections libvirt 9.0 names but refuses to update.
UNSUPPORTED_SECTIONS = frozenset(
    {
        UpdateSection.BRIDGE,
        UpdateSection.DOMAIN,
        UpdateSection.IP,
        UpdateSection.FORWARD,
        UpdateSection.FORWARD_PF,
    }
)

# The element each updatable section's snippet must be.
SECTION_ELEMENT = {
    UpdateSection.IP_DHCP_HOST: "host",
    UpdateSection.IP_DHCP_RANGE: "range",
    UpdateSection.FORWARD_INTERFACE: "interface",
    UpdateSection.PORTGROUP: "portgroup",
    UpdateSection.DNS_HOST: "host",
    UpdateSection.DNS_TXT: "txt",
    UpdateSection.DNS_SRV: "srv",
}

# Character sets and length limit libvirt applies to SRV service/protocol names; "." is out
# because it separates the fields of an SRV name.
SRV_SERVICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/*")
SRV_PROTOCOL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-+/")
SRV_SERVICE_MAX_LENGTH = 512 - 30  # a DNS record minus the SRV overhead (RFC 2782)
DHCP_ID_CHARS = frozenset("0123456789abcdefABCDEF:")
TXT_NAME_FORBIDDEN = frozenset(" ,")

_MAC_OCTET = re.compile(r"[0-9a-fA-F]{1,2}")


def parse_command(command: str) -> UpdateCommand:
    """The command named as virsh names it ("add" is "add-last")."""
    if command in COMMAND_ALIASES:
        return COMMAND_ALIASES[command]
    try:
        return UpdateCommand(command)
    except ValueError:
        names = ", ".join(["add", *(c.value for c in UpdateCommand)])
        raise UpdateError(f"unknown update command '{command}' (expected one of: {names})") from None


def parse_section(section: str) -> UpdateSection:
    """The section named as virsh names it."""
    try:
        return UpdateSection(section)
    except ValueError:
        names = ", ".join(s.value for s in UpdateSection)
        raise UpdateError(f"unknown update section '{section}' (expected one of: {names})") from None


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
    expected = SECTION_ELEMENT[update_section]
    updated = copy.deepcopy(net)
    handler = _HANDLERS[update_section]
    handler(_Update(updated, update_command, update_section, element, expected), parent_index)
    return updated


# --- plumbing --------------------------------------------------------------------------


class _Update:
    """One update in progress: the network copy being changed and the request."""

    def __init__(
        self,
        net: Network,
        command: UpdateCommand,
        section: UpdateSection,
        element: etree._Element,
        expected_element: str,
    ) -> None:
        self.net = net
        self.command = command
        self.section = section
        self.element = element
        self.expected_element = expected_element

    def error(self, message: str) -> UpdateError:
        return UpdateError(f"{self.section.value}: {message} in network '{self.net.name}'")

    def check_element_name(self) -> None:
        tag = self.element.tag
        name = etree.QName(tag).localname if isinstance(tag, str) else str(tag)
        if name != self.expected_element:
            raise self.error(
                f"unexpected element <{name}>, expected <{self.expected_element}>"
            )

    def refuse_modify(self, what: str) -> None:
        if self.command is UpdateCommand.MODIFY:
            raise self.error(f"{what} cannot be modified, only added or deleted")

    def parse(self, parser: Callable[..., object], path: str, *args: object) -> object:
        """Run one of the definition parsers on the snippet, reporting its errors as refusals."""
        try:
            return parser(self.element, path, *args)
        except XMLParseError as exc:
            raise self.error(f"invalid {_describe_element(self.element)}: {exc.message}") from None

    def insert_position(self, entries: list) -> int:
        return 0 if self.command is UpdateCommand.ADD_FIRST else len(entries)


def _read_snippet(xml: str, section: UpdateSection) -> etree._Element:
    try:
        return xml_parse.parse_fragment(xml, source=f"{section.value} snippet")
    except XMLParseError as exc:
        raise UpdateError(f"{section.value}: invalid XML snippet: {exc}") from None


def _describe_element(element: etree._Element) -> str:
    """The snippet's start tag, attributes in document order, for messages."""
    attrs = "".join(f" {key}='{value}'" for key, value in element.attrib.items())
    name = etree.QName(element.tag).localname if isinstance(element.tag, str) else "?"
    return f"<{name}{attrs}>"


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


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _family_name(ipv6: bool) -> str:
    return "IPv6" if ipv6 else "IPv4"


# --- which <ip> a dhcp update works on -----------------------------------------------


def _select_ip(update: _Update, parent_index: int) -> IpDef:
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


def _check_single_dhcp(update: _Update, ipdef: IpDef) -> None:
    """DHCP may be served on only one <ip> of each family; adding to a second one is refused."""
    for ip in update.net.ips:
        if ip is not ipdef and ip.is_ipv6 == ipdef.is_ipv6 and (ip.ranges or ip.hosts):
            raise update.error(
                f"DHCP is already configured on {_family_name(ip.is_ipv6)} address "
                f"{ip.address} (ip[{_ip_position(update.net, ip) + 1}]); only one "
                f"{_family_name(ipdef.is_ipv6)} address per network may have DHCP"
            )


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


def _read_dhcp_host_pattern(update: _Update, ipdef: IpDef) -> DhcpHost:
    """A <host> snippet of a delete: any of mac, name, ip (each checked as libvirt checks it)."""
    el = update.element
    mac = el.get("mac")
    host_id = el.get("id")
    name = el.get("name")
    ip_text = el.get("ip")
    if mac is not None:
        if ipdef.is_ipv6:
            raise update.error(
                f"a MAC address ('{mac}') cannot identify a host of the IPv6 address "
                f"{ipdef.address}; use id or name"
            )
        octets = _mac_octets(mac)
        if octets is None:
            raise update.error(f"invalid MAC address '{mac}' in <host>")
        if octets[0] & 1:
            raise update.error(f"MAC address '{mac}' in <host> is multicast, expected unicast")
    if host_id is not None:
        bad = next((ch for ch in host_id if ch not in DHCP_ID_CHARS), None)
        if bad is not None:
            raise update.error(f"invalid character '{bad}' in <host> id '{host_id}'")
    if name is not None and not (name[:1].isascii() and name[:1].isalnum()):
        raise update.error(f"invalid host name '{name}' in <host>: it must start with a letter or digit")
    ip = None
    if ip_text is not None:
        ip = _parse_ip(ip_text)
        if ip is None:
            raise update.error(f"invalid IP address '{ip_text}' in <host>")
    if mac is None and name is None and ip_text is None:
        raise update.error("a <host> to delete needs at least one of mac, name or ip")
    return DhcpHost(mac=mac, id=host_id, name=name, ip=ip)


def _update_dhcp_host(update: _Update, parent_index: int) -> None:
    update.check_element_name()
    ipdef = _select_ip(update, parent_index)
    hosts = ipdef.hosts
    path = f"/network/ip[{_ip_position(update.net, ipdef) + 1}]/dhcp/host"

    if update.command is UpdateCommand.DELETE:
        pattern = _read_dhcp_host_pattern(update, ipdef)
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

    new = update.parse(xml_parse.parse_dhcp_host, path, ipdef.is_ipv6)
    assert isinstance(new, DhcpHost)
    if _ip_family_of(new.ip) != _ip_family_of(ipdef.address):
        raise update.error(
            f"host address {new.ip} is not of the same family as its <ip> address {ipdef.address}"
        )

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
    prefix = ipdef.effective_prefix
    if prefix is None:
        return f"{text}: the <ip> address {ipdef.address} has no usable prefix"
    network = ipaddress.ip_network(f"{ipdef.address}/{prefix}", strict=False)
    where = f"{ipdef.address}/{prefix}"
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


def _update_dhcp_range(update: _Update, parent_index: int) -> None:
    update.check_element_name()
    ipdef = _select_ip(update, parent_index)
    update.refuse_modify("DHCP ranges")
    path = f"/network/ip[{_ip_position(update.net, ipdef) + 1}]/dhcp/range"
    new = update.parse(xml_parse.parse_dhcp_range, path)
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


def _update_forward_interface(update: _Update, parent_index: int) -> None:
    update.check_element_name()
    update.refuse_modify("forward interfaces")
    dev = update.element.get("dev")
    if dev is None:
        raise update.error("<interface> needs a dev attribute")
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
        new = update.parse(xml_parse.parse_forward_interface, "/network/forward/interface")
        assert isinstance(new, ForwardInterface)
        interfaces.insert(update.insert_position(interfaces), new)
    assert forward is not None
    # libvirt has no separate forward dev: it is always the pool's first interface.
    forward.dev = interfaces[0].dev if interfaces else None


# --- portgroup -------------------------------------------------------------------------


def _update_portgroup(update: _Update, parent_index: int) -> None:
    update.check_element_name()
    new = update.parse(xml_parse.parse_portgroup, "/network/portgroup")
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


# --- dns-host --------------------------------------------------------------------------


def _read_dns_host_pattern(update: _Update) -> tuple[IPAddress | None, list[str]]:
    """A DNS <host> snippet of a delete: an ip, hostnames, or both."""
    el = update.element
    ip_text = el.get("ip")
    ip = None
    if ip_text is not None:
        ip = _parse_ip(ip_text)
        if ip is None:
            raise update.error(f"invalid IP address '{ip_text}' in DNS <host>")
    names: list[str] = []
    for child in el:
        if not isinstance(child.tag, str) or etree.QName(child).localname != "hostname":
            continue
        # An empty <hostname/> is skipped, as libvirt skips an element without content.
        if len(child) == 0 and child.text is None:
            continue
        text = "".join(child.itertext())
        if not text:
            raise update.error("empty <hostname> in DNS <host>")
        names.append(text)
    if ip is None and not names:
        raise update.error("a DNS <host> to delete needs an ip or at least one <hostname>")
    return ip, names


def _dns_host_text(ip: IPAddress | None, names: list[str]) -> str:
    attrs = f" ip='{ip}'" if ip is not None else ""
    return f"<host{attrs}>" + "".join(f"<hostname>{n}</hostname>" for n in names) + "</host>"


def _update_dns_host(update: _Update, parent_index: int) -> None:
    update.refuse_modify("DNS host records")
    update.check_element_name()
    hosts = update.net.dns.hosts
    if update.command.is_add:
        new = update.parse(xml_parse.parse_dns_host, "/network/dns/host")
        assert isinstance(new, DnsHost)
        # Several records may share a hostname; only the address must be new.
        existing = next((h for h in hosts if h.ip == new.ip), None)
        if existing is not None:
            raise update.error(
                f"{_dns_host_text(new.ip, new.hostnames)} duplicates the existing record "
                f"{_dns_host_text(existing.ip, existing.hostnames)}"
            )
        hosts.insert(update.insert_position(hosts), new)
        return

    ip, names = _read_dns_host_pattern(update)
    matching = [
        i
        for i, host in enumerate(hosts)
        if (ip is not None and host.ip == ip) or any(n in host.hostnames for n in names)
    ]
    described = _dns_host_text(ip, names)
    if not matching:
        raise update.error(f"no DNS host record matches {described}")
    if len(matching) > 1:
        raise update.error(
            f"{len(matching)} DNS host records match {described}; give enough to pick one"
        )
    del hosts[matching[0]]


# --- dns-txt ---------------------------------------------------------------------------


def _update_dns_txt(update: _Update, parent_index: int) -> None:
    update.refuse_modify("DNS TXT records")
    update.check_element_name()
    txts = update.net.dns.txts
    if update.command.is_add:
        new = update.parse(xml_parse.parse_dns_txt, "/network/dns/txt")
        assert isinstance(new, DnsTxt)
        name = new.name
    else:
        name_attr = update.element.get("name")
        if name_attr is None:
            raise update.error("a DNS <txt> to delete needs a name attribute")
        bad = next((ch for ch in name_attr if ch in TXT_NAME_FORBIDDEN), None)
        if bad is not None:
            raise update.error(f"character '{bad}' is not allowed in DNS TXT name '{name_attr}'")
        name = name_attr
    found = next((i for i, txt in enumerate(txts) if txt.name == name), None)
    if update.command.is_add:
        if found is not None:
            raise update.error(f"a DNS TXT record named '{name}' already exists")
        txts.insert(update.insert_position(txts), new)
        return
    if found is None:
        raise update.error(f"no DNS TXT record is named '{name}'")
    del txts[found]


# --- dns-srv ---------------------------------------------------------------------------


def _read_srv_pattern(update: _Update) -> DnsSrv:
    """A <srv> snippet of a delete: any of its attributes, each checked as libvirt checks it."""
    el = update.element
    service = el.get("service")
    protocol = el.get("protocol")
    if service is not None:
        if len(service.encode()) > SRV_SERVICE_MAX_LENGTH:
            raise update.error(
                f"SRV service '{service}' is longer than {SRV_SERVICE_MAX_LENGTH} bytes"
            )
        if any(ch not in SRV_SERVICE_CHARS for ch in service):
            raise update.error(f"invalid character in SRV service '{service}'")
    if protocol is not None and any(ch not in SRV_PROTOCOL_CHARS for ch in protocol):
        raise update.error(f"invalid character in SRV protocol '{protocol}'")
    srv = DnsSrv(
        service=service, protocol=protocol, domain=el.get("domain"), target=el.get("target")
    )
    for attr, limit in (("port", 65535), ("priority", 65535), ("weight", 65535)):
        text = el.get(attr)
        if text is None:
            continue
        if srv.target is None:
            raise update.error(f"SRV {attr} '{text}' is not allowed without a target")
        value = int(text) if text.strip().isdigit() else None
        if value is None or value > limit or (attr == "port" and value < 1):
            raise update.error(f"invalid SRV {attr} '{text}'")
        setattr(srv, attr, value)
    return srv


def _srv_text(srv: DnsSrv) -> str:
    attrs = "".join(
        f" {attr}='{getattr(srv, attr)}'"
        for attr in ("service", "protocol", "domain", "target", "port", "priority", "weight")
        if getattr(srv, attr) is not None
    )
    return f"<srv{attrs}/>"


def _update_dns_srv(update: _Update, parent_index: int) -> None:
    update.refuse_modify("DNS SRV records")
    update.check_element_name()
    srvs = update.net.dns.srvs
    if update.command.is_add:
        parsed = update.parse(xml_parse.parse_dns_srv, "/network/dns/srv")
        assert isinstance(parsed, DnsSrv)
        srv = parsed
    else:
        srv = _read_srv_pattern(update)

    # Only domain, service, protocol and target take part; each one given must be equal.
    def matches(existing: DnsSrv) -> bool:
        return all(
            getattr(srv, attr) is None or getattr(srv, attr) == getattr(existing, attr)
            for attr in ("domain", "service", "protocol", "target")
        )

    matching = [i for i, existing in enumerate(srvs) if matches(existing)]
    described = _srv_text(srv)
    if update.command.is_add:
        if matching:
            raise update.error(
                f"{described} duplicates the existing record {_srv_text(srvs[matching[0]])}"
            )
        srvs.insert(update.insert_position(srvs), srv)
        return
    if not matching:
        raise update.error(f"no DNS SRV record matches {described}")
    if len(matching) > 1:
        raise update.error(
            f"{len(matching)} DNS SRV records match {described}; give enough fields to pick one"
        )
    del srvs[matching[0]]


_HANDLERS: dict[UpdateSection, Callable[[_Update, int], None]] = {
    UpdateSection.IP_DHCP_HOST: _update_dhcp_host,
    UpdateSection.IP_DHCP_RANGE: _update_dhcp_range,
    UpdateSection.FORWARD_INTERFACE: _update_forward_interface,
    UpdateSection.PORTGROUP: _update_portgroup,
    UpdateSection.DNS_HOST: _update_dns_host,
    UpdateSection.DNS_TXT: _update_dns_txt,
    UpdateSection.DNS_SRV: _update_dns_srv,
}
