"""Host helpers only tests use (virtnet's own code never needs them, so they are not Host's)."""

from __future__ import annotations

import os

from virtnet.errors import HostError
from virtnet.host import Host, tc
from virtnet.host.facts import HostFacts
from virtnet.host.rtnl import AddressInfo, IPNetwork, RouteInfo


def ensure_bridge(host: Host, name: str, *, stp: bool = True, forward_delay: int = 0,
                  mac: str | None = None, mtu: int | None = None) -> bool:
    """Create bridge NAME unless a bridge of that name exists; True if created.

    A non-bridge link of that name is an error, never reused.
    """
    info = host.netlink.link(name)
    if info is not None:
        if info.kind != "bridge":
            raise HostError(f"interface {name} exists but is not a bridge")
        return False
    host.create_bridge(name, stp=stp, forward_delay=forward_delay, mac=mac, mtu=mtu)
    return True


def routes_to(facts: HostFacts, network: IPNetwork) -> list[RouteInfo]:
    return [route for route in facts.routes if route.destination == network]


def addresses_in(facts: HostFacts, network: IPNetwork) -> list[AddressInfo]:
    return [addr for addr in facts.addresses
            if addr.interface.version == network.version and addr.interface.ip in network]


def current_netns_inode() -> int:
    """Inode of this process's network namespace (tells namespaces apart)."""
    return os.stat("/proc/self/ns/net").st_ino


def reset_tc_probe_cache() -> None:
    """Forget the tc feature probe this process (or the parent it forked from) made."""
    tc._features_cache = None
