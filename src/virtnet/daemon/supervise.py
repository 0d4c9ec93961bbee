"""Supervision: what the daemon watches while it runs, and what it does when it starts.

- Start: :meth:`Supervisor.reconcile` compares every status record with the kernel. A network
  that still runs is adopted as it is (its dnsmasq was never the daemon's child, so it
  survived the daemon's restart, SIGTERM or SIGKILL); one whose dnsmasq died is repaired; a
  start that was interrupted halfway is undone. Then :meth:`Supervisor.autostart` starts the
  networks marked autostart, once per boot (a marker in the run directory, which is a tmpfs
  emptied at boot, as libvirt does it): a daemon restart never starts a network its user
  stopped.
- dnsmasq: each recorded dnsmasq is watched through a pidfd (readable the moment the process
  exits) and, as a safety net, checked every tick. One that died while its status still names
  it is restarted through the engine (``Engine.start`` repairs an active network); a dnsmasq
  replaced on purpose (net-update, net-destroy) is not, because the decision is taken under
  the state lock against the status record of that moment.
- State changes: :meth:`Supervisor.scan` compares what is on disk (definitions, status records,
  port records) with what it saw last and publishes the differences as events. It runs after
  every request that may change something and every tick, so changes made by other processes
  (``virtnet --direct``) are reported too.
- Leases: each active network's lease file is checked every tick (stat, then a read only when
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
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtnet.daemon.events import EventBus
from virtnet.errors import StorageError, VirtnetError
from virtnet.host import Host
from virtnet.service.ports import PORTS_DIR_SUFFIX

log = logging.getLogger("virtnetd")

TICK_S = 0.2  # supervision period: dnsmasq restarted and leases seen well within 1 s
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # after failed dnsmasq restarts, in turn
AUTOSTART_MARKER = "virtnetd.autostarted"
# dnsmasq rewrites its lease file in place (truncate, then write the leases): a lease missing
# from one read is read again this much later before it counts as released
LEASE_REREAD_S = 0.05
MAC_IN_PORT_XML = re.compile(r"<mac address=['\"]([0-9a-fA-F:]+)['\"]")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # a state directory it may not read now: the tick logs one line
        raise StorageError.of(exc, "read", path) from None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class NetworkView:
    """An active network as the last scan saw it."""

    stamp: tuple[int, int, int] | None
    started_at: float
    dnsmasq_pid: int | None
    bridge: str | None


@dataclass
class PortView:
    device: str | None
    mac: str | None
    ifindex: int | None = None


@dataclass
class LeaseView:
    stamp: tuple[int, int, int] | None
    leases: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    next_expiry: float = 0.0  # the soonest expiry among the leases seen (0: none)


@dataclass
class Snapshot:
    defined: set[str] = field(default_factory=set)
    active: dict[str, NetworkView] = field(default_factory=dict)
    ports: dict[str, dict[str, PortView]] = field(default_factory=dict)


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
        self._snapshot = Snapshot()
        self._scan_lock = threading.Lock()
        self._leases: dict[str, LeaseView] = {}
        self._lease_lock = threading.RLock()  # the tick and request workers both observe
        self._pidfds: dict[str, tuple[int, int]] = {}  # network -> (pid, pidfd)
        self._repairing: set[str] = set()
        self._failures: dict[str, tuple[int, float]] = {}  # network -> (count, retry after)
        self._state_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="virtnetd-sup")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._link_watch: Any = None  # virtnet.host.rtnl.LinkWatch, from reconcile on
        self._ports: Any = None  # a virtnet.service.ports.PortManager, made on first use

    # --- start ------------------------------------------------------------------------------

    def reconcile(self) -> dict[str, str]:
        """Adopt, repair or clean every network with a status record; returns what was done
        per network: adopted, repaired, cleaned, degraded: ..., or failed: ..."""
        from virtnet.service.engine import NotFoundError

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
            from virtnet.store.store import atomic_write

            atomic_write(marker, f"{os.getpid()}\n", mode=0o644)
        self.scan()
        return started

    # --- the periodic loop ---------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._task = loop.create_task(self._run())
        watch = self._open_link_watch()
        if watch is not None:
            loop.add_reader(watch.fileno(), self._links_ready)
            self._links_ready()  # what came between reconcile and now

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for name in list(self._pidfds):
            self._drop_pidfd(name)
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
        self._check_dnsmasq()
        self._check_leases()

    # --- state changes -------------------------------------------------------------------------

    def scan(self, publish: bool = True) -> None:
        """Publish what changed on disk since the last scan."""
        with self._scan_lock:
            old = self._snapshot
            new = Snapshot(defined=set(self.store.defined_names()))
            for name in self.store.status_names():
                stamp = _stamp(self.paths.status(name))
                seen = old.active.get(name)
                if seen is not None and seen.stamp == stamp:
                    new.active[name] = seen
                    continue
                try:
                    status = self.store.read_status(name)
                except VirtnetError:
                    continue
                if status is None or not status.active:
                    continue
                new.active[name] = NetworkView(stamp, status.started_at, status.dnsmasq_pid,
                                               status.bridge)
            for name in new.active:
                new.ports[name] = self._scan_ports(name, old.ports.get(name, {}))
            self._snapshot = new
            for name in new.active.keys() - old.active.keys():
                # What a network starts with (leases kept from its last run) is not news.
                self._observe_leases(name, publish=False)
            if publish:
                self._publish_diff(old, new)

    def _scan_ports(self, network: str, known: dict[str, PortView]) -> dict[str, PortView]:
        directory = self.paths.status_dir / f"{network}{PORTS_DIR_SUFFIX}"
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StorageError.of(exc, "list", directory) from None
        ports: dict[str, PortView] = {}
        for entry in entries:
            if not entry.endswith(".json") or entry.startswith("."):
                continue
            uuid = entry[:-5]
            view = known.get(uuid)
            if view is None:
                view = self._read_port(directory / entry)
                if view is None:
                    continue
            ports[uuid] = view
        return ports

    @staticmethod
    def _read_port(path: Path) -> PortView | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        match = MAC_IN_PORT_XML.search(str(data.get("xml", "")))
        ifindex = data.get("ifindex")
        return PortView(data.get("device"), match.group(1).lower() if match else None,
                        ifindex if isinstance(ifindex, int) else None)

    def _publish_diff(self, old: Snapshot, new: Snapshot) -> None:
        publish = self.bus.publish
        for name in sorted(new.defined - old.defined):
            publish("network-defined", name)
        for name, view in sorted(new.active.items()):
            before = old.active.get(name)
            if before is not None and before.started_at != view.started_at:
                publish("network-stopped", name)
                before = None
            if before is None:
                publish("network-started", name, bridge=view.bridge, dnsmasq_pid=view.dnsmasq_pid)
            elif before.dnsmasq_pid != view.dnsmasq_pid and view.dnsmasq_pid is not None:
                publish("dnsmasq-restarted", name, pid=view.dnsmasq_pid,
                        previous_pid=before.dnsmasq_pid)
        for name in sorted(set(old.ports) | set(new.ports)):
            before_ports = old.ports.get(name, {})
            after_ports = new.ports.get(name, {})
            for uuid in sorted(set(after_ports) - set(before_ports)):
                port = after_ports[uuid]
                publish("port-created", name, uuid=uuid, device=port.device, mac=port.mac)
            for uuid in sorted(set(before_ports) - set(after_ports)):
                port = before_ports[uuid]
                publish("port-deleted", name, uuid=uuid, device=port.device, mac=port.mac)
        for name in sorted(set(old.active) - set(new.active)):
            publish("network-stopped", name)
            with self._lease_lock:
                self._leases.pop(name, None)
        for name in sorted(old.defined - new.defined):
            publish("network-undefined", name)

    def note_port(self, network: str, record: Any, created: bool) -> None:
        """A port this daemon just created or deleted: publish it without a rescan."""
        with self._scan_lock:
            ports = self._snapshot.ports.setdefault(network, {})
            if created and record.uuid not in ports:
                view = PortView(record.device, record.port.mac, record.ifindex)
                ports[record.uuid] = view
                self.bus.publish("port-created", network, uuid=record.uuid, device=view.device,
                                 mac=view.mac)
            elif not created and record.uuid in ports:
                view = ports.pop(record.uuid)
                self.bus.publish("port-deleted", network, uuid=record.uuid, device=view.device,
                                 mac=view.mac)

    def active_networks(self) -> dict[str, NetworkView]:
        with self._scan_lock:
            return dict(self._snapshot.active)

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
            from virtnet.service.ports import PortManager

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
        with self._scan_lock:
            ports = [(network, uuid) for network, views in self._snapshot.ports.items()
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
            with self.store.lock, self._scan_lock:
                try:
                    record = manager.release_gone(network, uuid)
                except VirtnetError as exc:
                    log.error("network %s: port %s lost its device, but: %s", network, uuid,
                              exc)
                    continue
                if record is None:
                    continue
                self._snapshot.ports.get(network, {}).pop(uuid, None)
                self.bus.publish("port-deleted", network, uuid=uuid, device=record.device,
                                 mac=record.port.mac, reason="device-gone")
            log.info("network %s: port %s released: its device %s went away", network, uuid,
                     record.device)
            released.append(uuid)
        return released

    # --- dnsmasq ---------------------------------------------------------------------------

    def _check_dnsmasq(self) -> None:
        active = self.active_networks()
        for name in list(self._pidfds):
            view = active.get(name)
            if view is None or view.dnsmasq_pid != self._pidfds[name][0]:
                self._drop_pidfd(name)
        for name, view in active.items():
            pid = view.dnsmasq_pid
            if pid is None:
                continue
            if self.engine.dnsmasq_alive(name, pid):
                if name not in self._pidfds:
                    self._watch_pidfd(name, pid)
                continue
            self.handle_dead_dnsmasq(name, pid)

    def _watch_pidfd(self, name: str, pid: int) -> None:
        if self._loop is None:
            return
        fd = Host.pidfd_open(pid)
        if fd is None:
            return  # the tick's check remains
        self._pidfds[name] = (pid, fd)
        try:
            self._loop.call_soon_threadsafe(self._loop.add_reader, fd, self._pidfd_ready, name,
                                            pid, fd)
        except RuntimeError:
            self._pidfds.pop(name, None)
            os.close(fd)

    def _pidfd_ready(self, name: str, pid: int, fd: int) -> None:
        """In the event loop: the dnsmasq behind ``fd`` exited."""
        assert self._loop is not None
        self._loop.remove_reader(fd)
        if self._pidfds.get(name, (None, None))[1] == fd:
            del self._pidfds[name]
        os.close(fd)
        if not self._stopping:
            self._loop.run_in_executor(self._executor, self.handle_dead_dnsmasq, name, pid)

    def _drop_pidfd(self, name: str) -> None:
        entry = self._pidfds.pop(name, None)
        if entry is None:
            return
        _, fd = entry
        loop = self._loop

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

    def handle_dead_dnsmasq(self, name: str, pid: int) -> None:
        """Restart the dnsmasq of ``name`` if its status still names the dead ``pid``."""
        from virtnet.service.engine import NotFoundError

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
                self.scan()  # publishes dnsmasq-restarted with the new pid
        finally:
            with self._state_lock:
                self._repairing.discard(name)

    # --- leases ------------------------------------------------------------------------------

    def _lease_rows(self, name: str) -> dict[tuple[str, str, str], dict[str, Any]]:
        rows = self.engine.dhcp_leases(name)
        return {(row.protocol, row.ip, row.mac or row.client_id or ""): row.to_dict()
                for row in rows}

    def _baseline_leases(self) -> None:
        for name in self.active_networks():
            self._observe_leases(name, publish=False)

    def _check_leases(self) -> None:
        for name in self.active_networks():
            self._observe_leases(name, publish=True)

    def _observe_leases(self, name: str, publish: bool) -> None:
        with self._lease_lock:
            self._observe_leases_locked(name, publish and name in self._leases)

    def _observe_leases_locked(self, name: str, publish: bool) -> None:
        from virtnet.store.leases import lease_file

        path = lease_file(self.paths, name)
        stamp = _stamp(path)
        view = self._leases.get(name)
        now = self.clock()
        if view is not None and view.stamp == stamp and not (
                view.next_expiry and view.next_expiry < now):
            return
        previous = view.leases if view is not None else {}
        try:
            current = self._lease_rows(name)
            if any(key not in current and not 0 < row["expiry"] <= now
                   for key, row in previous.items()):
                # gone without expiring: released, or read between dnsmasq's truncate and
                # its write (which renews a lease as "released" then "added")
                time.sleep(LEASE_REREAD_S)
                stamp = _stamp(path)
                current = self._lease_rows(name)
        except VirtnetError:
            return  # the network went away between the scan and now
        expiries = [row["expiry"] for row in current.values() if row["expiry"]]
        self._leases[name] = LeaseView(stamp, current, min(expiries) if expiries else 0.0)
        if not publish:
            return
        for key, row in current.items():
            before = previous.get(key)
            if before is None:
                self.bus.publish("lease-added", name, **_lease_event(row))
            elif before["expiry"] != row["expiry"]:
                self.bus.publish("lease-renewed", name, **_lease_event(row))
        for key, row in previous.items():
            if key not in current:
                gone = "lease-expired" if 0 < row["expiry"] <= now else "lease-released"
                self.bus.publish(gone, name, **_lease_event(row))


def _lease_event(row: dict[str, Any]) -> dict[str, Any]:
    return {"mac": row["mac"], "ip": row["ip"], "protocol": row["protocol"],
            "hostname": row["hostname"], "client_id": row["client_id"], "expiry": row["expiry"]}


__all__ = ["Supervisor", "TICK_S"]
