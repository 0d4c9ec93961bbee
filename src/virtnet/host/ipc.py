"""The daemon's unix sockets and descriptors, both sides, standard library only.

- virtnetd's listening socket (:func:`listen_unix`) and a client's connection to it
  (:func:`connect_unix`); a descriptor handed over with SCM_RIGHTS on one NUL byte
  (:func:`send_fd`, :func:`recv_fds`; docs/api.md, "pass_fd").
- A port's tap opened as QEMU opens it: /dev/net/tun, then TUNSETIFF by name
  (:func:`open_tun`, :func:`attach_tap`; a macvtap's node gets the same ioctl).
- systemd's two protocols, spoken directly (no libsystemd binding needed): socket activation
  (sd_listen_fds(3): systemd passes the listening socket as fd 3 with ``LISTEN_PID`` and
  ``LISTEN_FDS`` in the environment) and readiness (sd_notify(3): datagrams to the unix
  socket ``NOTIFY_SOCKET`` names, a path or "@name" for an abstract one). The notification
  socket is connected when the :class:`Notifier` is made: before the daemon enters another
  network namespace, where an abstract address would not be found.

The Host handle gives these out (``Host.listen_unix`` ...); the thin client imports
:mod:`virtnet.host.fastipc` instead, which needs no Python-level module at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import errno
import os
import socket
import stat
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
SD_LISTEN_FDS_START = 3


class Occupied(OSError):
    """Someone listens at the socket path already."""


# --- the daemon's socket, and a client's connection ----------------------------------------


def listen_unix(path: Path, gid: int | None, mode: int, backlog: int) -> socket.socket:
    """A listening unix socket at PATH with MODE and group GID (when there is one); a file
    left there by a daemon that died is replaced, a live listener is :class:`Occupied`."""
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens there
        else:
            raise Occupied(f"{path}: another daemon is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)  # never reachable with broader permissions, even briefly
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    if gid is not None:
        os.chown(path, 0, gid)
    os.chmod(path, mode)
    sock.listen(backlog)
    return sock


def connect_unix(path: str, timeout: float | None) -> socket.socket:
    """A connected unix stream socket (close-on-exec) with TIMEOUT; OSError as connect(2)
    gives it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def send_fd(sock: socket.socket, fd: int) -> None:
    """Send FD over the connected SOCK (SCM_RIGHTS) on the one NUL byte a stream socket
    needs to carry it. SOCK may be asyncio's wrapper, which offers no sendmsg: a duplicate
    of its descriptor is the same connection (and, like it, non-blocking: one byte into an
    empty buffer never blocks)."""
    duplicate = socket.socket(fileno=os.dup(sock.fileno()))
    try:
        sent = socket.send_fds(duplicate, [b"\0"], [fd])
    finally:
        duplicate.close()
    if sent != 1:
        raise OSError(0, "short write")


def send_fd_on(descriptor: int, fd: int) -> None:
    """Send FD over the stream socket at DESCRIPTOR, one this process inherited (QEMU hands
    its bridge helper one end of a socketpair by number). The descriptor stays open."""
    if not stat.S_ISSOCK(os.fstat(descriptor).st_mode):
        raise OSError(errno.ENOTSOCK, f"descriptor {descriptor} is not a socket")
    sock = socket.socket(fileno=os.dup(descriptor))
    try:
        send_fd(sock, fd)
    finally:
        sock.close()


def recv_fds(sock: socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """Up to SIZE bytes and the descriptors that came with them (owned by the caller)."""
    data, fds, _, _ = socket.recv_fds(sock, size, max_fds)
    return data, fds


# --- a port's tap ---------------------------------------------------------------------------


def open_tun(flags: int) -> int:
    """A descriptor of /dev/net/tun opened with FLAGS (OSError as open(2) gives it)."""
    return os.open(TUN_DEVICE, flags)


def attach_tap(fd: int, name: bytes, flags: int) -> None:
    """TUNSETIFF on FD: attach it to the tap NAME (b"" for a macvtap's own node) with FLAGS."""
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name, flags))


def set_tap_persistent(fd: int, persistent: bool) -> None:
    """TUNSETPERSIST on FD, a descriptor attached to a tap: a tap that is not persistent goes
    away with the last descriptor on it (its holder's exit)."""
    fcntl.ioctl(fd, TUNSETPERSIST, 1 if persistent else 0)


# --- systemd -------------------------------------------------------------------------------


def listen_fds(unset_environment: bool = True) -> list[int]:
    """The descriptors systemd passed to this process (none if they were meant for another)."""
    pid = os.environ.get("LISTEN_PID", "")
    count = os.environ.get("LISTEN_FDS", "")
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))
    for fd in fds:
        os.set_inheritable(fd, False)  # never leak them into dnsmasq or other children
    return fds


def activation_socket() -> socket.socket | None:
    """The listening unix stream socket systemd passed, if any."""
    for fd in listen_fds():
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
            return sock
        sock.detach()
    return None


class Notifier:
    """sd_notify: tells systemd (Type=notify) when the daemon is ready or stopping."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        address = os.environ.pop("NOTIFY_SOCKET", "")
        if not address:
            return
        if address.startswith("@"):
            address = "\0" + address[1:]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            return
        self._sock = sock

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, state: str) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.send(state.encode())
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


__all__ = ["IFF_MULTI_QUEUE", "IFF_NO_PI", "IFF_TAP", "IFF_VNET_HDR", "Notifier", "Occupied", "TUNSETIFF",
           "TUN_DEVICE", "activation_socket", "attach_tap", "connect_unix", "listen_fds",
           "listen_unix", "open_tun", "recv_fds", "send_fd"]
