"""Entering an existing network namespace, for the whole process.

Python 3.11 has no ``os.setns``, so setns(2) is called through ctypes. After
:func:`enter_netns` every netlink socket, every /proc/sys/net access and every spawned
process (nft, dnsmasq) acts inside the namespace, with no ``ip netns exec`` spawn.

Only the netns is switched, not the mount namespace: /sys keeps showing the namespace the
process started in, so nothing in virtnet reads /sys (bridge attributes come from netlink).
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from virtnet.errors import HostError

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000


def netns_path(name: str) -> Path:
    """The bind-mount path ``ip netns`` uses for a named namespace."""
    if not name or "/" in name or name in (".", ".."):
        raise HostError(f"invalid network namespace name {name!r}")
    return NETNS_RUN_DIR / name


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def enter_netns(name: str) -> None:
    """Switch the whole (single-threaded) process into /run/netns/NAME.

    Refuses with a HostError if the namespace does not exist: a typo must never create one.
    """
    path = netns_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HostError(f"network namespace {name!r} does not exist ({path})") from None
    except OSError as exc:
        raise HostError(f"cannot open network namespace {name!r}: {exc.strerror}") from None
    try:
        _setns(fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise HostError(f"{path} is not a network namespace") from None
        if exc.errno == errno.EPERM:
            raise HostError(f"entering network namespace {name!r} needs root") from None
        raise HostError(f"cannot enter network namespace {name!r}: {exc.strerror}") from None
    finally:
        os.close(fd)


def pids_in_netns(name: str) -> list[int]:
    """Pids of the processes whose network namespace is /run/netns/NAME (none if it is gone)."""
    try:
        target = os.stat(f"/run/netns/{name}").st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == target:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
