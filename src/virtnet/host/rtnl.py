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

The messages themselves (constants, packing, request bodies, reply decoders) are in
:mod:`virtnet.host.rtnl_msg`; this module holds the sockets that send and read them. Errors
become :class:`NetlinkFailure` (a HostError carrying the errno). Name-based helpers
with virtnet's own messages and "not found is success" deletes are in
:mod:`virtnet.host.netlink`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading

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
from virtnet.host.rtnl_msg import (
    IFLA_MASTER,
    MACVLAN_MODES,
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLMSG_DONE,
    NLMSG_ERROR,
    RT_TABLE_MAIN,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_GETNSID,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_SETLINK,
    RTMGRP_LINK,
    RTPROT_BOOT,
    LinkBrief,
    LinkGone,
    MalformedMessage,
    address_request,
    addresses_request,
    bridge_request,
    check_name,
    decode_address,
    decode_brief,
    decode_link,
    decode_link_gone,
    decode_neighbour,
    decode_nsid,
    decode_num_vfs,
    decode_route,
    delete_link_request,
    describe_set_link,
    error_code,
    kind_probe_request,
    link_request,
    links_request,
    macvtap_request,
    messages,
    neighbours_request,
    new_link_request,
    nla_u32,
    nsids_request,
    port_isolated_request,
    request_frame,
    route_request,
    routes_request,
    set_link_request,
)

# A dump's replies come in buffers of at most 32 KiB (the kernel caps its dump skbs there).
RECV_BUFFER = 65536
# What a link watch lets the kernel queue before it overflows (ENOBUFS): a thousand ports
# deleted at once send a thousand notifications of about 1 KiB each, twice
WATCH_BUFFER = 4 << 20

# tun/tap (include/uapi/linux/if_tun.h)
TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000  # fail instead of attaching to an existing device of that name
SO_RCVBUFFORCE = 33  # include/uapi/asm-generic/socket.h (not in Python's socket module)


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
        sock = self.sock
        try:
            sock.send(request_frame(msg_type, flags, seq, body))
        except OSError as exc:
            raise HostError(f"cannot {what}: netlink send failed: {exc.strerror}") from None
        replies: list[bytes] = []
        while True:
            try:
                for kind, reply_seq, payload in messages(sock.recv(RECV_BUFFER)):
                    if reply_seq != seq:
                        continue  # a late reply to an earlier, abandoned request
                    if kind in (NLMSG_ERROR, NLMSG_DONE):
                        # an ACK (code 0) or error ends a request; NLMSG_DONE ends a dump,
                        # and carries an error code too when the dump failed
                        code = error_code(payload)
                        if code:
                            raise NetlinkFailure(what, -code)
                        return replies
                    replies.append(payload)
            except MalformedMessage:
                raise HostError(f"cannot {what}: malformed netlink reply") from None

    def _look_up(self, name: str, body: bytes) -> list[bytes] | None:
        """The replies to an RTM_GETLINK of NAME; None when there is no such link."""
        try:
            return self._request(f"look up {name}", RTM_GETLINK, 0, body)
        except NetlinkFailure as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    def _names(self, names: dict[int, str] | None) -> dict[int, str]:
        if names is None:
            names = {link.index: link.name for link in self.links()}
        return names

    # --- queries ------------------------------------------------------------------------

    def link(self, name: str) -> LinkBrief | None:
        """The link called NAME, or None."""
        replies = self._look_up(name, link_request(name))
        return decode_brief(name, replies[0]) if replies else None

    def num_vfs(self, name: str) -> int | None:
        """How many SR-IOV virtual functions NAME has enabled (0 when it reports none);
        None if NAME does not exist."""
        replies = self._look_up(name, link_request(name, with_vfs=True))
        return decode_num_vfs(replies[0]) if replies else None

    def link_info(self, name: str) -> LinkInfo | None:
        """Everything :class:`LinkInfo` holds about the link called NAME, or None."""
        replies = self._look_up(name, link_request(name))
        return decode_link(replies[0]) if replies else None

    def links(self) -> list[LinkInfo]:
        """Every link of the namespace, in ifindex order."""
        return [decode_link(payload)
                for payload in self._dump("list links", RTM_GETLINK, links_request())]

    def peer_links(self) -> list[LinkInfo]:
        """The links of every other namespace this one has an id for (a namespace a link of
        ours was moved to gets one), for telling a link moved away from one deleted."""
        found = []
        for payload in self._dump("list namespace ids", RTM_GETNSID, nsids_request()):
            nsid = decode_nsid(payload)
            if nsid is None:
                continue
            try:
                replies = self._dump(f"list the links of namespace id {nsid}", RTM_GETLINK,
                                     links_request(nsid))
            except NetlinkFailure:
                continue  # that namespace went away since
            found += [decode_link(reply) for reply in replies]
        return found

    def addresses(self, names: dict[int, str] | None = None) -> list[AddressInfo]:
        """Every IPv4 and IPv6 address; NAMES (ifindex to name) saves a link dump when the
        caller has one."""
        names = self._names(names)
        result = []
        for payload in self._dump("list addresses", RTM_GETADDR, addresses_request()):
            decoded = decode_address(payload)
            if decoded is not None:
                index, interface = decoded
                result.append(AddressInfo(names.get(index, str(index)), interface))
        return result

    def routes(self, table: int = RT_TABLE_MAIN,
               names: dict[int, str] | None = None) -> list[RouteInfo]:
        """Unicast routes of TABLE, IPv4 then IPv6."""
        names = self._names(names)
        result = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for payload in self._dump("list routes", RTM_GETROUTE, routes_request(family)):
                route = decode_route(payload, names)
                if route is not None and route.table == table:
                    result.append(route)
        return result

    def neighbours(self, link: str) -> list[NeighbourInfo]:
        """LINK's entries in the kernel's neighbour tables (ARP for IPv4, neighbour
        discovery for IPv6), without the ones that never resolved (no link-layer address)."""
        index = self.index(link)
        result = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for payload in self._dump(f"list the neighbours of {link}", RTM_GETNEIGH,
                                      neighbours_request(family, index)):
                neighbour = decode_neighbour(payload, link, index)
                if neighbour is not None:
                    result.append(neighbour)
        return result

    def exists(self, name: str) -> bool:
        check_name(name)
        try:
            socket.if_nametoindex(name)
        except OSError:
            return False
        return True

    def index(self, name: str) -> int:
        """NAME's ifindex (SIOCGIFINDEX: an ioctl, cheaper than a netlink round trip)."""
        check_name(name)
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
        check_name(name)
        if mode not in MACVLAN_MODES:
            raise HostError(f"unknown macvtap mode {mode!r}")
        body = macvtap_request(name, self.index(lower), mode, mac, up)
        what = f"create macvtap {name} on {lower} (mode {mode})"
        self._request(what, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)
        return self.index(name)

    def create_link(self, name: str, kind: str, *, up: bool = False) -> int:
        """Create a link of a KIND that needs no parameters (ifb); its ifindex."""
        self._request(f"create {kind} device {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                      new_link_request(name, kind, up=up))
        return self.index(name)

    def create_bridge(self, name: str, *, stp: bool, forward_delay: int, mac: str | None = None,
                      mtu: int | None = None, vlan_filtering: bool = False) -> None:
        """Create bridge NAME in one RTM_NEWLINK (FORWARD_DELAY in seconds); fails if NAME
        exists (never adopts a link)."""
        body = bridge_request(name, stp=stp, forward_delay=forward_delay, mac=mac, mtu=mtu,
                              vlan_filtering=vlan_filtering)
        self._request(f"create bridge {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def add_address(self, link: str, interface: IPInterface, *,
                    broadcast: ipaddress.IPv4Address | None = None, flags: int = 0) -> None:
        """Add INTERFACE (address/prefix) to LINK, with BROADCAST (IPv4) and IFA_F_* FLAGS."""
        body = address_request(self.index(link), interface, broadcast=broadcast, flags=flags)
        self._request(f"add address {interface} to {link}", RTM_NEWADDR,
                      NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_address(self, link: str, interface: IPInterface) -> None:
        """Remove INTERFACE from LINK (NetlinkFailure EADDRNOTAVAIL if it is not there)."""
        body = address_request(self.index(link), interface)
        self._request(f"delete address {interface} from {link}", RTM_DELADDR, 0, body)

    def add_route(self, link: str, destination: IPNetwork, gateway: IPAddress | None = None,
                  metric: int | None = None, *, table: int = RT_TABLE_MAIN,
                  protocol: int = RTPROT_BOOT) -> None:
        """Add a unicast route to DESTINATION on LINK (fails if it exists)."""
        body = route_request(self.index(link), destination, gateway, metric, table,
                             adding=True, protocol=protocol)
        via = f" via {gateway}" if gateway is not None else ""
        self._request(f"add route {destination}{via} dev {link}", RTM_NEWROUTE,
                      NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_route(self, link: str, destination: IPNetwork, gateway: IPAddress | None = None,
                     metric: int | None = None, *, table: int = RT_TABLE_MAIN) -> None:
        """Delete the route to DESTINATION on LINK (NetlinkFailure ESRCH if there is none)."""
        body = route_request(self.index(link), destination, gateway, metric, table,
                             adding=False, protocol=0)
        self._request(f"delete route {destination} dev {link}", RTM_DELROUTE, 0, body)

    def set_link(self, name: str, *, mac: str | None = None, master: str | None = None,
                 up: bool | None = None, mtu: int | None = None) -> None:
        """Change NAME's MAC, bridge, MTU and up/down state in one RTM_NEWLINK."""
        body = set_link_request(self.index(name), mac=mac, mtu=mtu, up=up)
        if master is not None:
            body += nla_u32(IFLA_MASTER, self.index(master))
        what = describe_set_link(name, mac=mac, master=master, mtu=mtu, up=up)
        self._request(what, RTM_NEWLINK, 0, body)

    def set_bridge_port_isolated(self, name: str, isolated: bool) -> None:
        """Mark bridge port NAME isolated: it then reaches only the bridge's non-isolated
        ports (libvirt's <port isolated='yes'/>)."""
        body = port_isolated_request(self.index(name), isolated)
        what = f"set bridge port {name} {'isolated' if isolated else 'not isolated'}"
        self._request(what, RTM_SETLINK, 0, body)

    def delete_link(self, name: str) -> bool:
        """Delete NAME; False if it did not exist."""
        body = delete_link_request(name)
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
        try:
            self._request(f"probe link kind {kind}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                          kind_probe_request(probe_name, kind))
        except NetlinkFailure as exc:
            return exc.code != errno.EOPNOTSUPP
        # Created after all (a kind without an MTU check): remove it again.
        self.delete_link(probe_name)
        return True


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
            with contextlib.suppress(MalformedMessage):  # the rest of that datagram
                for kind, _, payload in messages(data):
                    link = decode_link_gone(kind, payload)
                    if link is not None:
                        gone.append(link)


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


def peer_links() -> list[LinkInfo]:
    """Links of other namespaces whose peers are here (veths moved away)."""
    return shared_rtnl().peer_links()


def create_persistent_tap(name: str, *, vnet_hdr: bool = True, owner: int = 0,
                          group: int | None = None, queues: int = 1) -> None:
    """Create the persistent tap NAME, as libvirt makes vnetN for a guest, owned by OWNER
    (root unless given: a tap with no owner at all is attachable by whoever can open
    /dev/net/tun) and, if GROUP is given, by that group too; multiqueue when QUEUES > 1
    (each descriptor later attached with IFF_MULTI_QUEUE is one queue).

    IFF_TUN_EXCL makes the kernel refuse an existing name instead of attaching to it, so
    another guest's tap is never taken over.
    """
    check_name(name)
    flags = IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL | (IFF_VNET_HDR if vnet_hdr else 0)
    if queues > 1:
        flags |= IFF_MULTI_QUEUE
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
            # owner and group before the tap persists: it is never anybody's for a moment
            fcntl.ioctl(fd, TUNSETOWNER, owner)
            if group is not None:
                fcntl.ioctl(fd, TUNSETGROUP, group)
        except OSError as exc:
            raise HostError(f"cannot set the owner of tap {name}: {exc.strerror}") from None
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


__all__ = ["AddressInfo", "LinkInfo", "NetlinkFailure", "RouteInfo", "Rtnl",
           "create_persistent_tap", "peer_links", "shared_rtnl", "tun_available"]
