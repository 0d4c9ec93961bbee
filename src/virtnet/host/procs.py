"""The daemon's own process: its pid file, the processes it watches, glibc's allocator.

- One daemon per state directory: an flock held on its pid file for the daemon's life.
- A child that dies is noticed the moment it does through a pidfd (readable then).
- glibc's malloc: its statistics (mallinfo2) and its mmap threshold (mallopt), through
  ctypes; getsockopt(2) with a buffer larger than Python's socket module allows.
- The DHCP servers of this namespace (for the doctor), and the tools the faces run without a
  shell (Graphviz's dot, the user's editor).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

from virtnet.facts import ProcessInfo

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


# --- other processes ---------------------------------------------------------------------

PROC = Path("/proc")
OWN_NETNS = PROC / "self" / "ns" / "net"


def netns_supported() -> bool:
    """Whether the kernel has network namespaces (CONFIG_NET_NS)."""
    return OWN_NETNS.exists()


def processes_in_netns(programs: Iterable[str]) -> list[ProcessInfo]:
    """The processes named PROGRAMS (their comm) in the network namespace this process is in,
    with a dnsmasq's --conf-file text when it can be read."""
    wanted = set(programs)
    try:
        ours = os.stat(OWN_NETNS).st_ino
    except OSError:
        return []
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm not in wanted or os.stat(entry / "ns" / "net").st_ino != ours:
                continue
            argv = tuple(p.decode(errors="replace")
                         for p in (entry / "cmdline").read_bytes().split(b"\0") if p)
        except OSError:
            continue
        conf = ""
        for arg in argv:
            if arg.startswith("--conf-file="):
                try:
                    conf = Path(arg.split("=", 1)[1]).read_text(errors="replace")[:100_000]
                except OSError:
                    conf = ""
        found.append(ProcessInfo(int(entry.name), comm, argv, conf))
    return found


def run_attached(argv: list[str]) -> int:
    """Run ARGV on this process's terminal (an editor); its exit status."""
    return subprocess.run(argv, check=False).returncode


def run_filter(argv: list[str], data: bytes,
               timeout: float) -> subprocess.CompletedProcess[bytes] | None:
    """Run ARGV with DATA on its stdin, capturing its output as bytes; None when it did not
    finish within TIMEOUT seconds (it is killed)."""
    try:
        return subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def run_with_fds(argv: list[str], fds: Iterable[int], env: dict[str, str]) -> int:
    """Run ARGV on this terminal with FDS inherited (at their numbers) and ENV added to the
    environment; the signals a user sends to stop it are passed on to it, and this waits for
    its end whatever they are. Its exit status; 128 + N when signal N ended it (as a shell
    says)."""
    child = subprocess.Popen(argv, pass_fds=tuple(fds), env={**os.environ, **env})
    previous = {number: signal.signal(number, lambda got, _frame: child.send_signal(got))
                for number in FORWARDED_SIGNALS}
    try:
        status = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - status if status < 0 else status


__all__ = ["PidfileLocked", "getsockopt", "lock_pidfile", "mallinfo2", "netns_supported",
           "pidfd_open", "processes_in_netns", "run_attached", "run_filter", "run_with_fds",
           "set_mmap_threshold", "vmrss_kb"]
