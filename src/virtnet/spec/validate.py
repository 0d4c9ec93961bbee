"""Semantic validation of a network definition: the rules libvirt 9.0 applies when a network is
defined, plus a few of our own where a value would be unsafe to hand on to dnsmasq or a command.

``validate`` is pure (no host access): it only looks at the model. Rules that need the host (is
the forward dev there, is a PCI device an SR-IOV VF, is the subnet free) belong to start time.

Two stages, as in libvirt: the rules its XML parser applies, and those its network driver
adds when a network is defined (``validate(net, stage=...)``).

Every broken rule gives one ``Problem`` with the element path (``/network/ip[1]/dhcp/range[2]``),
the offending value, and a reason that names the value. Elements that may repeat carry their
1-based position among same-named siblings.

Where we are stricter than libvirt 9.0, on purpose:
- interface and bridge names must be names the kernel accepts (libvirt fails only at start);
- a DHCP host's ip must lie in its <ip>'s subnet (dnsmasq would silently never hand it out);
- <forward> may list only one kind of pool (<interface>, <address> or <pf>): libvirt silently
  drops the kinds it does not use;
- control characters, and separators that would change the meaning of a dnsmasq option line
  (',' in single-valued fields, '/' in domains, whitespace in host names), are refused in
  values that reach dnsmasq's configuration or hosts files;
- an <ip> must yield a usable subnet (prefix 0 or an address without a classful default).
Newer libvirt features are accepted as a superset: vlan on a host bridge, forward mode='open'
without an <ip>, a DNS forwarder port, <domain register>.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from virtnet.errors import Problem, ValidationError
from virtnet.ids import network_name_problem
from virtnet.spec.model import (
    Bandwidth,
    BandwidthRate,
    DhcpHost,
    DhcpRange,
    DnsSrv,
    Forward,
    ForwardDriverName,
    ForwardMode,
    IpDef,
    Lease,
    LeaseUnit,
    NativeVlanMode,
    Network,
    NetworkFamily,
    Route,
    VirtualPort,
    VirtualPortType,
    Vlan,
    family_of,
)
from virtnet.spec.validate_base import (
    UUID_RE,
    control_char,
    describe,
    ifname_problem,
    ip_subnet,
    ip_version,
    libvirt_prefix,
    mac_problem,
    unsafe_char,
)

MAX_VLAN_ID = 4095
SRV_SERVICE_MAX = 512 - 30  # RFC 2782 record limit minus the SRV overhead, as libvirt
SRV_SERVICE_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/*"
)
SRV_PROTOCOL_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-+/"
)
DHCP_ID_CHARS = frozenset("0123456789abcdefABCDEF:")
PROFILE_ID_MAX = 39  # IFLA_VF_PORT_PROFILE_MAX (40) minus the NUL
MIN_LEASE_SECONDS = 120  # dnsmasq's minimum lease time


def validate(net: Network, *, stage: Literal["parse", "define"] = "define") -> list[Problem]:
    """All semantic problems of ``net``, in the order of libvirt's canonical layout; an empty
    list means valid.

    ``stage='define'`` (the default) applies every rule: what libvirt refuses when a network is
    defined. ``stage='parse'`` leaves out the rules libvirt applies only in its network driver
    at define time (networkValidate: elements a forward mode cannot use, one DHCP per family,
    portgroup defaults and names, vlan support...), i.e. it gives what libvirt's XML parser
    alone refuses, as in its networkxml2xml tests."""
    checker = _Checker(net)
    checker.run()
    if stage == "parse":
        return [p for p in checker.problems if id(p) not in checker.define_only]
    return checker.problems


def check(net: Network, source: str | None = None) -> None:
    """Raise ``ValidationError`` listing every problem of ``net``; return if it is valid."""
    problems = validate(net)
    if problems:
        raise ValidationError(problems, source=source)


# --- the checker ------------------------------------------------------------------------


class _Checker:
    def __init__(self, net: Network) -> None:
        self.net = net
        self.mode = net.forward_mode
        # the registry's classification (drivers.driver_for reads the same function); the
        # definition layer never imports a driver
        self.family = family_of(net)
        # own bridge: addresses, dnsmasq and firewall are ours to give
        self.own_bridge = self.family is NetworkFamily.OWN_BRIDGE
        self.problems: list[Problem] = []
        self.define_only: set[int] = set()  # id() of problems from define-time-only rules

    def add(self, path: str, value: object, message: str, at_define: bool = False) -> None:
        """Record a problem; ``at_define`` marks a rule libvirt applies only when defining."""
        problem = Problem(path=path, message=message, value=None if value is None else str(value))
        self.problems.append(problem)
        if at_define:
            self.define_only.add(id(problem))

    def run(self) -> None:
        # roughly the order of libvirt's canonical layout
        self.check_identity()
        self.check_forward()
        self.check_bridge()
        self.check_mtu()
        self.check_mac()
        self.check_domain()
        self.check_dns()
        self.check_network_bandwidth()
        self.check_ips()
        self.check_routes()
        if self.net.virtualport is not None:
            self.check_virtualport(self.net.virtualport, "/network/virtualport", True)
        self.check_vlans_and_portgroups()
        self.check_dnsmasq_options()

    # --- name, uuid, title ----------------------------------------------------------

    def check_identity(self) -> None:
        net = self.net
        if not net.name:
            self.add("/network/name", net.name, "the network name is empty")
        else:
            # the one check of names that become file names (the parser applies it too)
            problem = network_name_problem(net.name)
            if problem is not None:
                self.add("/network/name", net.name, problem)
        if net.uuid is not None and not UUID_RE.match(net.uuid):
            self.add("/network/uuid", net.uuid,
                     f"uuid '{net.uuid}' is not of the form 8-4-4-4-12 hex digits")
        if net.title is not None and ("\n" in net.title or "\r" in net.title):
            self.add("/network/title", net.title, "Network title can't contain newlines")

    # --- bridge, mac, mtu, domain ---------------------------------------------------

    def check_bridge(self) -> None:
        bridge = self.net.bridge
        mode = self.mode.value
        if bridge is None:
            return
        path = "/network/bridge"
        if bridge.name is not None:
            # '%d' is a template libvirt fills with a free number at define time
            concrete = bridge.name.replace("%d", "0")
            reason = ifname_problem(concrete)
            if reason is not None:
                self.add(path, bridge.name,
                         f"bridge name '{bridge.name}' {reason}: not a valid interface name")
        # macvtap and VFs: guests get host devices, no bridge of ours nor the host's
        devices = self.family in (NetworkFamily.DIRECT, NetworkFamily.HOSTDEV)
        if devices and bridge.name is not None:
            self.add(path, bridge.name,
                     f"bridge name '{bridge.name}' is not allowed with forward "
                     f"mode='{mode}'")
        # mode 'bridge' without a bridge name is macvtap too, yet may keep the attribute
        if devices and self.mode is not ForwardMode.BRIDGE \
                and bridge.mac_table_manager is not None:
            self.add(path, bridge.mac_table_manager.value,
                     f"macTableManager='{bridge.mac_table_manager.value}' is not allowed "
                     f"with forward mode='{mode}'")
        if not self.own_bridge:
            if bridge.delay:
                self.add(path, bridge.delay,
                         f"bridge delay='{bridge.delay}' is only allowed with an isolated, "
                         f"nat, route or open network, not forward mode='{mode}'")
            if not bridge.stp:
                self.add(path, "off",
                         f"bridge stp='off' is only allowed with an isolated, nat, route or "
                         f"open network, not forward mode='{mode}'")
            if bridge.zone is not None:
                self.add(path, bridge.zone,
                         f"bridge zone='{bridge.zone}' is only allowed with an isolated, nat, "
                         f"route or open network, not forward mode='{mode}'")
        if bridge.zone is not None and control_char(bridge.zone) is not None:
            self.add(path, bridge.zone, f"bridge zone {bridge.zone!r} contains a control "
                     "character")

    def check_mac(self) -> None:
        mac = self.net.mac
        if mac is None:
            return
        reason = mac_problem(mac)
        if reason is not None:
            self.add("/network/mac", mac, f"bridge MAC address '{mac}' {reason}")
        if not self.own_bridge:
            self.add("/network/mac", mac,
                     f"<mac address='{mac}'> is not allowed with forward mode="
                     f"'{self.mode.value}': there is no bridge of ours to give it to",
                     at_define=True)

    def check_mtu(self) -> None:
        mtu = self.net.mtu
        if mtu is None:
            return
        if mtu < 0:
            self.add("/network/mtu", mtu, f"mtu size '{mtu}' is negative")
        # libvirt treats size 0 as "not given"
        if mtu and not self.own_bridge:
            self.add("/network/mtu", mtu,
                     f"mtu size '{mtu}' is only allowed with an isolated, nat, route or open "
                     f"network, not forward mode='{self.mode.value}'")

    def check_domain(self) -> None:
        domain = self.net.domain
        if domain is None:
            return
        path = "/network/domain"
        if not self.own_bridge:
            self.add(path, domain.name,
                     f"<domain name='{domain.name}'> is not allowed with forward "
                     f"mode='{self.mode.value}': there is no DNS server of ours", at_define=True)
        if not domain.name:
            self.add(path, domain.name, "the domain name is empty")
        else:
            # dnsmasq gets 'domain=NAME' and 'local=/NAME/'
            self._dns_name(path, "domain name", domain.name, forbidden=",/")

    def _dns_name(self, path: str, what: str, value: str, forbidden: str = ",") -> None:
        bad = unsafe_char(value, forbidden=forbidden, no_space=True)
        if bad is not None:
            self.add(path, value, f"{what} {value!r} contains {describe(bad)}, which would "
                     "change the meaning of dnsmasq's configuration")

    # --- dns ------------------------------------------------------------------------

    def check_dns(self) -> None:
        dns = self.net.dns
        records = bool(dns.txts or dns.hosts or dns.srvs)
        if dns.enable is False and (records or dns.forwarders):
            self.add("/network/dns", "no",
                     "DNS is disabled (enable='no') but <dns> has forwarders or records: "
                     "nothing would serve them")
        if records and not self.own_bridge:
            self.add("/network/dns", self.mode.value,
                     f"DNS records (<host>, <txt>, <srv>) are not allowed with forward "
                     f"mode='{self.mode.value}': there is no DNS server of ours",
                     at_define=True)
        for index, forwarder in enumerate(dns.forwarders, start=1):
            path = f"/network/dns/forwarder[{index}]"
            if forwarder.addr is None and forwarder.domain is None:
                self.add(path, None, "a DNS forwarder needs an 'addr' or a 'domain'")
            if forwarder.domain is not None:
                # dnsmasq gets 'server=/DOMAIN/ADDR'
                self._dns_name(path, "forwarder domain", forwarder.domain, forbidden="/")
            if forwarder.port is not None:
                if not 1 <= forwarder.port <= 65535:
                    self.add(path, forwarder.port,
                             f"forwarder port '{forwarder.port}' is outside 1..65535")
                if forwarder.addr is None:
                    self.add(path, forwarder.port,
                             f"forwarder port '{forwarder.port}' needs an 'addr'")
        for index, txt in enumerate(dns.txts, start=1):
            path = f"/network/dns/txt[{index}]"
            bad = unsafe_char(txt.name, forbidden=" ,")
            if bad is not None:
                self.add(path, txt.name,
                         f"DNS TXT record name {txt.name!r} contains {describe(bad)}")
            bad = control_char(txt.value)
            if bad is not None:
                self.add(path, txt.value,
                         f"DNS TXT record value {txt.value!r} contains {describe(bad)}")
        for index, host in enumerate(dns.hosts, start=1):
            path = f"/network/dns/host[{index}]"
            if host.ip is None:
                self.add(path, None, "a DNS host needs an 'ip'")
            if not host.hostnames:
                self.add(path, host.ip, f"DNS host '{host.ip}' has no <hostname>")
            for name_index, hostname in enumerate(host.hostnames, start=1):
                name_path = f"{path}/hostname[{name_index}]"
                if not hostname:
                    self.add(name_path, hostname, f"empty hostname for DNS host '{host.ip}'")
                else:
                    # the addn-hosts file separates names by whitespace
                    self._dns_name(name_path, "DNS hostname", hostname, forbidden="")
        for index, srv in enumerate(dns.srvs, start=1):
            self.check_srv(index, srv)

    def check_srv(self, index: int, srv: DnsSrv) -> None:
        path = f"/network/dns/srv[{index}]"
        if srv.service is None:
            self.add(path, None, "a DNS SRV record needs a 'service'")
        else:
            if len(srv.service.encode()) > SRV_SERVICE_MAX:
                self.add(path, srv.service, f"SRV service '{srv.service[:40]}...' is longer "
                         f"than {SRV_SERVICE_MAX} bytes")
            bad = next((c for c in srv.service if c not in SRV_SERVICE_CHARS), None)
            if bad is not None:
                self.add(path, srv.service,
                         f"SRV service {srv.service!r} contains the invalid character {bad!r}")
        if srv.protocol is None:
            self.add(path, None, "a DNS SRV record needs a 'protocol'")
        else:
            bad = next((c for c in srv.protocol if c not in SRV_PROTOCOL_CHARS), None)
            if bad is not None:
                self.add(path, srv.protocol, f"SRV protocol {srv.protocol!r} contains the "
                         f"invalid character {bad!r}")
        for name, minimum in (("port", 1), ("priority", 0), ("weight", 0)):
            value = getattr(srv, name)
            if value is None:
                continue
            if srv.target is None:
                self.add(path, value, f"SRV {name} '{value}' is not allowed without a target")
            if not minimum <= value <= 65535:
                self.add(path, value, f"SRV {name} '{value}' is outside {minimum}..65535")
        for name in ("domain", "target"):
            value = getattr(srv, name)
            if value:
                self._dns_name(path, f"SRV {name}", value)

    # --- portgroups and vlans -------------------------------------------------------

    def check_vlans_and_portgroups(self) -> None:
        net = self.net
        if net.vlan is not None:
            self.check_vlan(net.vlan, "/network/vlan")
        ovs_network = (net.virtualport is not None
                       and net.virtualport.type is VirtualPortType.OPENVSWITCH)
        host_bridge = self.family is NetworkFamily.HOST_BRIDGE
        # Transparent vlans need a switch that tags: SR-IOV VFs, macvtap passthrough, Open
        # vSwitch, or (newer libvirt) a Linux host bridge.
        vlan_allowed = (
            self.family is NetworkFamily.HOSTDEV or self.mode is ForwardMode.PASSTHROUGH
            or (self.mode is ForwardMode.BRIDGE and ovs_network)
            or (host_bridge and net.virtualport is None)
        )
        vlan_used = net.vlan is not None and bool(net.vlan.tags)
        bad_vlan_index: int | None = None  # first portgroup whose vlan cannot be tagged
        seen_names: dict[str, int] = {}
        default_index: int | None = None
        for index, group in enumerate(net.portgroups, start=1):
            path = f"/network/portgroup[{index}]"
            if not group.name:
                self.add(path, group.name, "a portgroup needs a non-empty name")
            elif group.name in seen_names:
                self.add(path, group.name,
                         f"portgroup name '{group.name}' is already used by "
                         f"portgroup[{seen_names[group.name]}]", at_define=True)
            else:
                seen_names[group.name] = index
            if group.default:
                if default_index is not None:
                    first = net.portgroups[default_index - 1].name
                    self.add(path, group.name,
                             f"portgroup '{group.name}' is marked default, but portgroup "
                             f"'{first}' already is; only one default is allowed",
                             at_define=True)
                else:
                    default_index = index
            if group.vlan is not None:
                self.check_vlan(group.vlan, f"{path}/vlan")
            if vlan_used or (group.vlan is not None and group.vlan.tags):
                if group.virtualport is not None:
                    if (self.mode is not ForwardMode.BRIDGE
                            or group.virtualport.type is not VirtualPortType.OPENVSWITCH):
                        bad_vlan_index = bad_vlan_index or index
                elif not vlan_allowed:
                    bad_vlan_index = bad_vlan_index or index
            if group.virtualport is not None:
                self.check_virtualport(group.virtualport, f"{path}/virtualport", False)
            if group.bandwidth is not None:
                self.check_bandwidth(group.bandwidth, f"{path}/bandwidth",
                                     f"portgroup '{group.name}'")
        if bad_vlan_index is not None:
            port = net.portgroups[bad_vlan_index - 1].virtualport
            kind = "" if port is None else (
                f", {port.type.value if port.type else 'untyped'} virtualport")
            self.add(f"/network/portgroup[{bad_vlan_index}]", self.mode.value,
                     f"a <vlan> applies to this portgroup, but its connection type (forward "
                     f"mode='{self.mode.value}'{kind}) does not support vlan tagging",
                     at_define=True)
        elif vlan_used and not vlan_allowed and default_index is None:
            # with a default portgroup every port gets one, so the loop above decided
            self.add("/network/vlan", self.mode.value,
                     f"<vlan> is not supported with forward mode='{self.mode.value}'"
                     + ("" if self.mode is not ForwardMode.BRIDGE else
                        " without a host bridge or an openvswitch virtualport"),
                     at_define=True)

    def check_vlan(self, vlan: Vlan, path: str) -> None:
        if not vlan.tags:
            self.add(path, None, "a <vlan> needs at least one <tag id='N'/>")
        native = 0
        for index, tag in enumerate(vlan.tags, start=1):
            tag_path = f"{path}/tag[{index}]"
            if not 0 <= tag.id <= MAX_VLAN_ID:
                self.add(tag_path, tag.id, f"vlan tag id '{tag.id}' is outside 0..{MAX_VLAN_ID}")
            if tag.native_mode is not None:
                native += 1
                if tag.native_mode is NativeVlanMode.DEFAULT:
                    self.add(tag_path, tag.native_mode.value,
                             "nativeMode='default' is not allowed: use 'tagged' or 'untagged'")
                if native == 2:
                    self.add(tag_path, tag.id,
                             f"vlan tag '{tag.id}' is a second native vlan; only one is allowed")
        if vlan.trunk is False:
            if len(vlan.tags) > 1:
                self.add(path, "no", f"trunk='no' with {len(vlan.tags)} vlan tags: more than "
                         "one tag requires trunk='yes'")
            if native:
                self.add(path, "no", "trunk='no' is not allowed with a native vlan")

    # --- bandwidth ------------------------------------------------------------------

    def check_network_bandwidth(self) -> None:
        if self.net.bandwidth is not None:
            self.check_bandwidth(self.net.bandwidth, "/network/bandwidth", "the network")

    def _bandwidth_allowed(self) -> bool:
        return self.family.shapes_bridge

    def check_bandwidth(self, bandwidth: Bandwidth, path: str, owner: str) -> None:
        if not self._bandwidth_allowed():
            self.add(path, self.mode.value,
                     f"<bandwidth> of {owner} is not supported with forward "
                     f"mode='{self.mode.value}'"
                     + (" without a host bridge" if self.mode is ForwardMode.BRIDGE else ""),
                     at_define=True)
        for direction in ("inbound", "outbound"):
            rate: BandwidthRate | None = getattr(bandwidth, direction)
            if rate is not None:
                self.check_rate(rate, f"{path}/{direction}", direction)

    def check_rate(self, rate: BandwidthRate, path: str, direction: str) -> None:
        for name in ("average", "peak", "burst", "floor"):
            value = getattr(rate, name)
            if value is not None and value < 0:
                self.add(path, value, f"{direction} {name} '{value}' is negative")
        if rate.average is None and rate.floor is None:
            self.add(path, None, f"<{direction}> needs an 'average' (or a 'floor')")
        for name in ("peak", "burst"):
            value = getattr(rate, name)
            if rate.average is None and value is not None:
                self.add(path, value, f"<{direction}> {name} '{value}' requires an 'average'")
        if rate.floor:
            if direction == "outbound":
                self.add(path, rate.floor,
                         f"floor '{rate.floor}' is allowed only in <inbound>, not <outbound>")
            else:
                # a floor is a guarantee for one interface, shared out of the network's average
                self.add(path, rate.floor,
                         f"floor '{rate.floor}' is not supported in a network's or portgroup's "
                         "<bandwidth> (only on an interface)")

    # --- virtualport ----------------------------------------------------------------

    def check_virtualport(self, port: VirtualPort, path: str, network_level: bool) -> None:
        if port.type is None and network_level:
            self.add(path, None, "the network's <virtualport> needs a 'type'")
        if port.type is VirtualPortType.NONE:
            self.add(path, "none", "virtualport type='none' is not a virtualport type: omit "
                     "the attribute instead")
        params = f"{path}/parameters"
        for name, attr, maximum in (("manager_id", "managerid", 0xFF),
                                    ("type_id", "typeid", 0xFFFFFF),
                                    ("type_id_version", "typeidversion", 0xFF)):
            value = getattr(port, name)
            if value is not None and not 0 <= value <= maximum:
                self.add(params, value, f"{attr} '{value}' is outside 0..{maximum:#x}")
        for name, attr in (("instance_id", "instanceid"), ("interface_id", "interfaceid")):
            value = getattr(port, name)
            if value is not None and not UUID_RE.match(value):
                self.add(params, value, f"{attr} '{value}' is not a UUID")
        if port.profile_id is not None:
            if len(port.profile_id.encode()) > PROFILE_ID_MAX:
                self.add(params, port.profile_id, f"profileid '{port.profile_id}' is longer "
                         f"than {PROFILE_ID_MAX} bytes")
            bad = control_char(port.profile_id)
            if bad is not None:
                self.add(params, port.profile_id,
                         f"profileid {port.profile_id!r} contains {describe(bad)}")
        allowed = {
            VirtualPortType.QBG: ("manager_id", "type_id", "type_id_version", "instance_id"),
            VirtualPortType.QBH: ("profile_id",),
            VirtualPortType.OPENVSWITCH: ("profile_id", "interface_id"),
        }
        if port.type in allowed:
            for name, attr in (("manager_id", "managerid"), ("type_id", "typeid"),
                               ("type_id_version", "typeidversion"),
                               ("instance_id", "instanceid"), ("profile_id", "profileid"),
                               ("interface_id", "interfaceid")):
                value = getattr(port, name)
                if value is not None and name not in allowed[port.type]:
                    self.add(params, value, f"{attr} '{value}' is not supported in "
                             f"<virtualport type='{port.type.value}'>")

    # --- ip, dhcp -------------------------------------------------------------------

    def check_ips(self) -> None:
        net = self.net
        if net.ips and not self.own_bridge:
            self.add("/network/ip[1]", net.ips[0].address,
                     f"<ip address='{net.ips[0].address}'> is not allowed with forward "
                     f"mode='{self.mode.value}': there is no bridge of ours to put addresses on",
                     at_define=True)
        if not net.ips and self.mode in (ForwardMode.NAT, ForwardMode.ROUTE):
            self.add("/network/forward", self.mode.value,
                     f"forward mode='{self.mode.value}' needs at least one <ip>: there is "
                     "nothing to forward without an address")
        dhcp_seen: dict[int, int] = {}
        for index, ip in enumerate(net.ips, start=1):
            path = f"/network/ip[{index}]"
            self.check_ip(ip, path)
            if ip.has_dhcp:
                version = ip_version(ip)
                if version in dhcp_seen:
                    self.add(f"{path}/dhcp", ip.address,
                             f"a second IPv{version} <ip> with <dhcp> ('{ip.address}'): DHCP is "
                             f"supported on one IPv{version} address per network (ip"
                             f"[{dhcp_seen[version]}] has it already)", at_define=True)
                else:
                    dhcp_seen[version] = index

    def check_ip(self, ip: IpDef, path: str) -> None:
        if ip.family not in (None, "ipv4", "ipv6"):
            self.add(path, ip.family, f"unknown family '{ip.family}': use 'ipv4' or 'ipv6'")
            return
        if ip.address is None:
            self.add(path, None, "an <ip> needs an 'address'")
            return
        address = ip.address
        if ip.family == "ipv6" and address.version != 6:
            self.add(path, address, f"family 'ipv6' given for the IPv4 address '{address}'")
            return
        if ip.family != "ipv6" and address.version != 4:
            self.add(path, address, f"IPv6 address '{address}' needs family='ipv6'")
            return
        maximum = 32 if address.version == 4 else 128
        if ip.netmask is not None:
            if address.version == 6:
                self.add(path, ip.netmask, f"netmask '{ip.netmask}' is not allowed for the "
                         f"IPv6 address '{address}': use 'prefix'")
            elif ip.prefix:
                self.add(path, ip.netmask, f"both netmask '{ip.netmask}' and prefix "
                         f"'{ip.prefix}' given for '{address}': use one")
            elif libvirt_prefix(ip) is None:
                self.add(path, ip.netmask, f"netmask '{ip.netmask}' is not contiguous")
        if ip.prefix is not None:
            if ip.prefix > maximum or ip.prefix < 0:
                self.add(path, ip.prefix, f"prefix '{ip.prefix}' for '{address}' is outside "
                         f"1..{maximum}")
            elif ip.prefix == 0:
                self.add(path, 0, f"prefix '0' for '{address}' is not a usable subnet")
        elif ip.netmask is None and libvirt_prefix(ip) is None:
            self.add(path, address, f"no prefix or netmask given and '{address}' has no "
                     "classful default (class D/E): give a prefix")
        elif ip.netmask is None and libvirt_prefix(ip) == 0:
            self.add(path, address, f"the unspecified address '{address}' without a prefix "
                     "gives prefix 0, which is not a usable subnet")
        subnet = ip_subnet(ip) if not (ip.netmask is not None and ip.prefix) else None
        if address.version == 6:
            if ip.tftp_root is not None:
                self.add(f"{path}/tftp", ip.tftp_root, f"<tftp root='{ip.tftp_root}'> is only "
                         "supported in an IPv4 <ip>")
            if ip.bootp is not None:
                self.add(f"{path}/dhcp/bootp", ip.bootp.file,
                         f"<bootp file='{ip.bootp.file}'> is only supported in an IPv4 <ip>")
        if ip.tftp_root is not None:
            # dnsmasq's tftp-root=DIR[,INTERFACE]
            bad = unsafe_char(ip.tftp_root, forbidden=",")
            if bad is not None:
                self.add(f"{path}/tftp", ip.tftp_root,
                         f"tftp root {ip.tftp_root!r} contains {describe(bad)}")
        if ip.bootp is not None:
            # dnsmasq's dhcp-boot=FILE,,SERVER
            bad = unsafe_char(ip.bootp.file, forbidden=",")
            if bad is not None:
                self.add(f"{path}/dhcp/bootp", ip.bootp.file,
                         f"bootp file {ip.bootp.file!r} contains {describe(bad)}")
            if not ip.bootp.file:
                self.add(f"{path}/dhcp/bootp", ip.bootp.file, "bootp file is empty")
        for index, dhcp_range in enumerate(ip.ranges, start=1):
            self.check_range(dhcp_range, ip, subnet, f"{path}/dhcp/range[{index}]")
        for index, host in enumerate(ip.hosts, start=1):
            self.check_host(host, ip, subnet, f"{path}/dhcp/host[{index}]")

    def check_range(self, dhcp_range: DhcpRange, ip: IpDef,
                    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
                    path: str) -> None:
        start, end = dhcp_range.start, dhcp_range.end
        text = f"{start} - {end}"
        assert ip.address is not None
        if start.version != end.version or start.version != ip.address.version:
            self.add(path, text, f"dhcp range {text} does not match the address family of "
                     f"ip '{ip.address}'")
            return
        if subnet is not None:
            if start not in subnet or end not in subnet:
                self.add(path, text, f"dhcp range {text} is not entirely inside {subnet}, "
                         f"the subnet of ip '{ip.address}'")
                return
            if start.version == 4:
                if start == subnet.network_address:
                    self.add(path, text, f"dhcp range {text} starts at the network address "
                             f"of {subnet}")
                if end == subnet.broadcast_address:
                    self.add(path, text, f"dhcp range {text} ends at the broadcast address "
                             f"of {subnet}")
        if int(start) > int(end):
            self.add(path, text, f"dhcp range {text} is reversed: start is after end")
        elif (int(start) >> 16) != (int(end) >> 16):
            # libvirt (and its lease accounting) limit a range to the last 16 address bits
            self.add(path, text, f"dhcp range {text} is too large: start and end must differ "
                     "only in the last 16 bits (at most 65536 addresses)")
        if dhcp_range.lease is not None:
            self.check_lease(dhcp_range.lease, f"{path}/lease")

    def check_host(self, host: DhcpHost, ip: IpDef,
                   subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
                   path: str) -> None:
        assert ip.address is not None
        ipv6 = ip.address.version == 6
        label = host.name or host.mac or host.id or str(host.ip)
        if host.mac is not None:
            if ipv6:
                self.add(path, host.mac, f"MAC address '{host.mac}' is not allowed in an "
                         "IPv6 static host: use 'id' or 'name'")
            reason = mac_problem(host.mac)
            if reason is not None:
                self.add(path, host.mac, f"dhcp host MAC address '{host.mac}' {reason}")
        if host.id is not None:
            bad = next((c for c in host.id if c not in DHCP_ID_CHARS), None)
            if bad is not None:
                self.add(path, host.id, f"dhcp host id {host.id!r} contains the invalid "
                         f"character {bad!r}: only hex digits and ':' are allowed")
        if host.name is not None:
            if not host.name or not (host.name[0].isascii() and host.name[0].isalnum()):
                self.add(path, host.name, f"dhcp host name {host.name!r} must start with a "
                         "letter or digit")
            else:
                # the dnsmasq hostsfile line is 'MAC,IP,NAME'
                self._dns_name(path, "dhcp host name", host.name)
        if ipv6:
            if host.id is None and host.name is None:
                self.add(path, label, f"IPv6 static host '{label}' needs an 'id' or a 'name'")
        elif host.mac is None and host.name is None:
            self.add(path, label, f"IPv4 static host '{label}' needs a 'mac' or a 'name'")
        if host.ip is None:
            self.add(path, label, f"static host '{label}' needs an 'ip'")
        elif host.ip.version != ip.address.version:
            self.add(path, host.ip, f"static host ip '{host.ip}' is not of the family of "
                     f"ip '{ip.address}'")
        elif subnet is not None and host.ip not in subnet:
            self.add(path, host.ip, f"static host ip '{host.ip}' is not inside {subnet}, the "
                     f"subnet of ip '{ip.address}'")
        if host.lease is not None:
            self.check_lease(host.lease, f"{path}/lease")

    def check_lease(self, lease: Lease, path: str) -> None:
        if lease.expiry < 0:
            self.add(path, lease.expiry, f"lease expiry '{lease.expiry}' is negative")
            return
        seconds = lease.seconds
        if seconds is not None and seconds < MIN_LEASE_SECONDS:
            unit = (lease.unit or LeaseUnit.MINUTES).value
            self.add(path, lease.expiry, f"lease time {lease.expiry} {unit} is shorter than "
                     "dnsmasq's 2 minute minimum (use expiry='0' for an infinite lease)")

    # --- routes ---------------------------------------------------------------------

    def check_routes(self) -> None:
        for index, route in enumerate(self.net.routes, start=1):
            self.check_route(route, f"/network/route[{index}]")

    def check_route(self, route: Route, path: str) -> None:
        if route.family not in (None, "ipv4", "ipv6"):
            self.add(path, route.family, f"unknown route family '{route.family}'")
            return
        if route.address is None or route.gateway is None:
            missing = "address" if route.address is None else "gateway"
            self.add(path, None, f"a <route> needs an '{missing}'")
            return
        version = 6 if route.family == "ipv6" else 4
        for what, value in (("address", route.address), ("gateway", route.gateway)):
            if value.version != version:
                hint = "" if route.family else " (add family='ipv6')"
                self.add(path, value, f"route {what} '{value}' is not IPv{version}{hint}")
        if route.address.version != version or route.gateway.version != version:
            return
        if route.metric is not None and route.metric < 1:
            self.add(path, route.metric, f"route metric '{route.metric}' must be at least 1")
        maximum = 32 if version == 4 else 128
        prefix: int | None
        if route.netmask is not None:
            if version == 6:
                self.add(path, route.netmask,
                         f"netmask '{route.netmask}' is not allowed in an IPv6 route")
                return
            if route.prefix is not None:
                self.add(path, route.netmask, f"both netmask '{route.netmask}' and prefix "
                         f"'{route.prefix}' given: use one")
                return
            inverted = ~int(route.netmask) & 0xFFFFFFFF
            if inverted & (inverted + 1):
                self.add(path, route.netmask, f"route netmask '{route.netmask}' is not "
                         "contiguous")
                return
            prefix = 32 - inverted.bit_length()
        else:
            # as libvirt: a route without prefix or netmask has prefix 0
            prefix = route.prefix or 0
        if not 0 <= prefix <= maximum:
            self.add(path, prefix, f"route prefix '{prefix}' is outside 0..{maximum}")
            return
        network = ipaddress.ip_network(f"{route.address}/{prefix}", strict=False)
        if network.network_address != route.address:
            self.add(path, route.address, f"route address '{route.address}' is not a network "
                     f"address for prefix {prefix} (did you mean '{network.network_address}'?)")
        # the gateway must be directly reachable: inside the subnet of one of our <ip>s
        for ip in self.net.ips:
            subnet = ip_subnet(ip) if ip.address is not None else None
            if subnet is not None and subnet.version == version and route.gateway in subnet:
                return
        self.add(path, route.gateway, f"route gateway '{route.gateway}' is not directly "
                 "reachable: it lies in the subnet of none of the network's <ip> elements")

    # --- forward --------------------------------------------------------------------

    def check_forward(self) -> None:
        forward = self.net.forward
        if forward is None:
            return
        mode = forward.mode
        path = "/network/forward"
        if forward.driver is ForwardDriverName.DEFAULT:
            self.add(f"{path}/driver", "default",
                     "forward driver name='default' is not allowed: use 'kvm' or 'vfio'")
        self.check_nat(forward, path)
        pool = [iface.dev for iface in forward.interfaces]
        if forward.dev is not None:
            reason = ifname_problem(forward.dev)
            if reason is not None:
                self.add(path, forward.dev, f"forward dev '{forward.dev}' {reason}: not a valid "
                         "interface name")
            if pool and pool[0] != forward.dev:
                self.add(f"{path}/interface[1]", pool[0],
                         f"<forward dev='{forward.dev}'> must match the first "
                         f"<interface dev='{pool[0]}'/>")
            if forward.addresses or forward.pfs:
                self.add(path, forward.dev, f"forward dev='{forward.dev}' cannot be combined "
                         "with <address> or <pf> elements")
            if not pool:
                pool = [forward.dev]
        seen: set[str] = set()
        for index, iface in enumerate(forward.interfaces, start=1):
            iface_path = f"{path}/interface[{index}]"
            if iface.dev in seen:
                self.add(iface_path, iface.dev,
                         f"interface '{iface.dev}' is listed more than once")
            seen.add(iface.dev)
            if iface.dev != forward.dev:
                reason = ifname_problem(iface.dev)
                if reason is not None:
                    self.add(iface_path, iface.dev, f"forward interface '{iface.dev}' {reason}: "
                             "not a valid interface name")
        seen_pci: set[tuple[int, int, int, int]] = set()
        for index, address in enumerate(forward.addresses, start=1):
            address_path = f"{path}/address[{index}]"
            key = (address.domain, address.bus, address.slot, address.function)
            if key in seen_pci:
                self.add(address_path, str(address),
                         f"PCI device '{address}' is listed more than once")
            seen_pci.add(key)
            for name, maximum in (("domain", 0xFFFFFFFF), ("bus", 0xFF), ("slot", 0x1F),
                                  ("function", 7)):
                value = getattr(address, name)
                if not 0 <= value <= maximum:
                    self.add(address_path, f"{value:#x}", f"PCI {name} '{value:#x}' is outside "
                             f"0..{maximum:#x}")
        if len(forward.pfs) > 1:
            self.add(f"{path}/pf[2]", forward.pfs[1].dev,
                     f"a second <pf dev='{forward.pfs[1].dev}'/>: only one <pf> is allowed")
        for index, pf in enumerate(forward.pfs, start=1):
            reason = ifname_problem(pf.dev)
            if reason is not None:
                self.add(f"{path}/pf[{index}]", pf.dev,
                         f"pf dev '{pf.dev}' {reason}: not a valid interface name")
        kinds = [kind for kind, present in (("<interface>", bool(forward.interfaces)),
                                            ("<address>", bool(forward.addresses)),
                                            ("<pf>", bool(forward.pfs))) if present]
        if len(kinds) > 1:
            self.add(path, " and ".join(kinds),
                     f"<forward> lists {' and '.join(kinds)} elements; they are mutually "
                     "exclusive", at_define=True)
        if self.family is NetworkFamily.HOSTDEV and pool:
            self.add(path, pool[0], f"forward mode='hostdev' lists the network device "
                     f"'{pool[0]}': hostdev pools are given by PCI <address> only",
                     at_define=True)
        if self.family is not NetworkFamily.HOSTDEV and forward.addresses:
            self.add(f"{path}/address[1]", str(forward.addresses[0]),
                     f"PCI device '{forward.addresses[0]}' in the pool of forward mode="
                     f"'{mode.value}': PCI addresses are only for mode='hostdev'",
                     at_define=True)
        if mode in (ForwardMode.NAT, ForwardMode.ROUTE, ForwardMode.OPEN):
            if mode is ForwardMode.OPEN and pool:
                self.add(path, pool[0], f"forward dev '{pool[0]}' is not allowed with forward "
                         "mode='open', which places no restriction on where traffic goes")
            elif len(pool) > 1:
                self.add(path, ", ".join(pool),
                         f"forward mode='{mode.value}' supports one forward interface, not "
                         f"{len(pool)} ({', '.join(pool)})")
        bridge_name = self.net.bridge_name
        if not self.own_bridge:
            if bridge_name is not None and (pool or forward.pfs):
                self.add(path, bridge_name, f"forward mode='{mode.value}' can use bridge "
                         f"'{bridge_name}' or a forward device pool, not both")

    def check_nat(self, forward: Forward, path: str) -> None:
        nat = forward.nat
        if nat is None:
            return
        nat_path = f"{path}/nat"
        if forward.mode is not ForwardMode.NAT:
            self.add(nat_path, forward.mode.value,
                     f"<nat> is only allowed with forward mode='nat', not '{forward.mode.value}'")
        start, end = nat.address_start, nat.address_end
        if (start is None) != (end is None):
            given = start if start is not None else end
            self.add(f"{nat_path}/address", given,
                     f"NAT address range gives only {'start' if end is None else 'end'} "
                     f"'{given}': both start and end are required")
        elif start is not None and end is not None and int(start) > int(end):
            self.add(f"{nat_path}/address", f"{start} - {end}",
                     f"NAT address range {start} - {end} is reversed")
        pstart, pend = nat.port_start, nat.port_end
        if (pstart is None) != (pend is None):
            given = pstart if pstart is not None else pend
            self.add(f"{nat_path}/port", given,
                     f"NAT port range gives only {'start' if pend is None else 'end'} "
                     f"'{given}': both start and end are required")
        elif pstart is not None and pend is not None:
            for name, value in (("start", pstart), ("end", pend)):
                if not 0 <= value <= 65535:
                    self.add(f"{nat_path}/port", value,
                             f"NAT port {name} '{value}' is outside 0..65535")
            if pend < pstart:
                self.add(f"{nat_path}/port", f"{pstart}-{pend}",
                         f"NAT port range {pstart}-{pend} is reversed")

    # --- dnsmasq options ------------------------------------------------------------

    def check_dnsmasq_options(self) -> None:
        for index, option in enumerate(self.net.dnsmasq_options, start=1):
            bad = control_char(option)
            if bad is not None:
                self.add(f"/network/dnsmasq:options/dnsmasq:option[{index}]", option,
                         f"dnsmasq option {option!r} contains {describe(bad)}: each option "
                         "must be one line")
