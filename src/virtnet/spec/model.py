"""Typed model of a libvirt network definition (libvirt 9.0 Network XML, plus the newer
attributes users expect from 10.x-12.x where they do not clash).

Only data lives here, and :func:`family_of`, the one classification of forward modes (the
driver registry and the definition rules both read it): parsing is in ``virtnet.spec.xml.parse``,
formatting in ``virtnet.spec.xml.format``, semantic rules in ``virtnet.spec.validate``.

Conventions:
- An enumeration's member values are the exact XML strings, so one table drives both the
  parser and the formatter.
- ``None`` means "not given in the XML". A tri-state yes/no attribute is ``bool | None``.
- IP addresses are ``ipaddress`` objects, so they format canonically (as libvirt does).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DNSMASQ_NAMESPACE = "http://libvirt.org/schemas/network/dnsmasq/1.0"


class ForwardMode(enum.Enum):
    NONE = "none"  # isolated: never written as <forward mode='none'/>
    NAT = "nat"
    ROUTE = "route"
    OPEN = "open"
    BRIDGE = "bridge"
    PRIVATE = "private"
    VEPA = "vepa"
    PASSTHROUGH = "passthrough"
    HOSTDEV = "hostdev"

    @property
    def has_own_bridge(self) -> bool:
        """Modes where virtnet creates and addresses a bridge of its own."""
        return self in (ForwardMode.NONE, ForwardMode.NAT, ForwardMode.ROUTE, ForwardMode.OPEN)


class NetworkFamily(enum.Enum):
    """How a network gives its guests a link: the one classification of forward modes.

    The driver registry (:func:`virtnet.plan.drivers.driver_for`) picks a network's driver by it,
    and the definition rules (:mod:`virtnet.spec.validate`, which never imports a driver) read the
    same answer: one decision, :func:`family_of`, with two readers. The values are the names
    of the drivers that run each family.
    """

    OWN_BRIDGE = "bridged"  # none, nat, route, open: a bridge virtnet creates and addresses
    HOST_BRIDGE = "hostbridge"  # bridge with <bridge name='...'/>: a bridge the host has
    DIRECT = "direct"  # bridge without a bridge name, private, vepa, passthrough: macvtap
    HOSTDEV = "hostdev"  # SR-IOV virtual functions by PCI passthrough

    @property
    def shapes_bridge(self) -> bool:
        """Guests plug a tap into a bridge, so the network's own <bandwidth> has a device to
        shape (libvirt sets it on the bridge; other families have no such device)."""
        return self in (NetworkFamily.OWN_BRIDGE, NetworkFamily.HOST_BRIDGE)

    @property
    def floor(self) -> bool:
        """Ports may be guaranteed an inbound floor: libvirt grants one only on a bridge of
        the network's own, where it shapes the bridge's HTB tree."""
        return self is NetworkFamily.OWN_BRIDGE


class MacTableManager(enum.Enum):
    DEFAULT = "default"
    KERNEL = "kernel"
    LIBVIRT = "libvirt"


class ForwardDriverName(enum.Enum):
    DEFAULT = "default"
    KVM = "kvm"
    VFIO = "vfio"


class LeaseUnit(enum.Enum):
    SECONDS = "seconds"
    MINUTES = "minutes"
    HOURS = "hours"


class NativeVlanMode(enum.Enum):
    DEFAULT = "default"
    TAGGED = "tagged"
    UNTAGGED = "untagged"


class VirtualPortType(enum.Enum):
    NONE = "none"
    QBG = "802.1Qbg"
    QBH = "802.1Qbh"
    OPENVSWITCH = "openvswitch"
    MIDONET = "midonet"


# --- bandwidth, vlan, virtualport (shared by network and portgroup) -------------------


@dataclass
class BandwidthRate:
    """One direction of <bandwidth>: rates in kilobytes/s, burst in kibibytes."""

    average: int | None = None
    peak: int | None = None
    burst: int | None = None
    floor: int | None = None  # only meaningful for inbound


@dataclass
class Bandwidth:
    inbound: BandwidthRate | None = None
    outbound: BandwidthRate | None = None


@dataclass
class VlanTag:
    id: int
    native_mode: NativeVlanMode | None = None


@dataclass
class Vlan:
    tags: list[VlanTag] = field(default_factory=list)
    trunk: bool | None = None


@dataclass
class VirtualPort:
    """<virtualport type=...><parameters .../></virtualport>; ``type`` None when omitted."""

    type: VirtualPortType | None = None
    manager_id: int | None = None  # 802.1Qbg managerid (0-255)
    type_id: int | None = None  # 802.1Qbg typeid (24 bit)
    type_id_version: int | None = None  # 802.1Qbg typeidversion (0-255)
    instance_id: str | None = None  # 802.1Qbg instanceid (uuid)
    profile_id: str | None = None  # 802.1Qbh / openvswitch profileid
    interface_id: str | None = None  # openvswitch / midonet interfaceid (uuid)


@dataclass
class PortGroup:
    name: str
    default: bool = False
    virtualport: VirtualPort | None = None
    bandwidth: Bandwidth | None = None
    vlan: Vlan | None = None
    trust_guest_rx_filters: bool | None = None


# --- bridge, domain, forward ----------------------------------------------------------


@dataclass
class Bridge:
    name: str | None = None
    stp: bool = True
    delay: int = 0  # forward delay in seconds
    mac_table_manager: MacTableManager | None = None
    zone: str | None = None  # firewalld zone


@dataclass
class Domain:
    name: str
    local_only: bool | None = None
    register: bool | None = None  # newer libvirt: register with systemd-resolved


@dataclass
class NatRange:
    """<nat><address start end/><port start end/></nat> and its ipv6 attribute."""

    address_start: ipaddress.IPv4Address | None = None
    address_end: ipaddress.IPv4Address | None = None
    port_start: int | None = None
    port_end: int | None = None
    ipv6: bool | None = None


@dataclass
class ForwardInterface:
    dev: str
    connections: int = 0  # runtime only


@dataclass
class ForwardPf:
    dev: str
    connections: int = 0  # runtime only


@dataclass
class PciAddress:
    domain: int = 0
    bus: int = 0
    slot: int = 0
    function: int = 0

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


@dataclass
class Forward:
    mode: ForwardMode = ForwardMode.NAT
    # libvirt keeps 'dev' as the first pool interface; we keep both what was written and the
    # pool, and the formatter derives the attribute the way libvirt does.
    dev: str | None = None
    managed: bool = False  # hostdev only
    driver: ForwardDriverName | None = None
    nat: NatRange | None = None
    interfaces: list[ForwardInterface] = field(default_factory=list)
    pfs: list[ForwardPf] = field(default_factory=list)
    addresses: list[PciAddress] = field(default_factory=list)  # hostdev VF pool


# --- ip, dhcp, routes -----------------------------------------------------------------


@dataclass
class Lease:
    """<lease expiry='N' unit='...'/>: expiry 0 means infinite; unit None means minutes."""

    expiry: int
    unit: LeaseUnit | None = None

    @property
    def seconds(self) -> int | None:
        """Lease length in seconds, None for infinite."""
        if self.expiry == 0:
            return None
        factor = {None: 60, LeaseUnit.SECONDS: 1, LeaseUnit.MINUTES: 60, LeaseUnit.HOURS: 3600}
        return self.expiry * factor[self.unit]


@dataclass
class DhcpRange:
    start: IPAddress
    end: IPAddress
    lease: Lease | None = None


@dataclass
class DhcpHost:
    mac: str | None = None
    id: str | None = None  # DHCPv6 client id (DUID)
    name: str | None = None
    ip: IPAddress | None = None
    lease: Lease | None = None


@dataclass
class Bootp:
    file: str
    server: ipaddress.IPv4Address | None = None


@dataclass
class IpDef:
    family: str | None = None  # "ipv4" / "ipv6" as written; None when omitted
    address: IPAddress | None = None
    netmask: ipaddress.IPv4Address | None = None
    prefix: int | None = None
    local_ptr: bool | None = None
    tftp_root: str | None = None
    ranges: list[DhcpRange] = field(default_factory=list)
    hosts: list[DhcpHost] = field(default_factory=list)
    bootp: Bootp | None = None

    @property
    def is_ipv6(self) -> bool:
        if self.family is not None:
            return self.family == "ipv6"
        return isinstance(self.address, ipaddress.IPv6Address)

    @property
    def effective_prefix(self) -> int | None:
        """The prefix length from prefix, netmask, or the classful default for IPv4."""
        if self.prefix is not None:
            return self.prefix
        if self.netmask is not None:
            return ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}").prefixlen
        if self.address is not None and self.address.is_unspecified:
            return 0  # 0.0.0.0 or :: without a prefix means a default route
        if isinstance(self.address, ipaddress.IPv4Address):
            first = int(self.address) >> 24
            if first < 128:
                return 8
            if first < 192:
                return 16
            if first < 224:
                return 24
            return None
        if isinstance(self.address, ipaddress.IPv6Address):
            return 64
        return None

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        prefix = self.effective_prefix
        if self.address is None or prefix is None:
            return None
        return ipaddress.ip_interface(f"{self.address}/{prefix}")

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        iface = self.interface
        return iface.network if iface is not None else None

    @property
    def has_dhcp(self) -> bool:
        return bool(self.ranges or self.hosts)


@dataclass
class Route:
    family: str | None = None
    address: IPAddress | None = None
    netmask: ipaddress.IPv4Address | None = None
    prefix: int | None = None
    gateway: IPAddress | None = None
    metric: int | None = None

    @property
    def effective_prefix(self) -> int | None:
        if self.prefix is not None:
            return self.prefix
        if self.netmask is not None:
            return ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}").prefixlen
        if isinstance(self.address, ipaddress.IPv6Address):
            return 64
        if isinstance(self.address, ipaddress.IPv4Address):
            return IpDef(address=self.address).effective_prefix
        return None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        prefix = self.effective_prefix
        if self.address is None or prefix is None:
            return None
        return ipaddress.ip_network(f"{self.address}/{prefix}", strict=False)


# --- dns ------------------------------------------------------------------------------


@dataclass
class DnsForwarder:
    addr: IPAddress | None = None
    domain: str | None = None
    port: int | None = None  # newer libvirt


@dataclass
class DnsTxt:
    name: str
    value: str


@dataclass
class DnsHost:
    ip: IPAddress
    hostnames: list[str] = field(default_factory=list)


@dataclass
class DnsSrv:
    service: str | None = None
    protocol: str | None = None
    domain: str | None = None
    target: str | None = None
    port: int | None = None
    priority: int | None = None
    weight: int | None = None


@dataclass
class Dns:
    enable: bool | None = None
    forward_plain_names: bool | None = None
    forwarders: list[DnsForwarder] = field(default_factory=list)
    txts: list[DnsTxt] = field(default_factory=list)
    hosts: list[DnsHost] = field(default_factory=list)
    srvs: list[DnsSrv] = field(default_factory=list)


# --- the network ----------------------------------------------------------------------


@dataclass
class Network:
    name: str
    uuid: str | None = None  # canonical lowercase 8-4-4-4-12; assigned at define if None
    title: str | None = None
    description: str | None = None
    metadata: str | None = None  # the <metadata> element, serialized verbatim
    connections: int = 0  # runtime only
    ipv6: bool = False  # <network ipv6='yes'>: guest-to-guest IPv6 without a gateway
    trust_guest_rx_filters: bool | None = None
    forward: Forward | None = None  # None: isolated (mode none)
    bridge: Bridge | None = None
    mtu: int | None = None
    mac: str | None = None  # bridge MAC, lowercase
    domain: Domain | None = None
    dns: Dns = field(default_factory=Dns)
    vlan: Vlan | None = None
    bandwidth: Bandwidth | None = None
    port_isolated: bool | None = None  # <port isolated='yes'/>
    ips: list[IpDef] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    virtualport: VirtualPort | None = None
    portgroups: list[PortGroup] = field(default_factory=list)
    dnsmasq_options: list[str] = field(default_factory=list)

    @property
    def forward_mode(self) -> ForwardMode:
        return self.forward.mode if self.forward is not None else ForwardMode.NONE

    @property
    def uses_macvtap(self) -> bool:
        """Direct (macvtap) networks: bridge mode without a host bridge, private, vepa,
        passthrough."""
        return family_of(self) is NetworkFamily.DIRECT

    @property
    def bridge_name(self) -> str | None:
        return self.bridge.name if self.bridge is not None else None

    def ipv4_defs(self) -> list[IpDef]:
        return [ip for ip in self.ips if not ip.is_ipv6]

    def ipv6_defs(self) -> list[IpDef]:
        return [ip for ip in self.ips if ip.is_ipv6]

    def default_portgroup(self) -> PortGroup | None:
        for group in self.portgroups:
            if group.default:
                return group
        return None

    def portgroup(self, name: str) -> PortGroup | None:
        for group in self.portgroups:
            if group.name == name:
                return group
        return None


def family_of(net: Network) -> NetworkFamily:
    """NET's family, from its forward mode (and, for mode 'bridge', whether it names a host
    bridge: without one, libvirt gives guests macvtaps on the forward devices)."""
    mode = net.forward_mode
    if mode.has_own_bridge:
        return NetworkFamily.OWN_BRIDGE
    if mode is ForwardMode.HOSTDEV:
        return NetworkFamily.HOSTDEV
    if mode is ForwardMode.BRIDGE and net.bridge_name is not None:
        return NetworkFamily.HOST_BRIDGE
    return NetworkFamily.DIRECT
