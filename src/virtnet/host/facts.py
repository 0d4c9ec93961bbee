"""What the planners need to know about the host, read once: links, addresses, routes and
kernel features. One netlink dump per kind, a few /proc/sys reads, no process spawned.

Drivers plan from a :class:`HostFacts` value, so planning stays a pure function that tests
can feed with hand-made facts.

:meth:`HostFacts.subnet_collisions` is the one judge of "this subnet collides with X", for
the start preflight and for ``doctor`` alike.
"""

from __future__ import annotations

import ctypes
import dataclasses
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from virtnet.errors import Problem
from virtnet.host import Host
from virtnet.host.netlink import RTPROT_RA, AddressInfo, IPNetwork, LinkInfo, RouteInfo
from virtnet.host.nft import LIBNFTABLES
from virtnet.host.sysctl import sysctl_get

if TYPE_CHECKING:
    from virtnet.host.kernel import KernelFeatures
    from virtnet.model import Network


class KernelProbe:
    """The running kernel's features as a plan reads them (``HostFacts.kernel``): each one
    probed when first asked, so a plan probes only what its network needs (a probe can cost
    a modprobe); the same ``missing`` as :class:`KernelFeatures`, which tests may give."""

    def missing(self, *names: str) -> list[str]:
        from virtnet.host.kernel import kernel_has  # loaded by the networks that ask

        return [name for name in names if not kernel_has(name)]


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
    # the kernel's features, probed on demand
    kernel: KernelFeatures | KernelProbe = field(default_factory=KernelProbe, compare=False,
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


def _nftables_available() -> bool:
    try:
        ctypes.CDLL(LIBNFTABLES)
        return True
    except OSError:
        return shutil.which("nft") is not None


def read_facts(host: Host, networks: Mapping[str, str] | None = None) -> HostFacts:
    """Read the facts of the namespace the process is in; NETWORKS: the bridges of the
    active virtnet networks (see HostFacts.networks)."""
    links = {link.name: link for link in host.links()}
    names = {link.index: link.name for link in links.values()}
    addresses = host.addresses(names)
    routes = host.routes(names)
    ipv6 = Path("/proc/sys/net/ipv6").is_dir()
    ra_accept: dict[str, int] = {}
    for route in routes:
        if route.protocol == RTPROT_RA and route.link and route.link not in ra_accept:
            value = sysctl_get(f"net/ipv6/conf/{route.link}/accept_ra")
            if value is not None and value.lstrip("-").isdigit():
                ra_accept[route.link] = int(value)
    return HostFacts(
        links=links,
        addresses=addresses,
        routes=routes,
        ipv6=ipv6,
        nftables=_nftables_available(),
        dnsmasq=shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin"),
        ra_accept=ra_accept,
        networks=networks if networks is not None else {},
    )
