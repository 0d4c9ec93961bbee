"""The terms reachability is stated in: the endpoints (guests, the host, the LAN, upstream),
the :class:`Topology` around the host, a cell of the matrix and the fixes that turn its "no"
into a "yes", and what a network definition says about its IPv4 subnet, its gateway on the
bridge and its uplinks. Pure, like :mod:`virtnet.insight.reach`, which decides the cells.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from virtnet.spec.model import ForwardMode, Network

HOST = "host"
LAN = "lan"
UPSTREAM = "upstream"
# where a fix command runs
ON_HOST = "host"
ON_LAN_ROUTER = "lan-router"
ON_SWITCH = "switch"
SHIM_PREFIX = "shim-"
MAX_IFNAME = 15


def guest_name(index: int) -> str:
    """The endpoint name of the INDEX-th guest (1-based)."""
    return f"guest{index}"


def endpoint_names(guests: int) -> list[str]:
    return [guest_name(i) for i in range(1, guests + 1)] + [HOST, LAN, UPSTREAM]


def shim_name(uplink: str) -> str:
    """The name of the host's macvlan shim on UPLINK (at most 15 characters)."""
    return (SHIM_PREFIX + uplink)[:MAX_IFNAME]


@dataclass(frozen=True)
class Topology:
    """What surrounds the host, as far as reachability goes. Unknown values have defaults
    that describe a plain host: one LAN behind its uplink, a router there, no hairpin."""

    guests: int = 2
    hairpin: bool = False  # the external switch ports of the uplinks reflect frames
    # macvtap/passthrough: the uplink of each guest; None = what port allocation chooses
    guest_uplinks: tuple[str | None, ...] | None = None
    # the interface holding the host's LAN address; None = the first pool interface
    # (macvtap), the bridge (host bridge), another interface (passthrough)
    host_uplink: str | None = None
    host_address: str | None = None  # the host's LAN address with prefix, "10.77.0.1/24"
    uplink_routes: tuple[str, ...] = ()  # routes via host_uplink to keep ("default via X")
    lan_route: bool = False  # the LAN router routes the network's subnet to the host
    host_shim: bool = False  # the host's LAN address sits on a macvlan shim of host_uplink
    switch_ports: Mapping[str, str] = field(default_factory=dict)  # uplink → switch port
    outside_dev: str | None = None  # the interface of the host's default route
    has_default_route: bool = True
    ip_forward: bool | None = None  # as found on the host; None: as net-start sets it
    # chains of other firewall tables that drop forwarded traffic: "ip filter FORWARD"
    forward_blockers: tuple[str, ...] = ()
    # br_netfilter: bridged frames also pass the IP forward hook (and its blockers)
    br_netfilter: bool = False
    # macvtap: the host's interfaces among the pool's uplinks that answer ARP for its LAN
    # address although it is on another one (see answers_arp_for_others); None: all of them,
    # as the kernel's defaults do
    flux_uplinks: tuple[str, ...] | None = None
    bridge_has_uplink: bool = True  # host bridge: a LAN interface is a port of the bridge
    host_uplink_port: str | None = None  # host bridge: that LAN interface ("eth1")


@dataclass(frozen=True)
class Fix:
    """One command that turns a "no" into a "yes", and where it is run."""

    where: str  # ON_HOST, ON_LAN_ROUTER, ON_SWITCH
    command: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "command": self.command}

    def __str__(self) -> str:
        return f"[{self.where}] {self.command}"


@dataclass(frozen=True)
class Cell:
    src: str
    dst: str
    predicted: bool
    reason: str
    fix: tuple[Fix, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.src, "to": self.dst, "predicted": self.predicted,
                "reason": self.reason, "fix": [f.to_dict() for f in self.fix]}



def is_guest(name: str) -> bool:
    """Whether the endpoint NAME is a guest (guest1..)."""
    return name.startswith("guest") and name[5:].isdigit()


def guest_index(name: str) -> int:
    """The 1-based index of the guest endpoint NAME."""
    return int(name[5:])


def ipv4_network(net: Network) -> ipaddress.IPv4Network | None:
    for ipdef in net.ipv4_defs():
        network = ipdef.network
        if isinstance(network, ipaddress.IPv4Network):
            return network
    return None


def bridge_address(net: Network) -> ipaddress.IPv4Interface | None:
    """The IPv4 address the host has on the network's own bridge (the guests' gateway)."""
    for ipdef in net.ipv4_defs():
        interface = ipdef.interface
        if isinstance(interface, ipaddress.IPv4Interface):
            return interface
    return None


def pool(net: Network) -> list[str]:
    """A direct network's uplinks, in the network's order."""
    forward = net.forward
    if forward is None:
        return []
    devs = [i.dev for i in forward.interfaces]
    if not devs and forward.dev:
        devs = [forward.dev]
    return devs


def default_guest_uplinks(net: Network, guests: int) -> tuple[str | None, ...]:
    """The uplinks port allocation gives guests 1..GUESTS created in order: the least used
    interface (first of equals), or for passthrough a free one (None when none is left)."""
    devs = pool(net)
    if not devs:
        return tuple(None for _ in range(guests))
    if net.forward_mode is ForwardMode.PASSTHROUGH:
        return tuple(devs[i] if i < len(devs) else None for i in range(guests))
    return tuple(devs[i % len(devs)] for i in range(guests))



__all__ = [
    "HOST",
    "LAN",
    "ON_HOST",
    "ON_LAN_ROUTER",
    "ON_SWITCH",
    "UPSTREAM",
    "Cell",
    "Fix",
    "Topology",
    "bridge_address",
    "default_guest_uplinks",
    "endpoint_names",
    "guest_index",
    "guest_name",
    "ipv4_network",
    "is_guest",
    "pool",
    "shim_name",
]
