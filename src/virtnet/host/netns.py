"""Entering an existing network namespace, for the whole process.

Python 3.11 has no ``os.setns``, so setns(2) is called through ctypes. After
:func:`enter_netns` every netlink socket, every /proc/sys/net access and every spawned
process (nft, dnsmasq) acts inside the namespace, with no ``ip netns exec`` spawn.

Only the netns is switched, not the mount namespace: /sys keeps showing the namespace the
process started in, so nothing in virtnet reads /sys (bridge attributes come from netlink).

:func:`run_in_netns` is the one "do this in a forked child and give me its result" of
virtnet: the child may enter another namespace first (the lab's steps), or stay and change
what only a child may (a private mount namespace, :mod:`virtnet.host.sysfs`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pickle
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def unshare_netns() -> None:
    """Move this (single-threaded, forked) process into a new, empty network namespace of
    its own: it holds only a loopback device (down) and vanishes with the last process in
    it, so whatever is created there never reaches the namespace the process came from."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise HostError(f"cannot create a private network namespace: {os.strerror(err)}")


def current_netns_inode() -> int:
    """Inode of this process's network namespace (tells namespaces apart in tests)."""
    return os.stat("/proc/self/ns/net").st_ino


class ChildFailed(HostError):
    """A forked child gave no result: it timed out, died, or failed with an exception that
    cannot travel back (the message carries its traceback then)."""


def _child(netns: str | None, write_fd: int, fn: Callable[..., Any], args: tuple) -> None:
    """The child's side: never returns into the caller's code."""
    import traceback  # here: costs ~5 ms, and only a child that fails needs it

    status = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides and cleans up
        try:
            if netns is not None:
                enter_netns(netns)
            payload: tuple[str, Any] = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
            payload = ("error", (exc, traceback.format_exc()))
        try:
            data = pickle.dumps(payload)
            pickle.loads(data)
        except Exception:  # noqa: BLE001 - what cannot travel goes back as text
            text = payload[1][1] if payload[0] == "error" else traceback.format_exc()
            data = pickle.dumps(("error", (None, text)))
        with os.fdopen(write_fd, "wb") as out:
            out.write(data)
    except BaseException:  # noqa: BLE001
        status = 70
    finally:
        os._exit(status)


def run_in_netns(netns: str | None, fn: Callable[..., Any], *args: Any, timeout: float,
                 what: str = "a child process") -> Any:
    """fn(*args) evaluated in a forked child that entered /run/netns/NETNS (None: the child
    stays in this namespace); an Exception it raises is raised here, anything else (a
    timeout, a death, an exception that cannot be pickled) is a ChildFailed naming WHAT.
    The child is killed when it gives no result in time; it is always reaped."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(netns, write_fd, fn, args)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        with os.fdopen(read_fd, "rb") as inp:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChildFailed(f"{what} did not finish within {timeout:.0f} s")
                ready, _, _ = select.select([inp], [], [], remaining)
                if ready:
                    chunk = os.read(inp.fileno(), 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
    finally:
        with contextlib.suppress(ProcessLookupError):
            if not chunks:
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not chunks:
        raise ChildFailed(f"{what} died without a result")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value
    exc, text = value
    if isinstance(exc, Exception):
        raise exc
    raise ChildFailed(f"{what} failed:\n{text}")


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


__all__ = ["ChildFailed", "current_netns_inode", "enter_netns", "netns_path", "pids_in_netns",
           "run_in_netns", "unshare_netns"]
