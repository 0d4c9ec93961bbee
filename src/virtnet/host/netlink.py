"""rtnetlink by interface name, with virtnet's messages: what :class:`~virtnet.host.Host` uses.

Callers use interface names, never ifindex lists, and get :class:`HostError` with a readable
message. Deletes are safe to run twice: "not found" is success. The messages themselves are
spoken by :mod:`virtnet.host.rtnl` (no pyroute2: see there why), so nothing on the paths of
``net-start``, ``net-destroy`` or ``net-list`` imports pyroute2.
"""

from __future__ import annotations

import errno
import ipaddress

from virtnet.errors import HostError, NetlinkFailure
from virtnet.facts import AddressInfo, IPAddress, IPInterface, IPNetwork, LinkInfo, RouteInfo
from virtnet.host.rtnl import Rtnl
from virtnet.host.rtnl_msg import (
    IFA_F_NODAD,
    IFF_UP,
    RT_TABLE_MAIN,
    RTN_UNICAST,
    RTPROT_BOOT,
    RTPROT_RA,
    USER_HZ,
)


class Netlink:
    """One lazily opened rtnetlink socket in the namespace the process is in."""

    def __init__(self, rtnl: Rtnl | None = None) -> None:
        # a socket of our own (opened on first use, closed by close()), or a shared one
        # (virtnet.host.rtnl.shared_rtnl), which close() leaves open for its other users
        self._owned = rtnl is None
        self._rtnl = rtnl if rtnl is not None else Rtnl()

    def close(self) -> None:
        if self._owned:
            self._rtnl.close()

    # --- links --------------------------------------------------------------------------

    def link(self, name: str) -> LinkInfo | None:
        """The link called NAME, or None (one RTM_GETLINK by name, no dump)."""
        return self._rtnl.link_info(name)

    def exists(self, name: str) -> bool:
        """Whether a link called NAME exists (an ioctl, cheaper than a netlink request)."""
        return self._rtnl.exists(name)

    def index(self, name: str) -> int:
        return self._rtnl.index(name)

    def links(self) -> list[LinkInfo]:
        return self._rtnl.links()

    def create_bridge(
        self,
        name: str,
        *,
        stp: bool,
        forward_delay: int,
        mac: str | None = None,
        mtu: int | None = None,
        vlan_filtering: bool = False,
    ) -> None:
        """Create a bridge in one RTM_NEWLINK; fails if NAME exists (never adopts a link)."""
        try:
            self._rtnl.create_bridge(name, stp=stp, forward_delay=forward_delay, mac=mac,
                                     mtu=mtu, vlan_filtering=vlan_filtering)
        except NetlinkFailure as exc:
            if exc.code == errno.EEXIST:
                raise HostError(f"cannot create bridge {name}: interface already exists") from None
            if exc.code == errno.EOPNOTSUPP and vlan_filtering:
                raise HostError(
                    f"cannot create bridge {name}: the kernel lacks bridge VLAN filtering "
                    "(CONFIG_BRIDGE_VLAN_FILTERING), needed by macTableManager='libvirt'"
                ) from None
            raise

    def delete_link(self, name: str) -> bool:
        """Delete NAME; False if it did not exist."""
        return self._rtnl.delete_link(name)

    def set_up(self, name: str, up: bool) -> None:
        self._rtnl.set_link(name, up=up)

    # --- addresses ----------------------------------------------------------------------

    def addresses(self, names: dict[int, str] | None = None) -> list[AddressInfo]:
        """All addresses; NAMES (ifindex to name) saves a link dump when the caller has one."""
        return self._rtnl.addresses(names)

    def add_address(self, link: str, interface: IPInterface, *, nodad: bool = True) -> None:
        """Add INTERFACE (address/prefix) to LINK; IPv4 gets its broadcast like libvirt's."""
        broadcast = None
        flags = 0
        if isinstance(interface, ipaddress.IPv4Interface):
            if interface.network.prefixlen <= 30:
                broadcast = interface.network.broadcast_address
        elif nodad:
            # A fresh bridge has no duplicate to detect; skipping DAD lets dnsmasq bind now
            # instead of after ~1-2 s of "tentative".
            flags = IFA_F_NODAD
        try:
            self._rtnl.add_address(link, interface, broadcast=broadcast, flags=flags)
        except NetlinkFailure as exc:
            if exc.code == errno.EEXIST:
                raise HostError(f"address {interface} is already on {link}") from None
            raise

    def delete_address(self, link: str, interface: IPInterface) -> bool:
        if not self._rtnl.exists(link):
            return False
        try:
            self._rtnl.delete_address(link, interface)
        except NetlinkFailure as exc:
            if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV, errno.ESRCH):
                return False
            raise
        return True

    # --- routes -------------------------------------------------------------------------

    def routes(
        self, table: int = RT_TABLE_MAIN, names: dict[int, str] | None = None
    ) -> list[RouteInfo]:
        """Unicast routes of TABLE, both families."""
        return self._rtnl.routes(table, names)

    def add_route(
        self,
        link: str,
        destination: IPNetwork,
        gateway: IPAddress | None = None,
        metric: int | None = None,
    ) -> None:
        try:
            self._rtnl.add_route(link, destination, gateway, metric)
        except NetlinkFailure as exc:
            if exc.code == errno.EEXIST:
                raise HostError(
                    f"cannot {exc.what}: a route to {destination} already exists"
                ) from None
            raise

    def delete_route(
        self,
        link: str,
        destination: IPNetwork,
        gateway: IPAddress | None = None,
        metric: int | None = None,
    ) -> bool:
        if not self._rtnl.exists(link):
            return False  # the kernel removed the route with its link
        try:
            self._rtnl.delete_route(link, destination, gateway, metric)
        except NetlinkFailure as exc:
            if exc.code in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True


__all__ = [
    "IFA_F_NODAD",
    "IFF_UP",
    "RTN_UNICAST",
    "RTPROT_BOOT",
    "RTPROT_RA",
    "RT_TABLE_MAIN",
    "USER_HZ",
    "AddressInfo",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "LinkInfo",
    "Netlink",
    "NetlinkFailure",
    "RouteInfo",
]
