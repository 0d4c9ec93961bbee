"""Supervision: what the daemon watches while it runs, and what it does when it starts.

- Start: :meth:`Supervisor.reconcile` compares every status record with the kernel. A network
  that still runs is adopted as it is (its dnsmasq was never the daemon's child, so it
  survived the daemon's restart, SIGTERM or SIGKILL); one whose dnsmasq died is repaired; a
  start that was interrupted halfway is undone. Then :meth:`Supervisor.autostart` starts the
  networks marked autostart, once per boot (a marker in the run directory, which is a tmpfs
  emptied at boot, as libvirt does it): a daemon restart never starts a network its user
  stopped.
- dnsmasq (daemon/dnsmasqwatch.py): each recorded dnsmasq is watched through a pidfd (readable the moment the process
  exits) and, as a safety net, checked every tick. One that died while its status still names
  it is restarted through the engine (``Engine.start`` repairs an active network); a dnsmasq
  replaced on purpose (net-update, net-destroy) is not, because the decision is taken under
  the state lock against the status record of that moment.
- State changes (daemon/statescan.py): :meth:`Supervisor.scan` compares what is on disk (definitions, status records,
  port records) with what it saw last and publishes the differences as events. It runs after
  every request that may change something and every tick, so changes made by other processes
  (``virtnet --direct``) are reported too.
- Leases (daemon/leasewatch.py): each active network's lease file is checked every tick (stat, then a read only when
  it changed); added, renewed, released and expired leases become events.
- Port devices: the kernel's link notifications (netlink) say when a link leaves the
  namespace. A port whose device was deleted without a port-delete (a tap handed over by
  descriptor whose holder made it non-persistent and exited, a device someone deleted, a
  macvtap whose uplink went) is released: what outlives the device is undone, its record
  removed, ``port-deleted`` published with ``reason: device-gone``. A device moved into
  another namespace is still the port's. At start, and when the kernel dropped
  notifications, every port's device is looked for instead (here, then in the namespaces
  devices were moved to).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from virtnet.daemon.dnsmasqwatch import RESTART_BACKOFF_S, DnsmasqWatch
from virtnet.daemon.events import EventBus
from virtnet.daemon.leasewatch import LEASE_REREAD_S, LeaseWatch
from virtnet.daemon.settings import TICK_S
from virtnet.daemon.statescan import NetworkView, StateScan
from virtnet.errors import NotFoundError, VirtnetError
from virtnet.host import Host
from virtnet.service.ports import PortManager
from virtnet.store.store import atomic_write

log = logging.getLogger("virtnetd")

AUTOSTART_MARKER = "virtnetd.autostarted"


class Supervisor:
    """Watches dnsmasq processes, lease files and the state directory (see the module doc)."""

    def __init__(self, engine: Any, bus: EventBus, *, tick: float = TICK_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.paths = engine.paths
        self.store = engine.store
        self.bus = bus
        self.tick_s = tick
        self.clock = clock
        self.adopted: set[str] = set()  # running when the daemon started, taken over as is
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="virtnetd-sup")
        self.leases = LeaseWatch(engine, bus, clock)
        self.state = StateScan(engine, bus, self.leases)
        self.dnsmasq = DnsmasqWatch(engine, bus, self._executor, self.scan)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._link_watch: Any = None  # virtnet.host.rtnl.LinkWatch, from reconcile on
        self._ports: Any = None  # a virtnet.service.ports.PortManager, made on first use

    # --- start ------------------------------------------------------------------------------

    def reconcile(self) -> dict[str, str]:
        """Adopt, repair or clean every network with a status record; returns what was done
        per network: adopted, repaired, cleaned, degraded: ..., or failed: ..."""
        outcome: dict[str, str] = {}
        with self.store.lock:
            for name in self.store.status_names():
                try:
                    record = self.engine.get(name)
                except NotFoundError:
                    continue
                except VirtnetError as exc:
                    outcome[name] = f"failed: {exc}"
                    log.error("network %s: unreadable state: %s", name, exc)
                    continue
                try:
                    outcome[name] = self._reconcile_one(record)
                except VirtnetError as exc:
                    outcome[name] = f"failed: {exc}"
                    log.error("network %s: %s", name, exc)
        for name, what in outcome.items():
            log.info("network %s: %s", name, what)
        self._open_link_watch()  # before the ports are looked at: nothing is missed between
        self.scan(publish=False)  # what runs now is the baseline, not news
        self._baseline_leases()
        self.release_gone_ports()
        return outcome

    def _reconcile_one(self, record: Any) -> str:
        name = record.name
        if record.interrupted:
            self.engine.destroy(name)  # undoes exactly the steps the interrupted start applied
            self.bus.publish("network-cleaned", name)
            return "cleaned"
        if not record.active:
            return "inactive"
        health = self.engine.health(record)
        self.adopted.add(name)
        if not health.degraded:
            self.bus.publish("network-adopted", name, bridge=record.bridge,
                             dnsmasq_pid=record.status.dnsmasq_pid)
            return "adopted"
        if health.dnsmasq_running is False and health.bridge_present is not False:
            self.engine.start(name)  # an active network's start restarts its dnsmasq
            self.bus.publish("network-adopted", name, bridge=record.bridge,
                             dnsmasq_pid=self.store.read_status(name).dnsmasq_pid,
                             repaired=["dnsmasq restarted"])
            return "repaired"
        self.bus.publish("network-degraded", name, problems=health.problems)
        return "degraded: " + "; ".join(health.problems)

    def autostart(self) -> list[str]:
        """Start the autostart networks, once per boot; returns those started."""
        marker = self.paths.run_dir / AUTOSTART_MARKER
        if marker.exists():
            return []
        started = []
        with self.store.lock:
            for name in self.store.autostart_names():
                try:
                    record = self.engine.get(name)
                    if record.active:
                        continue
                    self.engine.start(name)
                except VirtnetError as exc:
                    log.error("autostart of network %s failed: %s", name, exc)
                    continue
                started.append(name)
                log.info("network %s: autostarted", name)
            atomic_write(marker, f"{os.getpid()}\n", mode=0o644)
        self.scan()
        return started

    # --- the periodic loop ---------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.dnsmasq.loop = loop
        self._task = loop.create_task(self._run())
        watch = self._open_link_watch()
        if watch is not None:
            loop.add_reader(watch.fileno(), self._links_ready)
            self._links_ready()  # what came between reconcile and now

    async def stop(self) -> None:
        self._stopping = True
        self.dnsmasq.stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.dnsmasq.drop_all()
        if self._link_watch is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._link_watch.fileno())
            self._link_watch.close()
            self._link_watch = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        assert self._loop is not None
        while not self._stopping:
            try:
                await self._loop.run_in_executor(self._executor, self.tick)
            except asyncio.CancelledError:
                raise
            except VirtnetError as exc:  # a state directory it cannot read now: one line
                log.error("supervision tick failed: %s", exc)
            except Exception:  # noqa: BLE001 - supervision must go on whatever one tick hit
                log.exception("supervision tick failed")
            await asyncio.sleep(self.tick_s)

    def tick(self) -> None:
        self.scan()
        self.dnsmasq.check(self.active_networks())
        self._check_leases()

    # --- state changes (daemon/statescan.py) ---------------------------------------------

    def scan(self, publish: bool = True) -> None:
        """Publish what changed on disk since the last scan."""
        self.state.scan(publish)

    def note_port(self, network: str, record: Any, created: bool) -> None:
        """A port this daemon just created or deleted: publish it without a rescan."""
        self.state.note_port(network, record, created)

    def active_networks(self) -> dict[str, NetworkView]:
        return self.state.active_networks()

    # --- port devices ------------------------------------------------------------------------

    def _open_link_watch(self) -> Any:
        if self._link_watch is None:
            try:
                self._link_watch = Host.watch_links()
            except VirtnetError as exc:
                log.error("ports whose device goes away will not be released: %s", exc)
        return self._link_watch

    def _port_manager(self) -> Any:
        if self._ports is None:
            self._ports = PortManager(self.engine)
        return self._ports

    def _links_ready(self) -> None:
        """In the event loop: links left the namespace; release the ports they were."""
        assert self._loop is not None and self._link_watch is not None
        try:
            gone, lost = self._link_watch.read()
        except VirtnetError as exc:
            log.error("link notifications: %s", exc)
            return
        deleted = {(link.index, link.name) for link in gone if not link.moved}
        if not deleted and not lost:
            return
        with self.state.lock:
            ports = [(network, uuid) for network, views in self.state.snapshot.ports.items()
                     for uuid, view in views.items() if (view.ifindex, view.device) in deleted]
        if (ports or lost) and not self._stopping:
            self._loop.run_in_executor(self._executor, self._release_logged,
                                       None if lost else ports)

    def _release_logged(self, ports: list[tuple[str, str]] | None) -> None:
        try:
            self.release_gone_ports(ports)
        except Exception:  # noqa: BLE001 - supervision must go on whatever one release hit
            log.exception("releasing ports whose device went away failed")

    def release_gone_ports(self, ports: list[tuple[str, str]] | None = None) -> list[str]:
        """Release PORTS (network, uuid) whose device went away; None: look at every port of
        every active network (at start, and after lost notifications), a device moved into
        another namespace being still the port's. Returns the uuids released."""
        manager = self._port_manager()
        if ports is None:
            ports = []
            candidates = []
            for network in self.active_networks():
                try:
                    candidates += manager.gone_ports(network)
                except VirtnetError:
                    continue  # stopped meanwhile
            if candidates:
                try:
                    moved = {link.mac for link in Host.peer_links()}
                except VirtnetError as exc:
                    log.error("cannot look for port devices in other namespaces: %s", exc)
                    return []
                ports = [(record.network, record.uuid) for record in candidates
                         if record.device_mac not in moved]
        released = []
        for network, uuid in ports:
            # the state lock first, as everywhere: the scan then cannot report the port
            # gone before it is published with its reason
            with self.store.lock, self.state.lock:
                try:
                    record = manager.release_gone(network, uuid)
                except VirtnetError as exc:
                    log.error("network %s: port %s lost its device, but: %s", network, uuid,
                              exc)
                    continue
                if record is None:
                    continue
                self.state.snapshot.ports.get(network, {}).pop(uuid, None)
                self.bus.publish("port-deleted", network, uuid=uuid, device=record.device,
                                 mac=record.port.mac, reason="device-gone")
            log.info("network %s: port %s released: its device %s went away", network, uuid,
                     record.device)
            released.append(uuid)
        return released

    # --- dnsmasq and leases (daemon/dnsmasqwatch.py, daemon/leasewatch.py) -------------------

    def _baseline_leases(self) -> None:
        for name in self.active_networks():
            self._observe_leases(name, publish=False)

    def _check_leases(self) -> None:
        for name in self.active_networks():
            self._observe_leases(name, publish=True)

    def _observe_leases(self, name: str, publish: bool) -> None:
        self.leases.observe(name, publish)


__all__ = ["LEASE_REREAD_S", "RESTART_BACKOFF_S", "Supervisor"]
