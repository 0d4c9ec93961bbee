"""What the planners need to know about the host, read once: links, addresses, routes and
kernel features. One netlink dump per kind, a few /proc/sys reads, no process spawned.

Drivers plan from a :class:`HostFacts` value, so planning stays a pure function that tests
can feed with hand-made facts.
"""

from __future__ import annotations

import ctypes
import dataclasses
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from virtnet.host import Host
from virtnet.host.netlink import RTPROT_RA, AddressInfo, IPNetwork, LinkInfo, RouteInfo
from virtnet.host.nft import LIBNFTABLES
from virtnet.host.sysctl import sysctl_get


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

    def link(self, name: str) -> LinkInfo | None:
        return self.links.get(name)

    def has_link(self, name: str) -> bool:
        return name in self.links

    def routes_to(self, network: IPNetwork) -> list[RouteInfo]:
        return [route for route in self.routes if route.destination == network]

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

    def addresses_in(self, network: IPNetwork) -> list[AddressInfo]:
        return [
            addr
            for addr in self.addresses
            if addr.interface.version == network.version and addr.interface.ip in network
        ]


def _nftables_available() -> bool:
    try:
        ctypes.CDLL(LIBNFTABLES)
        return True
    except OSError:
        return shutil.which("nft") is not None


def read_facts(host: Host) -> HostFacts:
    """Read the facts of the namespace the process is in."""
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
    )
