"""The character device nodes virtnet makes for its macvtap ports.

The kernel names a macvtap's character device ``tapIFINDEX``, but an ifindex is only unique
inside one network namespace while /dev is shared by all: a macvtap of another namespace
with the same ifindex may own /dev/tapN (devtmpfs keeps the first node of a name), so that
node is never used. virtnet makes a node of its own for each port, under /dev/virtnet, named
by the network namespace and the macvtap's name (no two devices alive share both), from the
device numbers the kernel shows in sysfs, read through a sysfs of the macvtap's own namespace
(:mod:`virtnet.host.sysfs`); the node goes with the port. Whoever opens the node checks what
it opened: :func:`open_tap_node` compares the descriptor's device number with sysfs again.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from virtnet.errors import HostError
from virtnet.paths import NODE_DIR
from virtnet.host.netns import current_netns_inode
from virtnet.host.sysfs import read_netns_sysfs

NODE_RETRIES = 3  # the directory removed by another port's removal between our mkdir and mknod


def _check_device_name(name: str) -> None:
    if not name or len(name) >= 16 or "/" in name or name in (".", ".."):
        raise HostError(f"invalid interface name {name!r}")


def tap_node_path(name: str) -> Path:
    """The node virtnet makes for its macvtap NAME in this network namespace."""
    _check_device_name(name)
    return NODE_DIR / f"net{current_netns_inode()}-{name}"


def tap_device_numbers(name: str, ifindex: int) -> tuple[int, int]:
    """The (major, minor) of the character device of macvtap NAME with IFINDEX, as this
    network namespace's sysfs shows them; HostError if there is no such macvtap here."""
    _check_device_name(name)
    text = read_netns_sysfs(f"class/net/{name}/macvtap/tap{int(ifindex)}/dev")
    try:
        major, minor = (text or "").strip().split(":")
        return int(major), int(minor)
    except ValueError:
        raise HostError(f"macvtap {name} (ifindex {ifindex}) has no character device in this "
                        "network namespace") from None


def make_tap_node(name: str, ifindex: int) -> tuple[Path, int]:
    """Make the node of macvtap NAME (IFINDEX): (its path, its device number)."""
    major, minor = tap_device_numbers(name, ifindex)
    rdev = os.makedev(major, minor)
    path = tap_node_path(name)
    for _ in range(NODE_RETRIES):
        try:
            NODE_DIR.mkdir(mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a port-create killed before its record was written
            os.mknod(path, stat.S_IFCHR | 0o600, rdev)
            return path, rdev
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise HostError(f"cannot create {path} for macvtap {name}: {exc.strerror}") from None
    raise HostError(f"cannot create {path} for macvtap {name}: {NODE_DIR} keeps vanishing")


def remove_tap_node(path: str, rdev: int | None) -> None:
    """Remove a node virtnet made, if it is still a character device (of RDEV, when known);
    then its directory, once empty."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISCHR(st.st_mode) or (rdev is not None and st.st_rdev != rdev):
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise HostError(f"cannot remove {path}: {exc.strerror}") from None
    if Path(path).parent == NODE_DIR:
        with contextlib.suppress(OSError):  # not empty: other ports' nodes
            NODE_DIR.rmdir()


def open_tap_node(path: str, name: str, ifindex: int, flags: int) -> int:
    """Open PATH, the node of macvtap NAME (IFINDEX), and check what was opened: a character
    device whose number is the one this namespace's sysfs gives that macvtap once it is
    open (a device number is unique among the devices alive, and the macvtap's never
    changes: read after the open, no other device can have passed for it in between)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except OSError as exc:
        raise HostError(f"cannot open {path} for macvtap {name}: {exc.strerror}") from None
    try:
        expected = os.makedev(*tap_device_numbers(name, ifindex))
    except BaseException:
        os.close(fd)
        raise
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != expected:
        os.close(fd)
        found = (f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
                 if stat.S_ISCHR(st.st_mode) else "not a character device")
        raise HostError(f"{path} is not the character device of macvtap {name} (ifindex "
                        f"{ifindex}, {os.major(expected)}:{os.minor(expected)}): {found}")
    return fd


__all__ = ["NODE_DIR", "make_tap_node", "open_tap_node", "remove_tap_node",
           "tap_device_numbers", "tap_node_path"]
