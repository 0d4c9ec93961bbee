"""The fast CLI's two effects, with nothing but C modules: a unix stream connection to
virtnetd and the identity of a network namespace.

``virtnet`` forwards a verb to the daemon before it has imported anything of weight (see
virtnet.face.fastcli): the ``socket`` module alone costs more to import than the daemon needs to
answer, so the connection is made with ``_socket``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def connect_stream(path: str) -> Any:
    """A connected unix stream socket (of ``_socket``), or None when no one listens at PATH."""
    try:
        import _socket as sockets
    except ImportError:  # an interpreter without the C module: the public one will do
        import socket as sockets  # type: ignore[no-redef]

    sock = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def netns_identity(name: str | None = None) -> tuple[int, int]:
    """The (device, inode) of the network namespace named NAME (/run/netns/NAME), or of this
    process's when NAME is None: what `ip netns identify` compares. OSError if there is none."""
    st = os.stat(f"/run/netns/{name}" if name is not None else "/proc/self/ns/net")
    return st.st_dev, st.st_ino


__all__ = ["connect_stream", "netns_identity"]
