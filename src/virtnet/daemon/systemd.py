"""systemd's two protocols, spoken directly (no libsystemd binding needed).

- Socket activation (sd_listen_fds(3)): systemd opens the listening socket and passes it as
  fd 3 with ``LISTEN_PID`` (our pid) and ``LISTEN_FDS`` (how many) in the environment.
- Readiness (sd_notify(3)): one datagram "READY=1" to the unix socket named by
  ``NOTIFY_SOCKET`` (a path, or "@name" for an abstract one).

The notification socket is opened and connected when :class:`Notifier` is made: before the
daemon enters another network namespace, where an abstract address would not be found.
"""

from __future__ import annotations

import contextlib
import os
import socket

SD_LISTEN_FDS_START = 3


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


__all__ = ["Notifier", "activation_socket", "listen_fds"]
