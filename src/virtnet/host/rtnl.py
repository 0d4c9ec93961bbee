"""A minimal rtnetlink client, and tun/tap ioctls: everything virtnet asks the kernel's routing
netlink for, on the network paths (start, destroy, facts) and the per-port hot path.

Why not pyroute2: pyroute2 0.9 routes every request through its asyncio core, which costs
2-4 ms per request on these machines while the kernel needs 0.1-0.3 ms (measured: RTM_NEWLINK
of a macvtap 4.2 ms median through pyroute2, 0.33 ms through ``ip -batch``), and importing it
costs 110-150 ms, more than a whole ``net-start`` should take. The messages virtnet needs are
few and fixed, so this module speaks them directly:
- links: look up (brief or full), dump, create a bridge (STP, forward delay, MAC, MTU, VLAN
  filtering), a macvtap, a parameterless kind (ifb), a persistent tap; set MAC, master, MTU
  and up/down in one message; mark a bridge port isolated; delete; probe a kind;
- addresses: add (IPv4 broadcast, flags such as nodad), delete, dump;
- routes: add (gateway, metric, protocol), delete, dump of one table.

Errors become :class:`NetlinkFailure` (a HostError carrying the errno). Name-based helpers
with virtnet's own messages and "not found is success" deletes are in
:mod:`virtnet.host.netlink`.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
from dataclasses import dataclass

from virtnet.errors import HostError, NetlinkFailure
from virtnet.facts import (
    AddressInfo,
    IPAddress,
    IPInterface,
    IPNetwork,
    LinkInfo,
    NeighbourInfo,
    RouteInfo,
)


# Constants from include/uapi/linux/{netlink,rtnetlink,if_link,if_addr}.h
NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_GETNEIGH = 30
RTM_GETNSID = 90
RTMGRP_LINK = 0x1  # the multicast group of link notifications
NETNSA_NSID = 1
NDA_DST = 1
NDA_LLADDR = 2
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_PROTINFO = 12
IFLA_BRPORT_ISOLATED = 33
IFLA_LINKINFO = 18
IFLA_NUM_VF = 21
IFLA_EXT_MASK = 29
IFLA_NEW_NETNSID = 45  # in an RTM_DELLINK: the link moved to the namespace of this id
IFLA_TARGET_NETNSID = 46  # in a request: act in the namespace of this id
RTEXT_FILTER_VF = 1 << 0
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_MACVLAN_MODE = 1
IFLA_BR_FORWARD_DELAY = 1
IFLA_BR_STP_STATE = 5
IFLA_BR_VLAN_FILTERING = 7
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4
IFA_FLAGS = 8
IFA_F_NODAD = 0x02
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_BOOT = 3  # what `ip route add` and libvirt use
RTPROT_RA = 9  # routes learned from router advertisements
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # in a delete request: any scope
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
IFF_UP = 0x1
# IFLA_BR_FORWARD_DELAY is in clock_t units (USER_HZ, 100 per second on Linux).
USER_HZ = 100
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_NDMSG = struct.Struct("=BxxxiHBB")  # struct ndmsg
_RTGENMSG = struct.Struct("=Bxxx")  # struct rtgenmsg, padded
_S32 = struct.Struct("=i")
# A dump's replies come in buffers of at most 32 KiB (the kernel caps its dump skbs there).
RECV_BUFFER = 65536
# What a link watch lets the kernel queue before it overflows (ENOBUFS): a thousand ports
# deleted at once send a thousand notifications of about 1 KiB each, twice
WATCH_BUFFER = 4 << 20

# The kernel's macvlan modes (include/uapi/linux/if_link.h), keyed by libvirt's names.
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthrough": 8}

# tun/tap (include/uapi/linux/if_tun.h)
TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000  # fail instead of attaching to an existing device of that name
IFNAMSIZ = 16
SO_RCVBUFFORCE = 33  # include/uapi/asm-generic/socket.h (not in Python's socket module)


def _nla(kind: int, payload: bytes) -> bytes:
    length = _NLA.size + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length & 3)


def _nla_str(kind: int, text: str) -> bytes:
    return _nla(kind, text.encode() + b"\0")


def _nla_u32(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("=I", value))


def _attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes in DATA from OFFSET on, by type (flag bits masked off)."""
    found: dict[int, bytes] = {}
    end = len(data)
    while offset + _NLA.size <= end:
        length, kind = _NLA.unpack_from(data, offset)
        if length < _NLA.size or offset + length > end:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + _NLA.size: offset + length]
        offset += (length + 3) & ~3
    return found


def _u32(raw: bytes) -> int:
    return int(_U32.unpack_from(raw)[0])


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _mac_text(raw: bytes | None) -> str | None:
    return ":".join(f"{byte:02x}" for byte in raw) if raw else None


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def mac_bytes(mac: str) -> bytes:
    try:
        raw = bytes(int(part, 16) for part in mac.split(":"))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise HostError(f"invalid MAC address {mac!r}")
    return raw


def _check_name(name: str) -> None:
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name.strip() != name:
        raise HostError(f"invalid interface name {name!r}")


@dataclass(frozen=True)
class LinkBrief:
    """What the port code needs to know about a link: its index and whether it is up."""

    name: str
    index: int
    flags: int

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


def decode_link(payload: bytes) -> LinkInfo:
    """A LinkInfo from one RTM_NEWLINK message (the reply to a get or one part of a dump)."""
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(payload)
    attrs = _attributes(payload, _IFINFOMSG.size)
    kind = stp = delay = None
    linkinfo = attrs.get(IFLA_LINKINFO)
    if linkinfo is not None:
        info = _attributes(linkinfo)
        if IFLA_INFO_KIND in info:
            kind = _text(info[IFLA_INFO_KIND])
        data = info.get(IFLA_INFO_DATA)
        if kind == "bridge" and data is not None:
            bridge = _attributes(data)
            if IFLA_BR_STP_STATE in bridge:
                stp = bool(_u32(bridge[IFLA_BR_STP_STATE]))
            if IFLA_BR_FORWARD_DELAY in bridge:
                delay = _u32(bridge[IFLA_BR_FORWARD_DELAY]) // USER_HZ
    master = attrs.get(IFLA_MASTER)
    mtu = attrs.get(IFLA_MTU)
    return LinkInfo(
        name=_text(attrs.get(IFLA_IFNAME, b"")),
        index=index,
        kind=kind,
        up=bool(flags & IFF_UP),
        mac=_mac_text(attrs.get(IFLA_ADDRESS)),
        mtu=_u32(mtu) if mtu else 0,
        master=_u32(master) if master else None,
        stp=stp,
        forward_delay=delay,
    )


def _decode_address(payload: bytes) -> tuple[int, IPInterface] | None:
    """(ifindex, address/prefix) of one RTM_NEWADDR message; None for other families."""
    family, prefixlen, _, _, index = _IFADDRMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = _attributes(payload, _IFADDRMSG.size)
    # IFA_LOCAL is the address itself (IFA_ADDRESS is the peer on point-to-point IPv4
    # links); IPv6 reports IFA_ADDRESS, and IFA_LOCAL only with a peer.
    if family == socket.AF_INET6:
        raw = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
    else:
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None:
        return None
    if family == socket.AF_INET:
        return index, ipaddress.IPv4Interface((ipaddress.IPv4Address(raw), prefixlen))
    return index, ipaddress.IPv6Interface((ipaddress.IPv6Address(raw), prefixlen))


def _decode_route(payload: bytes, names: dict[int, str]) -> RouteInfo | None:
    """One RTM_NEWROUTE message as a RouteInfo; None unless IPv4/IPv6 unicast."""
    family, dst_len, _, _, table, protocol, _, route_type, _ = _RTMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6) or route_type != RTN_UNICAST:
        return None
    attrs = _attributes(payload, _RTMSG.size)
    if RTA_TABLE in attrs:
        table = _u32(attrs[RTA_TABLE])
    address_type: type[IPAddress]
    network_type: type[IPNetwork]
    if family == socket.AF_INET:
        address_type, network_type = ipaddress.IPv4Address, ipaddress.IPv4Network
    else:
        address_type, network_type = ipaddress.IPv6Address, ipaddress.IPv6Network
    dst = attrs.get(RTA_DST)
    gateway = attrs.get(RTA_GATEWAY)
    oif = attrs.get(RTA_OIF)
    priority = attrs.get(RTA_PRIORITY)
    return RouteInfo(
        destination=network_type((address_type(dst) if dst else 0, dst_len), strict=False),
        link=names.get(_u32(oif)) if oif else None,
        gateway=address_type(gateway) if gateway else None,
        metric=_u32(priority) if priority else 0,
        protocol=protocol,
        table=table,
    )


class Rtnl:
    """One NETLINK_ROUTE socket in the namespace the process is in (opened on first use).

    Not thread-safe: a thread (or a Host) that needs one opens its own.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = 0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sock(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                     NETLINK_ROUTE)
                sock.bind((0, 0))
            except OSError as exc:
                raise HostError(f"cannot open a netlink socket: {exc.strerror}") from None
            self._sock = sock
        return self._sock

    # --- plumbing -----------------------------------------------------------------------

    def _request(self, what: str, msg_type: int, flags: int, body: bytes) -> list[bytes]:
        """Send one request and collect its replies (payloads) up to the ACK or error."""
        return self._exchange(what, msg_type, flags | NLM_F_ACK, body)

    def _dump(self, what: str, msg_type: int, body: bytes) -> list[bytes]:
        """Send one dump request; its reply messages (payloads) up to NLMSG_DONE."""
        return self._exchange(what, msg_type, NLM_F_DUMP, body)

    def _exchange(self, what: str, msg_type: int, flags: int, body: bytes) -> list[bytes]:
        self._seq += 1
        seq = self._seq
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST,
                                seq, 0)
        sock = self.sock
        try:
            sock.send(header + body)
        except OSError as exc:
            raise HostError(f"cannot {what}: netlink send failed: {exc.strerror}") from None
        replies: list[bytes] = []
        while True:
            data = sock.recv(RECV_BUFFER)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, reply_seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    raise HostError(f"cannot {what}: malformed netlink reply")
                payload = data[offset + _NLMSGHDR.size: offset + length]
                offset += (length + 3) & ~3
                if reply_seq != seq:
                    continue  # a late reply to an earlier, abandoned request
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    # an ACK (code 0) or error ends a request; NLMSG_DONE ends a dump, and
                    # carries an error code too when the dump failed
                    (code,) = struct.unpack_from("=i", payload) if payload else (0,)
                    if code:
                        raise NetlinkFailure(what, -code)
                    return replies
                replies.append(payload)

    @staticmethod
    def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
        return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)

    # --- queries ------------------------------------------------------------------------

    def link(self, name: str) -> LinkBrief | None:
        """The link called NAME, or None."""
        _check_name(name)
        body = (self._ifinfo() + _nla_str(IFLA_IFNAME, name)
                + _nla_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))
        try:
            replies = self._request(f"look up {name}", RTM_GETLINK, 0, body)
        except NetlinkFailure as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for payload in replies:
            _, _, index, flags, _ = _IFINFOMSG.unpack_from(payload)
            return LinkBrief(name, index, flags)
        return None

    def num_vfs(self, name: str) -> int | None:
        """How many SR-IOV virtual functions NAME has enabled (0 when it reports none);
        None if NAME does not exist."""
        _check_name(name)
        body = (self._ifinfo() + _nla_str(IFLA_IFNAME, name)
                + _nla_u32(IFLA_EXT_MASK, RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS))
        try:
            replies = self._request(f"look up {name}", RTM_GETLINK, 0, body)
        except NetlinkFailure as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for payload in replies:
            offset = _IFINFOMSG.size
            while offset + _NLA.size <= len(payload):
                length, kind = _NLA.unpack_from(payload, offset)
                if length < _NLA.size:
                    break
                if kind & ~NLA_F_NESTED == IFLA_NUM_VF:
                    return int(struct.unpack_from("=I", payload, offset + _NLA.size)[0])
                offset += (length + 3) & ~3
            return 0
        return None

    def link_info(self, name: str) -> LinkInfo | None:
        """Everything :class:`LinkInfo` holds about the link called NAME, or None."""
        _check_name(name)
        body = (self._ifinfo() + _nla_str(IFLA_IFNAME, name)
                + _nla_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))
        try:
            replies = self._request(f"look up {name}", RTM_GETLINK, 0, body)
        except NetlinkFailure as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for payload in replies:
            return decode_link(payload)
        return None

    def links(self) -> list[LinkInfo]:
        """Every link of the namespace, in ifindex order."""
        body = self._ifinfo() + _nla_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        return [decode_link(payload) for payload in self._dump("list links", RTM_GETLINK, body)]

    def peer_links(self) -> list[LinkInfo]:
        """The links of every other namespace this one has an id for (a namespace a link of
        ours was moved to gets one), for telling a link moved away from one deleted."""
        found = []
        for payload in self._dump("list namespace ids", RTM_GETNSID,
                                  _RTGENMSG.pack(socket.AF_UNSPEC)):
            raw = _attributes(payload, _RTGENMSG.size).get(NETNSA_NSID)
            if raw is None:
                continue
            (nsid,) = _S32.unpack_from(raw)
            if nsid < 0:
                continue
            body = (self._ifinfo() + _nla(IFLA_TARGET_NETNSID, _S32.pack(nsid))
                    + _nla_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))
            try:
                replies = self._dump(f"list the links of namespace id {nsid}", RTM_GETLINK,
                                     body)
            except NetlinkFailure:
                continue  # that namespace went away since
            found += [decode_link(reply) for reply in replies]
        return found

    def addresses(self, names: dict[int, str] | None = None) -> list[AddressInfo]:
        """Every IPv4 and IPv6 address; NAMES (ifindex to name) saves a link dump when the
        caller has one."""
        if names is None:
            names = {link.index: link.name for link in self.links()}
        body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        result = []
        for payload in self._dump("list addresses", RTM_GETADDR, body):
            decoded = _decode_address(payload)
            if decoded is not None:
                index, interface = decoded
                result.append(AddressInfo(names.get(index, str(index)), interface))
        return result

    def routes(self, table: int = RT_TABLE_MAIN,
               names: dict[int, str] | None = None) -> list[RouteInfo]:
        """Unicast routes of TABLE, IPv4 then IPv6."""
        if names is None:
            names = {link.index: link.name for link in self.links()}
        result = []
        for family in (socket.AF_INET, socket.AF_INET6):
            body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
            for payload in self._dump("list routes", RTM_GETROUTE, body):
                route = _decode_route(payload, names)
                if route is not None and route.table == table:
                    result.append(route)
        return result

    def neighbours(self, link: str) -> list[NeighbourInfo]:
        """LINK's entries in the kernel's neighbour tables (ARP for IPv4, neighbour
        discovery for IPv6), without the ones that never resolved (no link-layer address)."""
        index = self.index(link)
        result = []
        for family in (socket.AF_INET, socket.AF_INET6):
            body = _NDMSG.pack(family, index, 0, 0, 0)
            for payload in self._dump(f"list the neighbours of {link}", RTM_GETNEIGH, body):
                if len(payload) < _NDMSG.size:
                    continue
                reply_family, reply_index, state, _, _ = _NDMSG.unpack_from(payload)
                attrs = _attributes(payload, _NDMSG.size)
                mac = _mac_text(attrs.get(NDA_LLADDR))
                if reply_index != index or NDA_DST not in attrs or mac is None:
                    continue  # older kernels ignore the ifindex filter of a dump
                address = ipaddress.ip_address(attrs[NDA_DST])
                result.append(NeighbourInfo(link, address, mac, state))
        return result

    def exists(self, name: str) -> bool:
        _check_name(name)
        try:
            socket.if_nametoindex(name)
        except OSError:
            return False
        return True

    def index(self, name: str) -> int:
        """NAME's ifindex (SIOCGIFINDEX: an ioctl, cheaper than a netlink round trip)."""
        _check_name(name)
        try:
            return socket.if_nametoindex(name)
        except OSError:
            raise HostError(f"interface {name} does not exist") from None

    # --- changes ------------------------------------------------------------------------

    def create_macvtap(self, name: str, lower: str, mode: str, mac: str | None,
                       up: bool = True) -> int:
        """Create macvtap NAME on LOWER in MODE (libvirt's name), with MAC, up; its ifindex.

        One RTM_NEWLINK carries the MAC and the up flag, so there is no window in which the
        device exists with a random MAC. Fails if NAME exists (never adopts a link).
        """
        _check_name(name)
        if mode not in MACVLAN_MODES:
            raise HostError(f"unknown macvtap mode {mode!r}")
        lower_index = self.index(lower)
        info = _nla_str(IFLA_INFO_KIND, "macvtap") + _nla(
            IFLA_INFO_DATA | NLA_F_NESTED, _nla_u32(IFLA_MACVLAN_MODE, MACVLAN_MODES[mode])
        )
        body = self._ifinfo(flags=IFF_UP if up else 0, change=IFF_UP if up else 0)
        body += _nla_str(IFLA_IFNAME, name) + _nla_u32(IFLA_LINK, lower_index)
        if mac is not None:
            body += _nla(IFLA_ADDRESS, mac_bytes(mac))
        body += _nla(IFLA_LINKINFO | NLA_F_NESTED, info)
        what = f"create macvtap {name} on {lower} (mode {mode})"
        self._request(what, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)
        return self.index(name)

    def create_link(self, name: str, kind: str, *, up: bool = False) -> int:
        """Create a link of a KIND that needs no parameters (ifb); its ifindex."""
        _check_name(name)
        body = self._ifinfo(flags=IFF_UP if up else 0, change=IFF_UP if up else 0)
        body += _nla_str(IFLA_IFNAME, name)
        body += _nla(IFLA_LINKINFO | NLA_F_NESTED, _nla_str(IFLA_INFO_KIND, kind))
        self._request(f"create {kind} device {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                      body)
        return self.index(name)

    def create_bridge(self, name: str, *, stp: bool, forward_delay: int, mac: str | None = None,
                      mtu: int | None = None, vlan_filtering: bool = False) -> None:
        """Create bridge NAME in one RTM_NEWLINK (FORWARD_DELAY in seconds); fails if NAME
        exists (never adopts a link)."""
        _check_name(name)
        # The kernel applies the forward delay before it enables STP, whatever the attribute
        # order; with kernel STP it then raises a delay below 2 s to 2 s itself.
        data = (_nla_u32(IFLA_BR_FORWARD_DELAY, forward_delay * USER_HZ)
                + _nla_u32(IFLA_BR_STP_STATE, 1 if stp else 0))
        if vlan_filtering:
            data += _nla(IFLA_BR_VLAN_FILTERING, b"\x01")
        info = _nla_str(IFLA_INFO_KIND, "bridge") + _nla(IFLA_INFO_DATA | NLA_F_NESTED, data)
        body = self._ifinfo() + _nla_str(IFLA_IFNAME, name)
        if mac is not None:
            body += _nla(IFLA_ADDRESS, mac_bytes(mac))
        if mtu is not None:
            body += _nla_u32(IFLA_MTU, mtu)
        body += _nla(IFLA_LINKINFO | NLA_F_NESTED, info)
        self._request(f"create bridge {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def add_address(self, link: str, interface: IPInterface, *,
                    broadcast: ipaddress.IPv4Address | None = None, flags: int = 0) -> None:
        """Add INTERFACE (address/prefix) to LINK, with BROADCAST (IPv4) and IFA_F_* FLAGS."""
        index = self.index(link)
        family = _family(interface.version)
        packed = interface.ip.packed
        body = _IFADDRMSG.pack(family, interface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        body += _nla(IFA_ADDRESS, packed)
        if family == socket.AF_INET:
            body += _nla(IFA_LOCAL, packed)
            if broadcast is not None:
                body += _nla(IFA_BROADCAST, broadcast.packed)
        if flags:
            body += _nla_u32(IFA_FLAGS, flags)
        self._request(f"add address {interface} to {link}", RTM_NEWADDR,
                      NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_address(self, link: str, interface: IPInterface) -> None:
        """Remove INTERFACE from LINK (NetlinkFailure EADDRNOTAVAIL if it is not there)."""
        index = self.index(link)
        family = _family(interface.version)
        packed = interface.ip.packed
        body = _IFADDRMSG.pack(family, interface.network.prefixlen, 0, 0, index)
        body += _nla(IFA_ADDRESS, packed)
        if family == socket.AF_INET:
            body += _nla(IFA_LOCAL, packed)
        self._request(f"delete address {interface} from {link}", RTM_DELADDR, 0, body)

    def _route_body(self, link: str, destination: IPNetwork, gateway: IPAddress | None,
                    metric: int | None, table: int, *, adding: bool, protocol: int) -> bytes:
        family = _family(destination.version)
        if adding:
            # as `ip route add`: a route without a gateway reaches its hosts on the link
            scope = RT_SCOPE_UNIVERSE if gateway is not None or family != socket.AF_INET \
                else RT_SCOPE_LINK
            route_type = RTN_UNICAST
        else:
            # as `ip route del`: any scope, type and protocol; dst, gateway, dev and
            # metric select the route
            scope, route_type, protocol = RT_SCOPE_NOWHERE, 0, 0
        header_table = table if table < 256 else 0
        body = _RTMSG.pack(family, destination.prefixlen, 0, 0, header_table, protocol, scope,
                           route_type, 0)
        if table >= 256:
            body += _nla_u32(RTA_TABLE, table)
        if destination.prefixlen:
            body += _nla(RTA_DST, destination.network_address.packed)
        if gateway is not None:
            body += _nla(RTA_GATEWAY, gateway.packed)
        body += _nla_u32(RTA_OIF, self.index(link))
        if metric:
            body += _nla_u32(RTA_PRIORITY, metric)
        return body

    def add_route(self, link: str, destination: IPNetwork, gateway: IPAddress | None = None,
                  metric: int | None = None, *, table: int = RT_TABLE_MAIN,
                  protocol: int = RTPROT_BOOT) -> None:
        """Add a unicast route to DESTINATION on LINK (fails if it exists)."""
        body = self._route_body(link, destination, gateway, metric, table, adding=True,
                                protocol=protocol)
        via = f" via {gateway}" if gateway is not None else ""
        self._request(f"add route {destination}{via} dev {link}", RTM_NEWROUTE,
                      NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_route(self, link: str, destination: IPNetwork, gateway: IPAddress | None = None,
                     metric: int | None = None, *, table: int = RT_TABLE_MAIN) -> None:
        """Delete the route to DESTINATION on LINK (NetlinkFailure ESRCH if there is none)."""
        body = self._route_body(link, destination, gateway, metric, table, adding=False,
                                protocol=0)
        self._request(f"delete route {destination} dev {link}", RTM_DELROUTE, 0, body)

    def set_link(self, name: str, *, mac: str | None = None, master: str | None = None,
                 up: bool | None = None, mtu: int | None = None) -> None:
        """Change NAME's MAC, bridge, MTU and up/down state in one RTM_NEWLINK."""
        index = self.index(name)
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        body = self._ifinfo(index=index, flags=flags, change=change)
        if mac is not None:
            body += _nla(IFLA_ADDRESS, mac_bytes(mac))
        if mtu is not None:
            body += _nla_u32(IFLA_MTU, mtu)
        if master is not None:
            body += _nla_u32(IFLA_MASTER, self.index(master))
        parts = [f"MAC {mac}" if mac else "", f"master {master}" if master else "",
                 f"MTU {mtu}" if mtu else "", "" if up is None else ("up" if up else "down")]
        what = f"set {name} " + ", ".join(part for part in parts if part)
        self._request(what, RTM_NEWLINK, 0, body)

    def set_bridge_port_isolated(self, name: str, isolated: bool) -> None:
        """Mark bridge port NAME isolated: it then reaches only the bridge's non-isolated
        ports (libvirt's <port isolated='yes'/>)."""
        body = _IFINFOMSG.pack(socket.AF_BRIDGE, 0, self.index(name), 0, 0)
        body += _nla(IFLA_PROTINFO | NLA_F_NESTED,
                     _nla(IFLA_BRPORT_ISOLATED, struct.pack("=B", 1 if isolated else 0)))
        what = f"set bridge port {name} {'isolated' if isolated else 'not isolated'}"
        self._request(what, RTM_SETLINK, 0, body)

    def delete_link(self, name: str) -> bool:
        """Delete NAME; False if it did not exist."""
        _check_name(name)
        body = self._ifinfo() + _nla_str(IFLA_IFNAME, name)
        try:
            self._request(f"delete {name}", RTM_DELLINK, 0, body)
        except NetlinkFailure as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def link_kind_supported(self, kind: str) -> bool:
        """Whether the kernel can create links of KIND, asked without creating one.

        The request names the kind but carries an MTU of 1, which every Ethernet-like device
        refuses after the kernel has found the kind's driver: EINVAL or ERANGE mean the driver
        is there, EOPNOTSUPP that it is not (nor loadable).
        """
        probe_name = f"vnprobe{os.getpid() % 100000}"
        body = self._ifinfo() + _nla_str(IFLA_IFNAME, probe_name) + _nla_u32(IFLA_MTU, 1)
        body += _nla(IFLA_LINKINFO | NLA_F_NESTED, _nla_str(IFLA_INFO_KIND, kind))
        try:
            self._request(f"probe link kind {kind}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                          body)
        except NetlinkFailure as exc:
            return exc.code != errno.EOPNOTSUPP
        # Created after all (a kind without an MTU check): remove it again.
        self.delete_link(probe_name)
        return True


@dataclass(frozen=True)
class LinkGone:
    """A link that left the namespace: deleted, or ``moved`` into another namespace."""

    index: int
    name: str
    moved: bool


class LinkWatch:
    """The link notifications of the namespace the process is in, read without blocking:
    :meth:`read` returns the links that left it since the last read. Meant for an event
    loop's reader (``fileno``)."""

    def __init__(self) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC
                                 | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
        except OSError as exc:
            raise HostError(f"cannot open a netlink socket: {exc.strerror}") from None
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, WATCH_BUFFER)
            except OSError:  # without CAP_NET_ADMIN: what the system allows
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, WATCH_BUFFER)
            sock.bind((0, RTMGRP_LINK))
        except OSError as exc:
            sock.close()
            raise HostError(f"cannot watch link notifications: {exc.strerror}") from None
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def read(self) -> tuple[list[LinkGone], bool]:
        """(the links gone since the last read, whether notifications were lost: the kernel
        dropped some because they were not read in time)."""
        gone: list[LinkGone] = []
        lost = False
        while True:
            try:
                data = self._sock.recv(RECV_BUFFER)
            except BlockingIOError:
                return gone, lost
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    lost = True
                    continue
                raise HostError(f"cannot read link notifications: {exc.strerror}") from None
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                payload = data[offset + _NLMSGHDR.size: offset + length]
                offset += (length + 3) & ~3
                if kind != RTM_DELLINK or len(payload) < _IFINFOMSG.size:
                    continue
                _, _, index, _, _ = _IFINFOMSG.unpack_from(payload)
                attrs = _attributes(payload, _IFINFOMSG.size)
                gone.append(LinkGone(index, _text(attrs.get(IFLA_IFNAME, b"")),
                                     IFLA_NEW_NETNSID in attrs))


_per_thread = threading.local()


def shared_rtnl() -> Rtnl:
    """A long-lived socket for the namespace the process is in now (a process that switches
    namespaces gets one per namespace: a netlink socket stays in the one it was opened in).
    Keyed by pid too: a forked child must not read replies from its parent's socket; and
    kept per thread, as an Rtnl is not thread-safe (virtnetd's worker threads each get their
    own), in thread-local storage so that a thread's sockets close when it ends."""
    key = (os.getpid(), os.stat("/proc/self/ns/net").st_ino)
    sockets: dict[tuple[int, int], Rtnl] | None = getattr(_per_thread, "sockets", None)
    if sockets is None:
        sockets = _per_thread.sockets = {}
    found = sockets.get(key)
    if found is None:
        found = sockets[key] = Rtnl()
    return found


# --- tun/tap --------------------------------------------------------------------------


def create_persistent_tap(name: str, *, vnet_hdr: bool = True) -> None:
    """Create the persistent tap NAME owned by root, as libvirt makes vnetN for a guest.

    IFF_TUN_EXCL makes the kernel refuse an existing name instead of attaching to it, so
    another guest's tap is never taken over.
    """
    _check_name(name)
    flags = IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL | (IFF_VNET_HDR if vnet_hdr else 0)
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HostError(
            f"cannot create tap {name}: {TUN_DEVICE} is missing (kernel TUN/TAP support, "
            "CONFIG_TUN, or the device node)"
        ) from None
    except OSError as exc:
        raise HostError(f"cannot create tap {name}: {TUN_DEVICE}: {exc.strerror}") from None
    try:
        request = struct.pack("16sH22x", name.encode(), flags)
        try:
            fcntl.ioctl(fd, TUNSETIFF, request)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise HostError(f"cannot create tap {name}: interface already exists") from None
            raise HostError(f"cannot create tap {name}: {exc.strerror}") from None
        try:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        except OSError as exc:
            raise HostError(f"cannot make tap {name} persistent: {exc.strerror}") from None
    finally:
        os.close(fd)


def tun_available() -> bool:
    """Whether /dev/net/tun opens (the kernel has TUN/TAP and the node exists)."""
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


__all__ = ["AddressInfo", "LinkBrief", "LinkInfo", "MACVLAN_MODES", "NetlinkFailure",
           "RouteInfo", "Rtnl", "create_persistent_tap", "decode_link", "mac_bytes",
           "shared_rtnl", "tun_available"]
