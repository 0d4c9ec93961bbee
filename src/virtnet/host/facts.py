"""Reading what the planners need to know about the host, once: links, addresses, routes
and kernel features. One netlink dump per kind, a few /proc/sys reads, no process spawned.

Drivers plan from the :class:`~virtnet.facts.HostFacts` value read here, so planning stays a
pure function that tests can feed with hand-made facts.
"""

from __future__ import annotations

import ctypes
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from virtnet.facts import HostFacts  # noqa: F401 - also named here by drivers/
from virtnet.host.netlink import RTPROT_RA
from virtnet.host.nft import LIBNFTABLES
from virtnet.host.sysctl import sysctl_get
from virtnet.host.kernel import kernel_has

if TYPE_CHECKING:
    from virtnet.host import Host


class KernelProbe:
    """The running kernel's features as a plan reads them (``HostFacts.kernel``): each one
    probed when first asked, so a plan probes only what its network needs (a probe can cost
    a modprobe); the same ``missing`` as :class:`~virtnet.facts.KernelFeatures`, which tests
    may give."""

    def missing(self, *names: str) -> list[str]:
        return [name for name in names if not kernel_has(name)]


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
        kernel=KernelProbe(),
    )
