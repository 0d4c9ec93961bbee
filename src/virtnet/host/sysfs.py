"""sysfs as the network namespace this process is in sees it.

A sysfs instance shows the network devices of the namespace of the process that mounted it,
whichever namespace reads it later: a process that entered a namespace with setns (``virtnet
--netns``, virtnetd) still sees, under /sys, the devices of the namespace /sys was mounted
in, and a device there may have the very name and ifindex of one of ours. So virtnet reads a
device's sysfs entries through a sysfs instance of its own, made in its namespace: a detached
mount (fsopen/fsmount, Linux 5.2), attached nowhere and so visible to nobody, kept for the
process's life (one per namespace; a handful of system calls, no process). Where the new
mount API is missing (an older kernel, a seccomp filter) a forked helper mounts one in a
private mount namespace of its own and reads there.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import threading

from virtnet.errors import HostError
from virtnet.host.netns import ChildFailed, current_netns_inode, run_in_netns

# include/uapi/linux/mount.h; the system call numbers are the same on every architecture
# that has these calls, alpha aside
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
FSOPEN_CLOEXEC = 0x1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
HELPER_TIMEOUT_S = 10.0
READ_LIMIT = 4096
NO_PRIVATE_SYSFS = ("cannot read sysfs in this network namespace (neither the mount API nor a "
                    "private mount namespace is available)")

_lock = threading.Lock()
# (pid, network namespace inode) -> the detached sysfs mount's descriptor, or None when the
# mount API is unavailable (keyed by pid: a forked child makes its own)
_mounts: dict[tuple[int, int], int | None] = {}


def _check_relative(relative: str) -> None:
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise HostError(f"invalid sysfs path {relative!r}")


def _detached_sysfs() -> int | None:
    """A new sysfs of this network namespace, mounted nowhere; None if the kernel (or a
    filter) does not let us."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fs = libc.syscall(ctypes.c_long(SYS_FSOPEN), b"sysfs", ctypes.c_uint(FSOPEN_CLOEXEC))
    if fs < 0:
        return None
    try:
        if libc.syscall(ctypes.c_long(SYS_FSCONFIG), ctypes.c_int(fs),
                        ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0)) < 0:
            return None
        attributes = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
        mount = libc.syscall(ctypes.c_long(SYS_FSMOUNT), ctypes.c_int(fs),
                             ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attributes))
        return int(mount) if mount >= 0 else None
    finally:
        os.close(fs)


def _mount_fd() -> int | None:
    key = (os.getpid(), current_netns_inode())
    with _lock:
        if key not in _mounts:
            _mounts[key] = _detached_sysfs()
        return _mounts[key]


def _read_at(mount: int, relative: str) -> str | None:
    try:
        fd = os.open(relative, os.O_RDONLY | os.O_CLOEXEC, dir_fd=mount)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.read(fd, READ_LIMIT).decode(errors="replace")
    finally:
        os.close(fd)


def _read_in_private_mount(where: str, relative: str) -> str | None:
    """The child's side: a mount namespace of its own, a sysfs of this network namespace
    mounted on WHERE in it, RELATIVE read there (None: no such entry)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(
        None, b"/", None, MS_REC | MS_PRIVATE, None
    ) != 0 or libc.mount(b"sysfs", where.encode(), b"sysfs", 0, None) != 0:
        raise HostError(NO_PRIVATE_SYSFS)
    try:
        with open(os.path.join(where, relative), "rb") as found:
            return found.read(READ_LIMIT).decode(errors="replace")
    except OSError:
        return None


def _read_through_private_mount(relative: str) -> str | None:
    """Read RELATIVE in a forked helper that mounts a sysfs of this network namespace in a
    mount namespace of its own (nothing is visible outside it)."""
    # The mount point is made and removed here: the child's mount lives only in its own
    # mount namespace, which dies with it, so the parent can always remove the directory.
    where = tempfile.mkdtemp(prefix="virtnet-sysfs-")
    try:
        return run_in_netns(None, _read_in_private_mount, where, relative,
                            timeout=HELPER_TIMEOUT_S, what="the sysfs helper")
    except ChildFailed:
        raise HostError(NO_PRIVATE_SYSFS) from None
    finally:
        os.rmdir(where)


def read_netns_sysfs(relative: str, *, private_mount: bool = False) -> str | None:
    """The text of RELATIVE (under a sysfs root, e.g. ``class/net/eth0/ifindex``) as this
    network namespace sees it; None if it does not exist. ``private_mount`` skips the
    detached mount (the fallback, for tests)."""
    _check_relative(relative)
    mount = None if private_mount else _mount_fd()
    if mount is not None:
        try:
            return _read_at(mount, relative)
        except OSError as exc:
            raise HostError(f"cannot read {relative} from sysfs: {exc.strerror}") from None
    return _read_through_private_mount(relative)


__all__ = ["read_netns_sysfs"]
