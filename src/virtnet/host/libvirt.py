"""What a libvirt on this host has defined, read from its files (libvirt itself is not asked:
its daemon may not run, and talking to it would cost a connection per command).

Only reading: the persistent definitions under /etc/libvirt/qemu/networks and the status files
of running networks (transient ones included) under /run/libvirt/network. A file that cannot be
read, is a symlink or is larger than any definition is skipped: these files inform a choice
(a free subnet), they never decide one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

LIBVIRT_NETWORK_DIRS = (Path("/etc/libvirt/qemu/networks"), Path("/run/libvirt/network"))
MAX_FILE_BYTES = 1024 * 1024


def _read_small_file(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
            return None
        return os.read(fd, MAX_FILE_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_network_files(dirs: Iterable[Path] = LIBVIRT_NETWORK_DIRS) -> list[tuple[str, bytes]]:
    """(path, content) of every libvirt network definition and status file in DIRS."""
    found: list[tuple[str, bytes]] = []
    for directory in dirs:
        try:
            names = sorted(entry for entry in os.listdir(directory) if entry.endswith(".xml"))
        except OSError:
            continue  # no libvirt here, or not readable: nothing to avoid
        for name in names:
            data = _read_small_file(directory / name)
            if data is not None:
                found.append((str(directory / name), data))
    return found


def shares_init_netns() -> bool:
    """Whether this process is in the network namespace of the init process, the one a
    packaged libvirtd runs in and makes its bridges in. False when that cannot be told
    (/proc/1 hidden from us): then libvirt's names are not avoided, as inside a --netns."""
    try:
        ours, init = os.stat("/proc/self/ns/net"), os.stat("/proc/1/ns/net")
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (init.st_dev, init.st_ino)
