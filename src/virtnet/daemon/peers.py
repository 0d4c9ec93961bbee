"""Who is on the other end of a daemon connection, decided once, when it is accepted.

The uid and gid (SO_PEERCRED) and the supplementary groups (SO_PEERGROUPS) the kernel
recorded when the client connected are read from the socket alone, never looked up by the
peer's pid (see virtnet.daemon.server's module doc for why).
"""

from __future__ import annotations

import errno
import grp
import socket
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from virtnet.host import Host

SO_PEERCRED_FORMAT = "3i"  # struct ucred: pid, uid, gid
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13 (asm-generic/socket.h)
GID_FORMAT = "I"  # gid_t
NGROUPS_MAX = 65536  # the kernel's limit of supplementary groups
PEERGROUPS_FIRST_TRY = 256  # groups socket.getsockopt has room for (ERANGE: libc's)


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as the kernel recorded it at connect(2), and
    whether they may change things. ``pid`` is informative only: it may belong to another
    process by now."""

    pid: int
    uid: int
    gid: int
    privileged: bool
    groups: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"uid {self.uid}, gid {self.gid}, pid {self.pid}"


UNKNOWN_PEER = Peer(0, -1, -1, False)  # a connection whose credentials cannot be read


def socket_groups(sock: socket.socket) -> tuple[int, ...]:
    """The supplementary groups the peer of a unix socket had when it connected
    (SO_PEERGROUPS); () where the kernel cannot tell (older than 4.13)."""
    item = struct.calcsize(GID_FORMAT)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, PEERGROUPS_FIRST_TRY * item)
    except OSError as exc:
        if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL, errno.EOPNOTSUPP):
            return ()
        if exc.errno != errno.ERANGE:
            raise
        # more groups than socket.getsockopt can take a buffer for (1024 bytes)
        raw = Host.getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_PEERGROUPS,
                              NGROUPS_MAX * item)
    count = len(raw) // item
    return struct.unpack(f"{count}{GID_FORMAT}", raw[:count * item])


def peer_of_socket(sock: socket.socket, admin_gid: int | None) -> Peer:
    """The peer of a connected unix socket, from the socket alone: SO_PEERCRED's uid and gid
    and SO_PEERGROUPS' groups are the client's credentials at connect(2), which no later
    change of process (exec, fd passing, a pid reused) alters."""
    if sock.family != socket.AF_UNIX:
        return UNKNOWN_PEER
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                              struct.calcsize(SO_PEERCRED_FORMAT))
        pid, uid, gid = struct.unpack(SO_PEERCRED_FORMAT, raw)
        groups = socket_groups(sock)
    except OSError:
        return UNKNOWN_PEER
    privileged = uid == 0 or (admin_gid is not None
                              and (gid == admin_gid or admin_gid in groups))
    return Peer(pid, uid, gid, privileged, groups)


class PeerListener(socket.socket):
    """The daemon's listening socket: every connection it accepts is handed to ``on_accept``
    (which decides its peer) before anything is read from it."""

    def __init__(self, listening: socket.socket,
                 on_accept: Callable[[socket.socket], None]) -> None:
        super().__init__(listening.family, listening.type, listening.proto,
                         fileno=listening.detach())
        self.on_accept = on_accept

    def accept(self) -> tuple[socket.socket, Any]:
        conn, address = super().accept()
        self.on_accept(conn)
        return conn, address


class Peers:
    """The peer of each open connection, decided at accept and looked up by its socket."""

    def __init__(self, admin_gid: int | None) -> None:
        self.admin_gid = admin_gid
        # fd -> (the accepted socket, its peer); an entry whose socket is gone or holds
        # another descriptor by now is stale (a newer connection on that fd replaces it)
        self._by_fd: dict[int, tuple[weakref.ref[socket.socket], Peer]] = {}

    def accepted(self, conn: socket.socket) -> None:
        self._by_fd[conn.fileno()] = (weakref.ref(conn), peer_of_socket(conn, self.admin_gid))

    def listener(self, sock: socket.socket) -> PeerListener:
        return PeerListener(sock, self.accepted)

    def of(self, transport: Any) -> Peer:
        """The peer of a request's connection; unknown (unprivileged) if it was not accepted
        through :meth:`listener`."""
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return UNKNOWN_PEER
        fd = sock.fileno()
        entry = self._by_fd.get(fd)
        if entry is None:
            return UNKNOWN_PEER
        conn = entry[0]()
        if conn is None or conn.fileno() != fd:
            return UNKNOWN_PEER
        return entry[1]


def resolve_group(name: str | None) -> int | None:
    """The gid of ``name`` (a group name or a number), None if there is no such group."""
    if not name:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


__all__ = ["Peer", "PeerListener", "Peers", "UNKNOWN_PEER", "peer_of_socket", "resolve_group",
           "socket_groups"]
