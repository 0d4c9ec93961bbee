"""The daemon's view of the state directory, and the events of what changed in it.

:meth:`StateScan.scan` compares what is on disk (definitions, status records, port records)
with what it saw last and publishes the differences as events. The supervisor runs it after
every request that may change something and every tick, so changes made by other processes
(``virtnet --direct``) are reported too.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtnet.daemon.events import EventBus
from virtnet.daemon.leasewatch import LeaseWatch, file_stamp
from virtnet.errors import StorageError, VirtnetError
from virtnet.store.ports import PORTS_DIR_SUFFIX

MAC_IN_PORT_XML = re.compile(r"<mac address=['\"]([0-9a-fA-F:]+)['\"]")


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
class Snapshot:
    defined: set[str] = field(default_factory=set)
    active: dict[str, NetworkView] = field(default_factory=dict)
    ports: dict[str, dict[str, PortView]] = field(default_factory=dict)


class StateScan:
    """The last snapshot of the state directory, under its lock; each scan publishes the
    differences from the one before."""

    def __init__(self, engine: Any, bus: EventBus, leases: LeaseWatch) -> None:
        self.paths = engine.paths
        self.store = engine.store
        self.bus = bus
        self.leases = leases  # a network that starts is read for its leases' baseline
        self.snapshot = Snapshot()
        self.lock = threading.Lock()

    def scan(self, publish: bool = True) -> None:
        """Publish what changed on disk since the last scan."""
        with self.lock:
            old = self.snapshot
            new = Snapshot(defined=set(self.store.defined_names()))
            for name in self.store.status_names():
                stamp = file_stamp(self.paths.status(name))
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
            self.snapshot = new
            for name in new.active.keys() - old.active.keys():
                # What a network starts with (leases kept from its last run) is not news.
                self.leases.observe(name, publish=False)
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
            self.leases.forget(name)
        for name in sorted(old.defined - new.defined):
            publish("network-undefined", name)

    def note_port(self, network: str, record: Any, created: bool) -> None:
        """A port this daemon just created or deleted: publish it without a rescan."""
        with self.lock:
            ports = self.snapshot.ports.setdefault(network, {})
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
        with self.lock:
            return dict(self.snapshot.active)


__all__ = ["NetworkView", "PortView", "Snapshot", "StateScan"]
