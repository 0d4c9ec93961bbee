"""The daemon's watch on dnsmasq processes, and their restart when one dies.

Each recorded dnsmasq is watched through a pidfd (readable the moment the process exits)
and, as a safety net, checked every tick. One that died while its status still names it is
restarted through the engine (``Engine.start`` repairs an active network); a dnsmasq
replaced on purpose (net-update, net-destroy) is not, because the decision is taken under
the state lock against the status record of that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from virtnet.daemon.events import EventBus
from virtnet.errors import NotFoundError, VirtnetError
from virtnet.host import Host

log = logging.getLogger("virtnetd")

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # after failed dnsmasq restarts, in turn


class DnsmasqWatch:
    """The pidfd of each network's dnsmasq, and the restarts of those that died (with a
    back-off after failed restarts)."""

    def __init__(self, engine: Any, bus: EventBus, executor: Executor,
                 rescan: Callable[[], None]) -> None:
        self.engine = engine
        self.store = engine.store
        self.bus = bus
        self.executor = executor
        self.rescan = rescan  # after a restart: publishes dnsmasq-restarted
        self.loop: asyncio.AbstractEventLoop | None = None  # set when supervision starts
        self.stopping = False
        self._pidfds: dict[str, tuple[int, int]] = {}  # network -> (pid, pidfd)
        self._repairing: set[str] = set()
        self._failures: dict[str, tuple[int, float]] = {}  # network -> (count, retry after)
        self._state_lock = threading.Lock()

    def drop_all(self) -> None:
        """Stop watching every dnsmasq (the daemon stops)."""
        for name in list(self._pidfds):
            self.drop(name)

    def check(self, active: dict[str, Any]) -> None:
        """Follow the dnsmasq of each of the ACTIVE networks (name -> its view, with
        ``dnsmasq_pid``); restart those that died."""
        for name in list(self._pidfds):
            view = active.get(name)
            if view is None or view.dnsmasq_pid != self._pidfds[name][0]:
                self.drop(name)
        for name, view in active.items():
            pid = view.dnsmasq_pid
            if pid is None:
                continue
            if self.engine.dnsmasq_alive(name, pid):
                if name not in self._pidfds:
                    self._watch_pidfd(name, pid)
                continue
            self.handle_dead(name, pid)

    def _watch_pidfd(self, name: str, pid: int) -> None:
        if self.loop is None:
            return
        fd = Host.pidfd_open(pid)
        if fd is None:
            return  # the tick's check remains
        self._pidfds[name] = (pid, fd)
        try:
            self.loop.call_soon_threadsafe(self.loop.add_reader, fd, self._pidfd_ready, name,
                                            pid, fd)
        except RuntimeError:
            self._pidfds.pop(name, None)
            os.close(fd)

    def _pidfd_ready(self, name: str, pid: int, fd: int) -> None:
        """In the event loop: the dnsmasq behind ``fd`` exited."""
        assert self.loop is not None
        self.loop.remove_reader(fd)
        if self._pidfds.get(name, (None, None))[1] == fd:
            del self._pidfds[name]
        os.close(fd)
        if not self.stopping:
            self.loop.run_in_executor(self.executor, self.handle_dead, name, pid)

    def drop(self, name: str) -> None:
        entry = self._pidfds.pop(name, None)
        if entry is None:
            return
        _, fd = entry
        loop = self.loop

        def drop() -> None:
            with contextlib.suppress(Exception):
                assert loop is not None
                loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(drop)
                return
            except RuntimeError:
                pass
        with contextlib.suppress(OSError):
            os.close(fd)

    def handle_dead(self, name: str, pid: int) -> None:
        """Restart the dnsmasq of ``name`` if its status still names the dead ``pid``."""
        with self._state_lock:
            if name in self._repairing:
                return
            count, retry_after = self._failures.get(name, (0, 0.0))
            if count and time.monotonic() < retry_after:
                return
            self._repairing.add(name)
        try:
            with self.store.lock:
                try:
                    record = self.engine.get(name)
                except NotFoundError:
                    return
                status = record.status
                if not record.active or status is None or status.dnsmasq_pid != pid:
                    return  # stopped or replaced on purpose while we looked
                if self.engine.dnsmasq_alive(name, pid):
                    return
                if count == 0:
                    self.bus.publish("dnsmasq-died", name, pid=pid)
                    log.warning("network %s: dnsmasq (pid %d) died; restarting it", name, pid)
                try:
                    self.engine.start(name)
                except VirtnetError as exc:
                    delay = RESTART_BACKOFF_S[min(count, len(RESTART_BACKOFF_S) - 1)]
                    with self._state_lock:
                        self._failures[name] = (count + 1, time.monotonic() + delay)
                    self.bus.publish("dnsmasq-restart-failed", name, pid=pid, error=str(exc),
                                     retry_in=delay)
                    log.error("network %s: dnsmasq restart failed (retry in %gs): %s",
                              name, delay, exc)
                    return
                with self._state_lock:
                    self._failures.pop(name, None)
                self.rescan()  # publishes dnsmasq-restarted with the new pid
        finally:
            with self._state_lock:
                self._repairing.discard(name)


__all__ = ["DnsmasqWatch", "RESTART_BACKOFF_S"]
