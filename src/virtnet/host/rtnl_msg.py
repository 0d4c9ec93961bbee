"""The rtnetlink messages virtnet speaks, as bytes: the kernel's constants, the netlink header
and attribute (TLV) packing, the request bodies of every link, address, route and neighbour
request :class:`virtnet.host.rtnl.Rtnl` sends, and the decoders of the replies and link
notifications it reads. Pure functions of their arguments: no socket is opened here.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from virtnet.errors import HostError
from virtnet.facts import (
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

# The kernel's macvlan modes (include/uapi/linux/if_link.h), keyed by libvirt's names.
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthrough": 8}
IFNAMSIZ = 16


class MalformedMessage(ValueError):
    """A netlink message header whose length is shorter than the header itself."""


# --- framing and attributes ------------------------------------------------------------


def request_frame(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    """One request message: the netlink header (NLM_F_REQUEST added to FLAGS) and BODY."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST,
                          seq, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence number, payload) of each message in one datagram DATA; raises
    MalformedMessage at a header that is too short (what came before was yielded)."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            raise MalformedMessage("netlink message shorter than its header")
        payload = data[offset + _NLMSGHDR.size: offset + length]
        offset += (length + 3) & ~3
        yield kind, seq, payload


def error_code(payload: bytes) -> int:
    """The (negative errno, or 0) code of an NLMSG_ERROR or NLMSG_DONE payload."""
    (code,) = _S32.unpack_from(payload) if payload else (0,)
    return int(code)


def nla(kind: int, payload: bytes) -> bytes:
    length = _NLA.size + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length & 3)


def nla_str(kind: int, text: str) -> bytes:
    return nla(kind, text.encode() + b"\0")


def nla_u32(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=I", value))


def attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
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


def check_name(name: str) -> None:
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name.strip() != name:
        raise HostError(f"invalid interface name {name!r}")


# --- links: requests ---------------------------------------------------------------------


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    """A struct ifinfomsg of no particular family."""
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


def _up_flags(up: bool) -> bytes:
    return ifinfo(flags=IFF_UP if up else 0, change=IFF_UP if up else 0)


def link_request(name: str, *, with_vfs: bool = False) -> bytes:
    """An RTM_GETLINK of the link called NAME (without statistics; WITH_VFS: and with its
    virtual functions)."""
    check_name(name)
    mask = RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS if with_vfs else RTEXT_FILTER_SKIP_STATS
    return ifinfo() + nla_str(IFLA_IFNAME, name) + nla_u32(IFLA_EXT_MASK, mask)


def links_request(nsid: int | None = None) -> bytes:
    """An RTM_GETLINK dump of every link, of the namespace with id NSID when given."""
    target = b"" if nsid is None else nla(IFLA_TARGET_NETNSID, _S32.pack(nsid))
    return ifinfo() + target + nla_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)


def nsids_request() -> bytes:
    """An RTM_GETNSID dump: the ids this namespace has for others."""
    return _RTGENMSG.pack(socket.AF_UNSPEC)


def macvtap_request(name: str, lower_index: int, mode: str, mac: str | None,
                    up: bool) -> bytes:
    """An RTM_NEWLINK of macvtap NAME on LOWER_INDEX in MODE (a MACVLAN_MODES key)."""
    info = nla_str(IFLA_INFO_KIND, "macvtap") + nla(
        IFLA_INFO_DATA | NLA_F_NESTED, nla_u32(IFLA_MACVLAN_MODE, MACVLAN_MODES[mode])
    )
    body = _up_flags(up)
    body += nla_str(IFLA_IFNAME, name) + nla_u32(IFLA_LINK, lower_index)
    if mac is not None:
        body += nla(IFLA_ADDRESS, mac_bytes(mac))
    return body + nla(IFLA_LINKINFO | NLA_F_NESTED, info)


def new_link_request(name: str, kind: str, *, up: bool) -> bytes:
    """An RTM_NEWLINK of a KIND that needs no parameters (ifb)."""
    check_name(name)
    body = _up_flags(up) + nla_str(IFLA_IFNAME, name)
    return body + nla(IFLA_LINKINFO | NLA_F_NESTED, nla_str(IFLA_INFO_KIND, kind))


def bridge_request(name: str, *, stp: bool, forward_delay: int, mac: str | None,
                   mtu: int | None, vlan_filtering: bool) -> bytes:
    """An RTM_NEWLINK of bridge NAME (FORWARD_DELAY in seconds)."""
    check_name(name)
    # The kernel applies the forward delay before it enables STP, whatever the attribute
    # order; with kernel STP it then raises a delay below 2 s to 2 s itself.
    data = (nla_u32(IFLA_BR_FORWARD_DELAY, forward_delay * USER_HZ)
            + nla_u32(IFLA_BR_STP_STATE, 1 if stp else 0))
    if vlan_filtering:
        data += nla(IFLA_BR_VLAN_FILTERING, b"\x01")
    info = nla_str(IFLA_INFO_KIND, "bridge") + nla(IFLA_INFO_DATA | NLA_F_NESTED, data)
    body = ifinfo() + nla_str(IFLA_IFNAME, name)
    if mac is not None:
        body += nla(IFLA_ADDRESS, mac_bytes(mac))
    if mtu is not None:
        body += nla_u32(IFLA_MTU, mtu)
    return body + nla(IFLA_LINKINFO | NLA_F_NESTED, info)


def set_link_request(index: int, *, mac: str | None, mtu: int | None,
                     up: bool | None) -> bytes:
    """An RTM_NEWLINK changing link INDEX's MAC, MTU and up/down state (the caller appends
    IFLA_MASTER when it sets one)."""
    flags = change = 0
    if up is not None:
        change = IFF_UP
        flags = IFF_UP if up else 0
    body = ifinfo(index=index, flags=flags, change=change)
    if mac is not None:
        body += nla(IFLA_ADDRESS, mac_bytes(mac))
    if mtu is not None:
        body += nla_u32(IFLA_MTU, mtu)
    return body


def describe_set_link(name: str, *, mac: str | None, master: str | None, mtu: int | None,
                      up: bool | None) -> str:
    """What a set_link request does, for its error message."""
    parts = [f"MAC {mac}" if mac else "", f"master {master}" if master else "",
             f"MTU {mtu}" if mtu else "", "" if up is None else ("up" if up else "down")]
    return f"set {name} " + ", ".join(part for part in parts if part)


def port_isolated_request(index: int, isolated: bool) -> bytes:
    """An RTM_SETLINK (bridge family) marking port INDEX isolated or not."""
    body = _IFINFOMSG.pack(socket.AF_BRIDGE, 0, index, 0, 0)
    return body + nla(IFLA_PROTINFO | NLA_F_NESTED,
                      nla(IFLA_BRPORT_ISOLATED, struct.pack("=B", 1 if isolated else 0)))


def delete_link_request(name: str) -> bytes:
    """An RTM_DELLINK of the link called NAME."""
    check_name(name)
    return ifinfo() + nla_str(IFLA_IFNAME, name)


def kind_probe_request(probe_name: str, kind: str) -> bytes:
    """An RTM_NEWLINK of KIND with an MTU of 1, which the kind's driver refuses (see
    Rtnl.link_kind_supported)."""
    body = ifinfo() + nla_str(IFLA_IFNAME, probe_name) + nla_u32(IFLA_MTU, 1)
    return body + nla(IFLA_LINKINFO | NLA_F_NESTED, nla_str(IFLA_INFO_KIND, kind))


# --- links: replies ----------------------------------------------------------------------


@dataclass(frozen=True)
class LinkBrief:
    """What the port code needs to know about a link: its index and whether it is up."""

    name: str
    index: int
    flags: int

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


def decode_brief(name: str, payload: bytes) -> LinkBrief:
    """NAME's LinkBrief from the RTM_NEWLINK reply to its look-up."""
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(payload)
    return LinkBrief(name, index, flags)


def decode_num_vfs(payload: bytes) -> int:
    """IFLA_NUM_VF of one RTM_NEWLINK message, 0 when it has none."""
    offset = _IFINFOMSG.size
    while offset + _NLA.size <= len(payload):
        length, kind = _NLA.unpack_from(payload, offset)
        if length < _NLA.size:
            break
        if kind & ~NLA_F_NESTED == IFLA_NUM_VF:
            return int(struct.unpack_from("=I", payload, offset + _NLA.size)[0])
        offset += (length + 3) & ~3
    return 0


def decode_link(payload: bytes) -> LinkInfo:
    """A LinkInfo from one RTM_NEWLINK message (the reply to a get or one part of a dump)."""
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(payload)
    attrs = attributes(payload, _IFINFOMSG.size)
    kind = stp = delay = None
    linkinfo = attrs.get(IFLA_LINKINFO)
    if linkinfo is not None:
        info = attributes(linkinfo)
        if IFLA_INFO_KIND in info:
            kind = _text(info[IFLA_INFO_KIND])
        data = info.get(IFLA_INFO_DATA)
        if kind == "bridge" and data is not None:
            bridge = attributes(data)
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


def decode_nsid(payload: bytes) -> int | None:
    """The namespace id of one RTM_NEWNSID message; None when absent or unassigned."""
    raw = attributes(payload, _RTGENMSG.size).get(NETNSA_NSID)
    if raw is None:
        return None
    (nsid,) = _S32.unpack_from(raw)
    return int(nsid) if nsid >= 0 else None


@dataclass(frozen=True)
class LinkGone:
    """A link that left the namespace: deleted, or ``moved`` into another namespace."""

    index: int
    name: str
    moved: bool


def decode_link_gone(kind: int, payload: bytes) -> LinkGone | None:
    """The link an RTM_DELLINK notification is about; None for other notifications."""
    if kind != RTM_DELLINK or len(payload) < _IFINFOMSG.size:
        return None
    _, _, index, _, _ = _IFINFOMSG.unpack_from(payload)
    attrs = attributes(payload, _IFINFOMSG.size)
    return LinkGone(index, _text(attrs.get(IFLA_IFNAME, b"")), IFLA_NEW_NETNSID in attrs)


# --- addresses, routes, neighbours ---------------------------------------------------------


def addresses_request() -> bytes:
    """An RTM_GETADDR dump of every family."""
    return _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def address_request(index: int, interface: IPInterface, *,
                    broadcast: ipaddress.IPv4Address | None = None, flags: int = 0) -> bytes:
    """The body of an RTM_NEWADDR or RTM_DELADDR of INTERFACE on link INDEX, with
    BROADCAST (IPv4) and IFA_F_* FLAGS (an add's)."""
    family = _family(interface.version)
    packed = interface.ip.packed
    body = _IFADDRMSG.pack(family, interface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += nla(IFA_ADDRESS, packed)
    if family == socket.AF_INET:
        body += nla(IFA_LOCAL, packed)
        if broadcast is not None:
            body += nla(IFA_BROADCAST, broadcast.packed)
    if flags:
        body += nla_u32(IFA_FLAGS, flags)
    return body


def decode_address(payload: bytes) -> tuple[int, IPInterface] | None:
    """(ifindex, address/prefix) of one RTM_NEWADDR message; None for other families."""
    family, prefixlen, _, _, index = _IFADDRMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = attributes(payload, _IFADDRMSG.size)
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


def routes_request(family: int) -> bytes:
    """An RTM_GETROUTE dump of FAMILY."""
    return _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)


def route_request(oif: int, destination: IPNetwork, gateway: IPAddress | None,
                  metric: int | None, table: int, *, adding: bool, protocol: int) -> bytes:
    """The body of an RTM_NEWROUTE (ADDING) or RTM_DELROUTE to DESTINATION out of link OIF."""
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
        body += nla_u32(RTA_TABLE, table)
    if destination.prefixlen:
        body += nla(RTA_DST, destination.network_address.packed)
    if gateway is not None:
        body += nla(RTA_GATEWAY, gateway.packed)
    body += nla_u32(RTA_OIF, oif)
    if metric:
        body += nla_u32(RTA_PRIORITY, metric)
    return body


def decode_route(payload: bytes, names: dict[int, str]) -> RouteInfo | None:
    """One RTM_NEWROUTE message as a RouteInfo; None unless IPv4/IPv6 unicast."""
    family, dst_len, _, _, table, protocol, _, route_type, _ = _RTMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6) or route_type != RTN_UNICAST:
        return None
    attrs = attributes(payload, _RTMSG.size)
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


def neighbours_request(family: int, index: int) -> bytes:
    """An RTM_GETNEIGH dump of FAMILY filtered to link INDEX."""
    return _NDMSG.pack(family, index, 0, 0, 0)


def decode_neighbour(payload: bytes, link: str, index: int) -> NeighbourInfo | None:
    """One RTM_NEWNEIGH message of link INDEX (called LINK) as a NeighbourInfo; None for
    another link's or one that never resolved (no link-layer address)."""
    if len(payload) < _NDMSG.size:
        return None
    _, reply_index, state, _, _ = _NDMSG.unpack_from(payload)
    attrs = attributes(payload, _NDMSG.size)
    mac = _mac_text(attrs.get(NDA_LLADDR))
    if reply_index != index or NDA_DST not in attrs or mac is None:
        return None  # older kernels ignore the ifindex filter of a dump
    return NeighbourInfo(link, ipaddress.ip_address(attrs[NDA_DST]), mac, state)
