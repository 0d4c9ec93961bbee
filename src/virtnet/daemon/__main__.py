"""``virtnetd [--state-dir DIR] [--netns NAME] [--socket PATH]``: run the daemon.

Start-up order matters:
1. the systemd notification socket and the activation socket are taken over first (an
   abstract NOTIFY_SOCKET is only found from the namespace systemd runs in);
2. the network namespace is entered while the process has a single thread (setns(2) switches
   only the calling thread; threads started later inherit it);
3. one daemon per state directory: an flock on run/virtnetd.pid;
4. recorded state is reconciled with the kernel and autostart networks are started, before
   the first request is served (with socket activation, clients wait in the listen backlog);
5. READY=1 once the socket serves.
SIGTERM and SIGINT stop the daemon: running requests finish, event streams end, the socket
file goes away (unless systemd owns it); networks and their dnsmasq keep running.

Memory: the daemon lives long, so glibc's malloc is told at start to give every block of
128 KiB or more back to the system when it is freed (:func:`fix_malloc_thresholds`). By
default glibc raises that threshold to the size of each large block freed; later large
buffers then come from its heaps (one per thread that allocates) and leave free holes there
that are not given back. The soak saw the resident size creep that way, by 1.8 MB from the
500th to the 1000th start/stop cycle, while the bytes malloc had handed out stayed the same.

Memory investigations (bench/soak.py): with ``VIRTNETD_MEMORY_PROBE=PREFIX`` in its
environment, each SIGUSR2 (and the stop) makes the daemon write ``PREFIX.N.json``: what its
memory is made of (see :class:`MemoryProbe`). ``VIRTNETD_TRACEMALLOC=PREFIX`` does the same
and also traces every Python allocation from the start, writing ``PREFIX.N.snapshot`` beside
(read it with ``tracemalloc.Snapshot.load``); tracing costs time and memory, so it is for
finding a leak, not for measuring one. Without either variable nothing is set up at all and
SIGUSR2 keeps its default meaning.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any

from virtnet import __version__
from virtnet.daemon.settings import DEFAULT_GROUP, DEFAULT_REQUEST_TIMEOUT_S, SOCKET_MODE, TICK_S
from virtnet.errors import VirtnetError
from virtnet.host import HostProcess
from virtnet.host.ipc import Notifier, Occupied
from virtnet.host.procs import PidfileLocked
from virtnet.paths import StatePaths
from virtnet.store.store import ensure_dir

# aiohttp and the daemon's own modules (virtnet.daemon.server and what it imports: the
# engine, the store, the paths) are imported inside the functions that use them, on purpose:
# main() starts tracemalloc (VIRTNETD_TRACEMALLOC) before they load, so that their
# allocations are traced too, and ``virtnetd --version`` does not pay for them.

log = logging.getLogger("virtnetd")
SHUTDOWN_TIMEOUT_S = 30.0
LISTEN_BACKLOG = 256
LINGERING_S = 0.5
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own initial value, kept instead of raised
MEMORY_PROBE_ENV = "VIRTNETD_MEMORY_PROBE"
TRACEMALLOC_ENV = "VIRTNETD_TRACEMALLOC"
TRACEMALLOC_FRAMES = 16  # deep enough to see through aiohttp and the engine to the caller


class MemoryProbe:
    """Writes what the daemon's memory is made of, on request (SIGUSR2) and at the stop.

    ``PREFIX.N.json`` holds the figures that tell objects kept alive from allocator
    behaviour: Python's allocated blocks and live objects by type (after a full collection),
    the arenas of Python's small-object allocator, the threads, VmRSS and glibc's mallinfo2
    (``uordblks``: bytes malloc handed out and not yet freed; ``arena`` + ``hblkhd``: bytes it
    holds from the system; the difference is free space it keeps). With ``trace``,
    tracemalloc runs from the probe's creation on; the JSON then also holds the bytes it
    traces, and ``PREFIX.N.snapshot`` every live allocation with the place it was made."""

    def __init__(self, prefix: str, trace: bool = False) -> None:
        self.prefix = prefix
        self.trace = trace
        self.count = 0
        if trace:
            tracemalloc.start(TRACEMALLOC_FRAMES)

    @classmethod
    def from_environment(cls) -> MemoryProbe | None:
        traced = os.environ.get(TRACEMALLOC_ENV)
        if traced:
            return cls(traced, trace=True)
        plain = os.environ.get(MEMORY_PROBE_ENV)
        return cls(plain) if plain else None

    def dump(self) -> Path:
        """Write the next ``PREFIX.N.json`` (and snapshot); the JSON appears last, complete."""
        self.count += 1
        base = f"{self.prefix}.{self.count}"
        gc.collect()
        types: dict[str, int] = {}
        for obj in gc.get_objects():
            name = type(obj).__qualname__
            types[name] = types.get(name, 0) + 1
        figures: dict[str, Any] = {
            "n": self.count, "allocated_blocks": sys.getallocatedblocks(),
            "gc_objects": sum(types.values()),
            "objects_by_type": dict(sorted(types.items(), key=lambda kv: -kv[1])[:200]),
            "threads": sorted(t.name for t in threading.enumerate()),
            "vmrss_kb": HostProcess.vmrss_kb(), "mallinfo2": _mallinfo2(), "pymalloc": _pymalloc(),
        }
        if self.trace:
            figures["traced_bytes"], figures["traced_peak_bytes"] = \
                tracemalloc.get_traced_memory()
            tracemalloc.take_snapshot().dump(base + ".snapshot")
        target = Path(base + ".json")
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps(figures, indent=1) + "\n")
        partial.rename(target)
        log.info("memory probe %d written to %s", self.count, target)
        return target


def _pymalloc() -> dict[str, int]:
    """Python's small-object allocator: its arenas (now, at most ever) and the bytes in them
    (``sys._debugmallocstats``, which only writes to the C-level stderr: caught in a file)."""
    figures: dict[str, int] = {}
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(caught.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        for line in caught.read().decode(errors="replace").splitlines():
            name, equals, value = line.partition("=")
            if line.startswith("# ") and equals and value.strip().replace(",", "").isdigit():
                key = name[2:].strip().replace(" ", "_")
                figures[key] = int(value.strip().replace(",", ""))
    return figures


def _mallinfo2() -> dict[str, int] | None:
    """glibc's malloc statistics, summed over all its arenas (None on another libc)."""
    return HostProcess.mallinfo2()


def fix_malloc_thresholds() -> bool:
    """Keep glibc's mmap threshold at 128 KiB (see the module's doc); setting it also stops
    the dynamic raising of the trim threshold. Left alone when the environment already sets
    it (MALLOC_MMAP_THRESHOLD_, GLIBC_TUNABLES) and on another libc. Returns whether set."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ \
            or "glibc.malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    return HostProcess.set_mmap_threshold(MMAP_THRESHOLD_BYTES)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="virtnetd",
        description="virtnet's daemon: hosts the engine, supervises dnsmasq and leases, and "
        "serves the HTTP/JSON API on a unix socket.",
    )
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="keep all state under DIR (default: /etc/virtnet, /run/virtnet, "
                        "/var/lib/virtnet); the socket is then DIR/run/virtnetd.sock")
    parser.add_argument("--netns", default=None, metavar="NAME",
                        help="manage networks inside this existing network namespace")
    parser.add_argument("--socket", type=Path, default=None, metavar="PATH",
                        help="listen on PATH (default: /run/virtnet/virtnetd.sock, or the one "
                        "under --state-dir); ignored under socket activation")
    parser.add_argument("--group", default=DEFAULT_GROUP, metavar="NAME|GID",
                        help="group whose members may change networks and own the socket "
                        "(default: %(default)s, when it exists)")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S,
                        metavar="SECONDS", help="cut off clients that take longer to send a "
                        "request, and idle connections (default: %(default)g)")
    parser.add_argument("--tick", type=float, default=TICK_S, metavar="SECONDS",
                        help="supervision period: how often dnsmasq processes, lease files and "
                        "the state directory are checked (default: %(default)g)")
    parser.add_argument("--no-autostart", action="store_true",
                        help="do not start autostart networks")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version=f"virtnetd {__version__}")
    return parser.parse_args(argv)


def take_pidfile(path: Path) -> int:
    """Hold an flock on PATH for the daemon's life: one daemon per state directory."""
    ensure_dir(path.parent, 0o755)
    try:
        return HostProcess.lock_pidfile(path)
    except PidfileLocked as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise VirtnetError(f"another virtnetd (pid {exc.holder or '?'}) already serves "
                               f"this state directory ({path})") from None
        raise VirtnetError(f"cannot lock {path}: {exc.strerror}") from None


def bind_socket(path: Path, gid: int | None) -> socket.socket:
    """A listening unix socket at PATH, mode 0660, group GID (when there is one)."""
    ensure_dir(path.parent, 0o755)
    try:
        return HostProcess.listen_unix(path, gid, SOCKET_MODE, LISTEN_BACKLOG)
    except Occupied as exc:
        raise VirtnetError(str(exc)) from None


async def serve(args: argparse.Namespace, notifier: object, activated: socket.socket | None,
                probe: MemoryProbe | None = None) -> int:
    # the server and aiohttp: not for --help, --version or a refused start
    from virtnet.daemon.server import ClientErrorFilter, Daemon, DaemonConfig, resolve_group, web

    logging.getLogger("aiohttp.server").addFilter(ClientErrorFilter())

    assert isinstance(notifier, Notifier)
    loop = asyncio.get_running_loop()
    paths = StatePaths.from_option(args.state_dir)
    socket_path = args.socket or paths.socket
    if activated is not None and isinstance(activated.getsockname(), str):
        socket_path = Path(activated.getsockname())  # where clients really reach us
    config = DaemonConfig(paths=paths, state_dir=args.state_dir, socket_path=socket_path,
                          netns=args.netns, group=args.group,
                          request_timeout=args.request_timeout, tick=args.tick)
    pidfile_fd = take_pidfile(paths.run_dir / "virtnetd.pid")
    daemon = Daemon(config, loop)
    # Engine calls never run in the event loop's thread (pyroute2 runs a loop of its own).
    outcome = await daemon.call(daemon.supervisor.reconcile)
    if not args.no_autostart:
        await daemon.call(daemon.supervisor.autostart)
    sock = activated
    owns_socket = sock is None
    if sock is None:
        gid = resolve_group(args.group)
        if gid is None:
            log.info("group %s does not exist: only root may use %s", args.group, socket_path)
        sock = bind_socket(socket_path, gid)
    # Each connection's peer is decided as it is accepted, from the socket (server.Peers).
    sock = daemon.peers.listener(sock)
    runner = web.AppRunner(daemon.app, handle_signals=False, access_log=None,
                           keepalive_timeout=args.request_timeout, handler_cancellation=True,
                           # a body left unread after an error is not waited for long
                           lingering_time=LINGERING_S, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.SockSite(runner, sock, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await site.start()
    daemon.supervisor.start(loop)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if probe is not None:
        loop.add_signal_handler(signal.SIGUSR2, probe.dump)
    daemon.bus.publish("daemon-started", pid=os.getpid(), networks=outcome)
    log.info("serving on %s (pid %d%s)", socket_path, os.getpid(),
             f", network namespace {args.netns}" if args.netns else "")
    notifier.notify(f"READY=1\nSTATUS=serving on {socket_path}\nMAINPID={os.getpid()}")
    await stop.wait()
    log.info("stopping; networks keep running")
    notifier.notify("STOPPING=1")
    daemon.bus.publish("daemon-stopping", pid=os.getpid())
    daemon.bus.close()
    await daemon.supervisor.stop()
    await runner.cleanup()
    daemon.executor.shutdown(wait=True)  # an engine call that started finishes
    if owns_socket:
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
    os.close(pidfile_fd)
    if probe is not None:
        probe.dump()
    return 0


def main(argv: list[str] | None = None) -> int:
    # Before the daemon's modules are imported, so that their allocations are traced too.
    probe = MemoryProbe.from_environment()
    fix_malloc_thresholds()  # before the first large block is freed
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="virtnetd: %(levelname)s: %(message)s")
    notifier = HostProcess.notifier()
    activated = HostProcess.activation_socket()
    try:
        if args.netns is not None:
            HostProcess.enter_netns(args.netns)
        return asyncio.run(serve(args, notifier, activated, probe))
    except VirtnetError as exc:
        print(f"virtnetd: error: {exc}", file=sys.stderr)
        return 1
    finally:
        notifier.close()


if __name__ == "__main__":
    sys.exit(main())
