"""net-addresses: every guest seen on a network, with each fact's source.

Like ``virsh domifaddr --source lease|arp``, but for the whole network at once. Three sources:

- ``lease``: dnsmasq's lease file (IPv4 and DHCPv6; the hostname the guest sent);
- ``arp``: the kernel's IPv4 neighbour table on the network's bridge, which is how a guest
  with a static address becomes visible (once it has exchanged a packet with the host);
- ``nd``: the kernel's IPv6 neighbour table (neighbour discovery), which also holds SLAAC
  and link-local addresses that no lease names.

Guests are keyed by MAC. The merge is pure (:func:`merge_guests`); only
:func:`network_addresses` reads the host. A neighbour entry the kernel keeps but no longer
confirms (stale) is still listed, with its state, because a static guest that went quiet is
often exactly the one being looked for; entries that never resolved and multicast mappings
are left out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from virtnet.errors import VirtnetError
from virtnet.store.leases import LeaseRow, normalize_mac

if TYPE_CHECKING:
    from virtnet.service.engine import Engine
    from virtnet.facts import NeighbourInfo
    from virtnet.spec.model import Network

SOURCE_LEASE = "lease"
SOURCE_ARP = "arp"
SOURCE_ND = "nd"

# the kernel's NUD_* states (include/uapi/linux/neighbour.h), by bit
NUD_STATES = {
    0x01: "incomplete", 0x02: "reachable", 0x04: "stale", 0x08: "delay", 0x10: "probe",
    0x20: "failed", 0x40: "noarp", 0x80: "permanent",
}
# no resolved link-layer address (incomplete, failed), or a mapping the kernel computes
# (noarp: multicast and broadcast groups): none of these names a guest
NUD_NOT_A_GUEST = 0x01 | 0x20 | 0x40


def nud_state_name(state: int) -> str:
    names = [name for bit, name in NUD_STATES.items() if state & bit]
    return ",".join(names) if names else "none"


@dataclass
class AddressFact:
    address: str  # without prefix, e.g. "192.168.122.10" or "fe80::5054:ff:fe00:1"
    family: str  # "ipv4" / "ipv6"
    source: str  # lease / arp / nd
    prefix: int | None = None  # from the network's <ip> of that family, when inside it
    state: str | None = None  # neighbour entries: the kernel's state (reachable, stale...)
    expiry: int | None = None  # leases: unix time, 0 = never

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Guest:
    mac: str
    hostname: str | None = None
    hostname_source: str | None = None
    addresses: list[AddressFact] = field(default_factory=list)

    @property
    def ipv4(self) -> list[str]:
        return [fact.address for fact in self.addresses if fact.family == "ipv4"]

    @property
    def ipv6(self) -> list[str]:
        return [fact.address for fact in self.addresses if fact.family == "ipv6"]

    def to_dict(self) -> dict[str, Any]:
        return {"mac": self.mac, "hostname": self.hostname,
                "hostname_source": self.hostname_source,
                "ipv4": self.ipv4, "ipv6": self.ipv6,
                "addresses": [fact.to_dict() for fact in self.addresses]}


def _prefix_of(net: Network, address: ipaddress.IPv4Address | ipaddress.IPv6Address
               ) -> int | None:
    for ip in net.ips:
        if ip.interface is not None and address in ip.interface.network:
            return ip.interface.network.prefixlen
    return None


def merge_guests(net: Network, leases: list[LeaseRow], neighbours: list[NeighbourInfo],
                 own_macs: set[str] | None = None) -> list[Guest]:
    """The guests of NET from its LEASES and the NEIGHBOURS on its bridge (pure).

    An address both leased and in the neighbour table is listed once, from the lease (the
    neighbour entry adds its state). ``own_macs`` (the bridge's own) are left out. Guests
    are sorted by MAC, each one's addresses IPv4 first, then by address."""
    own = {normalize_mac(mac) for mac in own_macs or set()}
    guests: dict[str, Guest] = {}

    def guest(mac: str) -> Guest:
        key = normalize_mac(mac)
        if key not in guests:
            guests[key] = Guest(key)
        return guests[key]

    unknown_mac: list[Guest] = []
    for lease in leases:
        if lease.mac is None:  # a DHCPv6 lease whose DUID does not carry the MAC
            entry = Guest(mac="-")
            unknown_mac.append(entry)
        else:
            entry = guest(lease.mac)
        entry.addresses.append(AddressFact(lease.ip, lease.protocol, SOURCE_LEASE,
                                           lease.prefix, expiry=lease.expiry))
        if lease.hostname and entry.hostname is None:
            entry.hostname, entry.hostname_source = lease.hostname, SOURCE_LEASE

    for neighbour in neighbours:
        if (neighbour.state & NUD_NOT_A_GUEST or neighbour.address.is_multicast
                or normalize_mac(neighbour.mac) in own):
            continue
        entry = guest(neighbour.mac)
        text = str(neighbour.address)
        state = nud_state_name(neighbour.state)
        known = next((fact for fact in entry.addresses if fact.address == text), None)
        if known is not None:
            known.state = state
            continue
        family = "ipv4" if neighbour.address.version == 4 else "ipv6"
        entry.addresses.append(AddressFact(
            text, family, SOURCE_ARP if family == "ipv4" else SOURCE_ND,
            _prefix_of(net, neighbour.address), state=state))

    result = sorted(guests.values(), key=lambda g: g.mac) + unknown_mac
    for entry in result:
        entry.addresses.sort(key=lambda f: (f.family != "ipv4",
                                            ipaddress.ip_address(f.address)))
    return result


def network_addresses(engine: Engine, name: str) -> list[Guest]:
    """The guests of the running network NAME (leases + the bridge's neighbour tables)."""
    record = engine.lookup(name)
    if not record.active or record.live is None:
        raise VirtnetError(f"network '{record.name}' is not active")
    net = record.live
    leases = engine.dhcp_leases(record.name)
    bridge = net.bridge_name
    neighbours: list[NeighbourInfo] = []
    own_macs: set[str] = set()
    if bridge is not None:
        with engine.host() as host:
            info = host.link(bridge)
            if info is not None:  # a network without a bridge of its own (macvtap) has none
                neighbours = host.neighbours(bridge)
                if info.mac:
                    own_macs.add(info.mac)
    return merge_guests(net, leases, neighbours, own_macs)


def format_table(guests: list[Guest]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for the plain-text listing: one row per address."""
    headers = ["MAC address", "Protocol", "Address", "Hostname", "Source"]
    rows = []
    for entry in guests:
        for index, fact in enumerate(entry.addresses):
            address = f"{fact.address}/{fact.prefix}" if fact.prefix is not None \
                else fact.address
            source = fact.source + (f" ({fact.state})" if fact.state
                                    and fact.source != SOURCE_LEASE else "")
            rows.append([entry.mac if index == 0 else "", fact.family, address,
                         (entry.hostname or "-") if index == 0 else "", source])
    return headers, rows
