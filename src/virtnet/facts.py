"""What the host is like, as data: links, addresses, routes, neighbours, kernel and tc
features, DHCP server processes.

host/ reads them (virtnet.host.facts, .tc, .kernel, .procs); the planners, drivers and the
doctor judge them. No effects here, and nothing of virtnet imported but errors: host/ builds
these values without importing what lies above it, and tests hand-make them.

:meth:`HostFacts.subnet_collisions` is the one judge of "this subnet collides with X", for
the start preflight and for ``doctor`` alike.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from virtnet.errors import HostError, Problem

if TYPE_CHECKING:
    from virtnet.spec.model import Network

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- links, addresses, routes, neighbours ---------------------------------------------------


@dataclass(frozen=True)
class LinkInfo:
    name: str
    index: int
    kind: str | None  # "bridge", "veth", ... ; None for physical devices and loopback
    up: bool
    mac: str | None
    mtu: int
    master: int | None  # ifindex of the bridge/bond this link is enslaved to
    stp: bool | None = None  # bridges only
    forward_delay: int | None = None  # bridges only, seconds (rounded down)


@dataclass(frozen=True)
class NeighbourInfo:
    """One entry of a neighbour table; ``state`` is the kernel's NUD_* bit set."""

    link: str
    address: IPAddress
    mac: str
    state: int


@dataclass(frozen=True)
class AddressInfo:
    link: str
    interface: IPInterface


@dataclass(frozen=True)
class RouteInfo:
    destination: IPNetwork
    link: str | None
    gateway: IPAddress | None
    metric: int
    protocol: int
    table: int


# --- what the planners read: HostFacts ------------------------------------------------------


class KernelView(Protocol):
    """What a plan asks of the kernel's features: which of NAMES it lacks."""

    def missing(self, *names: str) -> list[str]: ...



@dataclass(frozen=True)
class HostFacts:
    links: dict[str, LinkInfo] = field(default_factory=dict)
    addresses: list[AddressInfo] = field(default_factory=list)
    routes: list[RouteInfo] = field(default_factory=list)  # main table, unicast
    ipv6: bool = True  # the kernel has IPv6 (and it is not disabled on the command line)
    nftables: bool = True  # libnftables or the nft binary is available
    dnsmasq: str | None = "dnsmasq"  # path of the dnsmasq binary, None if not installed
    # accept_ra of the links that have routes learned from router advertisements: enabling
    # IPv6 forwarding flushes those routes unless accept_ra is 2 (libvirt refuses then).
    ra_accept: dict[str, int] = field(default_factory=dict)
    # the bridges of active virtnet networks: bridge name -> network name. Only looked up
    # to name what a subnet collides with (the engine's mapping reads the state lazily).
    networks: Mapping[str, str] = field(default_factory=dict)
    # what tc can use; read (virtnet.host.tc's probe, which makes a scratch device) only for
    # a plan that shapes traffic, so None: not read
    tc: TcFeatures | None = None
    # the kernel's features: read_facts gives a probe that asks the kernel about each one
    # when first asked (virtnet.host.facts.KernelProbe); hand-made facts say "all present"
    kernel: KernelView = field(default_factory=lambda: KernelFeatures(), compare=False,
                               repr=False)

    def link(self, name: str) -> LinkInfo | None:
        return self.links.get(name)

    def has_link(self, name: str) -> bool:
        return name in self.links

    def without_links(self, names: Iterable[str]) -> HostFacts:
        """These facts as if the links NAMES, and the links enslaved to them, were not there
        (with their addresses and routes): a running network's plan is read against the host
        without the devices the network itself made."""
        gone = {name for name in names if name in self.links}
        masters = {self.links[name].index for name in gone}
        gone |= {name for name, link in self.links.items() if link.master in masters}
        return dataclasses.replace(
            self,
            links={name: link for name, link in self.links.items() if name not in gone},
            addresses=[addr for addr in self.addresses if addr.link not in gone],
            routes=[route for route in self.routes if route.link not in gone],
            ra_accept={name: value for name, value in self.ra_accept.items()
                       if name not in gone},
        )

    def subnet_collisions(self, net: Network, active: bool = False) -> list[Problem]:
        """Where the subnets of NET's <ip>s and the destinations of its <route>s overlap what
        the host has: another active virtnet network (named, with its bridge), a host route
        or an address (device and prefix). Overlap either way counts (a /25 inside a /24, a
        /24 inside a /16); a default route (or a /1 half of one) overlaps everything and
        counts only against the same route. What lies on NET's own bridge, when NET is ``active``, is its own."""
        own = net.bridge_name if active and net.forward_mode.has_own_bridge else None
        problems: list[Problem] = []
        for index, ipdef in enumerate(net.ips):
            if ipdef.network is not None:
                problems += self._collisions(net.name, own, f"/network/ip[{index + 1}]",
                                             "subnet", ipdef.network)
        for index, route in enumerate(net.routes):
            if route.network is not None:
                problems += self._collisions(net.name, own, f"/network/route[{index + 1}]",
                                             "route", route.network)
        return problems

    def _collisions(self, name: str, own: str | None, path: str, what: str,
                    prefix: IPNetwork) -> list[Problem]:
        found: list[Problem] = []
        seen: set[tuple[str | None, IPNetwork]] = set()
        candidates = [(route.link, route.destination, None) for route in self.routes]
        candidates += [(addr.link, addr.interface.network, addr) for addr in self.addresses]
        for link, other, addr in candidates:
            if (link, other) in seen or not _overlap(prefix, other):
                continue
            seen.add((link, other))  # an address's prefix route says the same as the address
            if own is not None and link == own:
                continue
            owner = self.networks.get(link) if link else None
            if owner == name:
                continue
            if owner is not None:
                against = f"{other} of active network '{owner}' (on {link})"
            elif addr is not None:
                against = f"the address {addr.interface} on {link}"
            elif link:
                against = f"the host route {other} on {link}"
            else:
                against = f"the host route {other} (no device: unreachable, blackhole or prohibit)"
            found.append(Problem(path, f"{what} {prefix} overlaps {against}", str(prefix)))
        return found


def _overlap(ours: IPNetwork, other: IPNetwork) -> bool:
    if ours.version != other.version:
        return False
    # A default route, and the two halves (/1) a VPN installs to take precedence over it
    # (OpenVPN's def1, WireGuard's AllowedIPs split), cover everything: they collide only with
    # a route of the same kind.
    if ours.prefixlen <= 1 or other.prefixlen <= 1:
        return ours == other
    return ours.overlaps(other)  # type: ignore[arg-type]


# --- kernel features -------------------------------------------------------------------------

# What each feature is called in messages: the kernel's own option names, so the fix is clear.
FEATURE_TEXT = {
    "bridge": "bridges (CONFIG_BRIDGE)",
    "macvlan": "macvlan devices (CONFIG_MACVLAN)",
    "macvtap": "macvtap devices (CONFIG_MACVTAP)",
    "tun": "TUN/TAP devices (CONFIG_TUN, and the /dev/net/tun node)",
    "nftables": "nftables (CONFIG_NF_TABLES)",
    "vlan": "802.1Q VLAN devices (CONFIG_VLAN_8021Q)",
    "ifb": "IFB devices (CONFIG_IFB)",
}


@dataclass(frozen=True)
class KernelFeatures:
    bridge: bool = True
    macvlan: bool = True
    macvtap: bool = True
    tun: bool = True
    nftables: bool = True
    vlan: bool = True
    ifb: bool = True

    def missing(self, *names: str) -> list[str]:
        return [name for name in names if not getattr(self, name)]

    def require(self, *names: str, what: str) -> None:
        """Raise HostError naming every missing feature among NAMES, for WHAT."""
        missing = self.missing(*names)
        if missing:
            lacks = ", ".join(FEATURE_TEXT[name] for name in missing)
            raise HostError(f"cannot {what}: the kernel lacks {lacks}")

    def to_dict(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class TcFeatures:
    """Which traffic-control pieces the kernel has (probed once, see virtnet.host.tc)."""

    htb: bool = True
    ingress: bool = True
    u32: bool = True
    mirred: bool = True
    ifb: bool = True
    sfq: bool = False
    police: bool = False

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TcFeatures:
        return cls(**{name: bool(data[name]) for name in cls.__dataclass_fields__ if name in data})

    @property
    def can_redirect(self) -> bool:
        return self.ingress and self.u32 and self.mirred and self.ifb


# --- processes and parameters ----------------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    comm: str
    argv: tuple[str, ...]
    conf_text: str = ""  # a dnsmasq's --conf-file, when readable


def dotted(key: str) -> str:
    """The ``sysctl -w`` spelling of a slash-form sysctl KEY: dotted unless a component
    contains a dot (an interface name may)."""
    parts = key.split("/")
    return key if any("." in part for part in parts) else ".".join(parts)


__all__ = ["FEATURE_TEXT", "AddressInfo", "HostFacts", "IPAddress", "IPInterface", "IPNetwork",
           "KernelFeatures", "LinkInfo", "NeighbourInfo", "ProcessInfo", "RouteInfo",
           "TcFeatures", "dotted"]
