"""rtnetlink through pyroute2: the only module that imports pyroute2.

Callers use interface names, never ifindex lists, and get :class:`HostError` with a readable
message instead of ``NetlinkError``. Deletes are safe to run twice: "not found" is success.

Import cost: ``import pyroute2`` runs its package ``__init__``, which imports every pyroute2
subsystem (ndb, ipdb, wireguard, nl80211, ...). Measured here: ~230-280 ms for
``from pyroute2.iproute.linux import IPRoute`` through the normal import, ~140 ms when the
package ``__init__`` is skipped (see :func:`_load_pyroute2`). The import happens on the first
netlink call, never at module import.
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import socket
import sys
from dataclasses import dataclass
from typing import Any

from virtnet.errors import HostError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IFF_UP = 0x1
IFA_F_NODAD = 0x02
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_BOOT = 3  # what `ip route add` and libvirt use
RTPROT_RA = 9  # routes learned from router advertisements
# IFLA_BR_FORWARD_DELAY is in clock_t units (USER_HZ, 100 per second on Linux).
USER_HZ = 100

_ERRNO_TEXT = {
    errno.EEXIST: "already exists",
    errno.ENODEV: "no such device",
    errno.ENOENT: "not found",
    errno.ESRCH: "not found",
    errno.EADDRNOTAVAIL: "address not available",
    errno.ENETUNREACH: "network unreachable (is the gateway on a directly connected subnet?)",
    errno.EPERM: "operation not permitted (needs root / CAP_NET_ADMIN)",
    errno.EOPNOTSUPP: "not supported by this kernel",
    errno.EINVAL: "invalid argument",
    errno.ERANGE: "value out of range",
    errno.EBUSY: "device or resource busy",
}


def _load_pyroute2() -> tuple[type, type[Exception]]:
    """Import IPRoute and NetlinkError without running pyroute2's package ``__init__``.

    If nothing imported pyroute2 yet, a bare package module stands in for it while the
    submodules load. The stand-in completes itself (runs the real ``__init__``) the first
    time anyone asks it for a name that is not a submodule, so a later
    ``from pyroute2 import NDB`` elsewhere in the process still works.
    """
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or spec.loader is None:
            raise HostError("the pyroute2 package is not installed")
        package = importlib.util.module_from_spec(spec)
        loader = spec.loader

        def complete(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            if importlib.util.find_spec(f"pyroute2.{name}") is not None:
                return importlib.import_module(f"pyroute2.{name}")
            # Not a submodule: run the real package init into this very module once.
            package.__dict__.pop("__getattr__", None)
            loader.exec_module(package)  # type: ignore[union-attr]
            return getattr(package, name)

        package.__getattr__ = complete  # type: ignore[method-assign]
        sys.modules["pyroute2"] = package
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    return IPRoute, NetlinkError


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


class Netlink:
    """One lazily opened rtnetlink socket in the namespace the process is in."""

    def __init__(self) -> None:
        self._ipr: Any = None
        self._error_type: type[Exception] | None = None

    # --- plumbing -----------------------------------------------------------------------

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            iproute, self._error_type = _load_pyroute2()
            try:
                # groups=0: no multicast subscriptions, so replies never interleave with events
                self._ipr = iproute(groups=0)
            except OSError as exc:
                raise HostError(f"cannot open a netlink socket: {exc.strerror}") from None
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        ipr = self.ipr
        try:
            return getattr(ipr, method)(*args, **kwargs)
        except Exception as exc:
            code = self._errno(exc)
            if code is None:
                raise
            raise NetlinkFailure(what, code) from None

    def _errno(self, exc: Exception) -> int | None:
        if self._error_type is not None and isinstance(exc, self._error_type):
            return int(getattr(exc, "code", 0) or 0)
        return None

    # --- links --------------------------------------------------------------------------

    def link(self, name: str) -> LinkInfo | None:
        """The link called NAME, or None (one RTM_GETLINK by name, no dump)."""
        try:
            msgs = self._call(f"look up {name}", "link", "get", ifname=name)
        except NetlinkFailure as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for msg in msgs:
            return _link_info(msg)
        return None

    def index(self, name: str) -> int:
        info = self.link(name)
        if info is None:
            raise HostError(f"interface {name} does not exist")
        return info.index

    def links(self) -> list[LinkInfo]:
        return [_link_info(msg) for msg in self._call("list links", "link", "dump")]

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
        kwargs: dict[str, Any] = {
            "ifname": name,
            "kind": "bridge",
            # The kernel applies the forward delay before enabling STP, as libvirt does; with
            # kernel STP it then raises a delay below 2 s to 2 s itself.
            "br_forward_delay": forward_delay * USER_HZ,
            "br_stp_state": 1 if stp else 0,
        }
        if vlan_filtering:
            kwargs["br_vlan_filtering"] = 1
        if mac is not None:
            kwargs["address"] = mac
        if mtu is not None:
            kwargs["mtu"] = mtu
        try:
            self._call(f"create bridge {name}", "link", "add", **kwargs)
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
        info = self.link(name)
        if info is None:
            return False
        try:
            self._call(f"delete {name}", "link", "del", index=info.index)
        except NetlinkFailure as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def set_up(self, name: str, up: bool) -> None:
        what = f"set {name} {'up' if up else 'down'}"
        self._call(what, "link", "set", index=self.index(name), state="up" if up else "down")

    # --- addresses ----------------------------------------------------------------------

    def addresses(self, names: dict[int, str] | None = None) -> list[AddressInfo]:
        """All addresses; NAMES (ifindex to name) saves a link dump when the caller has one."""
        if names is None:
            names = {link.index: link.name for link in self.links()}
        result = []
        for msg in self._call("list addresses", "addr", "dump"):
            addr = msg.get("IFA_ADDRESS") if msg["family"] == socket.AF_INET6 else None
            addr = addr or msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if addr is None:
                continue
            iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
            result.append(AddressInfo(names.get(msg["index"], str(msg["index"])), iface))
        return result

    def add_address(self, link: str, interface: IPInterface, *, nodad: bool = True) -> None:
        """Add INTERFACE (address/prefix) to LINK; IPv4 gets its broadcast like libvirt's."""
        kwargs: dict[str, Any] = {
            "index": self.index(link),
            "address": str(interface.ip),
            "prefixlen": interface.network.prefixlen,
        }
        if isinstance(interface, ipaddress.IPv4Interface):
            kwargs["local"] = str(interface.ip)
            if interface.network.prefixlen <= 30:
                kwargs["broadcast"] = str(interface.network.broadcast_address)
        elif nodad:
            # A fresh bridge has no duplicate to detect; skipping DAD lets dnsmasq bind now
            # instead of after ~1-2 s of "tentative".
            kwargs["flags"] = IFA_F_NODAD
        try:
            self._call(f"add address {interface} to {link}", "addr", "add", **kwargs)
        except NetlinkFailure as exc:
            if exc.code == errno.EEXIST:
                raise HostError(f"address {interface} is already on {link}") from None
            raise

    def delete_address(self, link: str, interface: IPInterface) -> bool:
        info = self.link(link)
        if info is None:
            return False
        try:
            self._call(
                f"delete address {interface} from {link}",
                "addr",
                "del",
                index=info.index,
                address=str(interface.ip),
                prefixlen=interface.network.prefixlen,
            )
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
        if names is None:
            names = {link.index: link.name for link in self.links()}
        result = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self._call("list routes", "route", "dump", family=family):
                msg_table = msg.get("RTA_TABLE") or msg["table"]
                if msg_table != table or msg["type"] != RTN_UNICAST:
                    continue
                default = "0.0.0.0" if family == socket.AF_INET else "::"
                dst = msg.get("RTA_DST") or default
                gateway = msg.get("RTA_GATEWAY")
                oif = msg.get("RTA_OIF")
                result.append(
                    RouteInfo(
                        destination=ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False),
                        link=names.get(oif) if oif is not None else None,
                        gateway=ipaddress.ip_address(gateway) if gateway else None,
                        metric=int(msg.get("RTA_PRIORITY") or 0),
                        protocol=int(msg["proto"]),
                        table=int(msg_table),
                    )
                )
        return result

    def _route_args(
        self, link: str, destination: IPNetwork, gateway: IPAddress | None, metric: int | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "family": socket.AF_INET if destination.version == 4 else socket.AF_INET6,
            "oif": self.index(link),
            "dst_len": destination.prefixlen,
            "table": RT_TABLE_MAIN,
        }
        if destination.prefixlen:
            kwargs["dst"] = str(destination.network_address)
        if gateway is not None:
            kwargs["gateway"] = str(gateway)
        if metric:
            kwargs["priority"] = metric
        return kwargs

    def add_route(
        self,
        link: str,
        destination: IPNetwork,
        gateway: IPAddress | None = None,
        metric: int | None = None,
    ) -> None:
        kwargs = self._route_args(link, destination, gateway, metric)
        kwargs["proto"] = RTPROT_BOOT
        via = f" via {gateway}" if gateway is not None else ""
        what = f"add route {destination}{via} dev {link}"
        try:
            self._call(what, "route", "add", **kwargs)
        except NetlinkFailure as exc:
            if exc.code == errno.EEXIST:
                raise HostError(f"cannot {what}: a route to {destination} already exists") from None
            raise

    def delete_route(
        self,
        link: str,
        destination: IPNetwork,
        gateway: IPAddress | None = None,
        metric: int | None = None,
    ) -> bool:
        if self.link(link) is None:
            return False  # the kernel removed the route with its link
        kwargs = self._route_args(link, destination, gateway, metric)
        try:
            self._call(f"delete route {destination} dev {link}", "route", "del", **kwargs)
        except NetlinkFailure as exc:
            if exc.code in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True


class NetlinkFailure(HostError):
    """A netlink request the kernel refused; ``code`` is the errno."""

    def __init__(self, what: str, code: int) -> None:
        self.what = what
        self.code = code
        text = _ERRNO_TEXT.get(code) or (errno.errorcode.get(code, f"error {code}"))
        super().__init__(f"cannot {what}: {text}")

    def __reduce__(self) -> tuple[object, ...]:
        return (NetlinkFailure, (self.what, self.code))


def _link_info(msg: Any) -> LinkInfo:
    kind = None
    stp = None
    delay = None
    linkinfo = msg.get("IFLA_LINKINFO")
    if linkinfo is not None:
        kind = linkinfo.get("IFLA_INFO_KIND")
        data = linkinfo.get("IFLA_INFO_DATA")
        if kind == "bridge" and data is not None:
            state = data.get("IFLA_BR_STP_STATE")
            stp = bool(state) if state is not None else None
            raw_delay = data.get("IFLA_BR_FORWARD_DELAY")
            delay = int(raw_delay) // USER_HZ if raw_delay is not None else None
    return LinkInfo(
        name=msg.get("IFLA_IFNAME"),
        index=int(msg["index"]),
        kind=kind,
        up=bool(msg["flags"] & IFF_UP),
        mac=msg.get("IFLA_ADDRESS"),
        mtu=int(msg.get("IFLA_MTU") or 0),
        master=msg.get("IFLA_MASTER"),
        stp=stp,
        forward_delay=delay,
    )


__all__ = [
    "AddressInfo",
    "LinkInfo",
    "Netlink",
    "NetlinkFailure",
    "RouteInfo",
]
