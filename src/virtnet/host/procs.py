"""The daemon's own process: its pid file, the processes it watches, glibc's allocator.

- One daemon per state directory: an flock held on its pid file for the daemon's life.
- A child that dies is noticed the moment it does through a pidfd (readable then).
- glibc's malloc: its statistics (mallinfo2) and its mmap threshold (mallopt), through
  ctypes; getsockopt(2) with a buffer larger than Python's socket module allows.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from pathlib import Path

M_MMAP_THRESHOLD = -3  # mallopt(3) parameter number (glibc's malloc.h)
MALLINFO2_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                    "uordblks", "fordblks", "keepcost")


class PidfileLocked(OSError):
    """Another process holds the pid file's lock; ``holder`` is the pid written in it."""

    def __init__(self, number: int, strerror: str, holder: str) -> None:
        super().__init__(number, strerror)
        self.holder = holder


def lock_pidfile(path: Path) -> int:
    """Lock PATH (made if need be) and write this process's pid in it; the descriptor holds
    the lock until it is closed. :class:`PidfileLocked` when that fails."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise PidfileLocked(exc.errno, exc.strerror, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def pidfd_open(pid: int) -> int | None:
    """A pidfd of PID (readable once it exits), None when the kernel or Python has none or
    the process is gone."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def vmrss_kb() -> int | None:
    """This process's resident set size in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS]


def mallinfo2() -> dict[str, int] | None:
    """glibc's malloc statistics, summed over all its arenas (None on another libc)."""
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _Mallinfo2
    info = function()
    return {name: int(getattr(info, name)) for name in MALLINFO2_FIELDS}


def set_mmap_threshold(size: int) -> bool:
    """glibc's mallopt(M_MMAP_THRESHOLD, SIZE); False on another libc or when refused."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc's mallopt, not another libc's
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, size))


def getsockopt(fd: int, level: int, option: int, size: int) -> bytes:
    """getsockopt(2) with a buffer of SIZE bytes (libc's: Python's stops at 1024)."""
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    if libc.getsockopt(fd, level, option, buffer, ctypes.byref(length)) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return buffer.raw[:length.value]


__all__ = ["PidfileLocked", "getsockopt", "lock_pidfile", "mallinfo2", "pidfd_open",
           "set_mmap_threshold", "vmrss_kb"]
