"""The daemon's watch on lease files: added, renewed, released and expired leases as events.

Each active network's lease file is checked every tick (stat, then a read only when it
changed, or when a lease it holds has expired meanwhile).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtnet.daemon.events import EventBus
from virtnet.errors import StorageError, VirtnetError
from virtnet.store.leases import lease_file

# dnsmasq rewrites its lease file in place (truncate, then write the leases): a lease missing
# from one read is read again this much later before it counts as released
LEASE_REREAD_S = 0.05


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a file's versions apart cheaply (inode, mtime, size); None: no such file."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # a state directory it may not read now: the tick logs one line
        raise StorageError.of(exc, "read", path) from None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class LeaseView:
    stamp: tuple[int, int, int] | None
    leases: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    next_expiry: float = 0.0  # the soonest expiry among the leases seen (0: none)


class LeaseWatch:
    """The leases of each network as last read, and the events of what changed since."""

    def __init__(self, engine: Any, bus: EventBus, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.paths = engine.paths
        self.bus = bus
        self.clock = clock
        self._leases: dict[str, LeaseView] = {}
        self._lock = threading.RLock()  # the tick and request workers both observe

    def observe(self, name: str, publish: bool) -> None:
        """Read the leases of ``name`` if its file changed; publish the differences when
        PUBLISH and the network's leases were seen before (its first read is no news)."""
        with self._lock:
            self._observe_locked(name, publish and name in self._leases)

    def forget(self, name: str) -> None:
        """A network that stopped: its next start's leases are a baseline again."""
        with self._lock:
            self._leases.pop(name, None)

    def _rows(self, name: str) -> dict[tuple[str, str, str], dict[str, Any]]:
        rows = self.engine.dhcp_leases(name)
        return {(row.protocol, row.ip, row.mac or row.client_id or ""): row.to_dict()
                for row in rows}

    def _observe_locked(self, name: str, publish: bool) -> None:
        path = lease_file(self.paths, name)
        stamp = file_stamp(path)
        view = self._leases.get(name)
        now = self.clock()
        if view is not None and view.stamp == stamp and not (
                view.next_expiry and view.next_expiry < now):
            return
        previous = view.leases if view is not None else {}
        try:
            current = self._rows(name)
            if any(key not in current and not 0 < row["expiry"] <= now
                   for key, row in previous.items()):
                # gone without expiring: released, or read between dnsmasq's truncate and
                # its write (which renews a lease as "released" then "added")
                time.sleep(LEASE_REREAD_S)
                stamp = file_stamp(path)
                current = self._rows(name)
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


__all__ = ["LEASE_REREAD_S", "LeaseView", "LeaseWatch", "file_stamp"]
