"""Where a network's port records live, and the counts read from them without the port model.

Listing or starting a network needs no more of its ports than how many there are (and, for a
pool, how many per interface), read from the records' JSON; virtnet.store.ports, which parses
them into ports, imports from here.
"""

from __future__ import annotations

import json
from pathlib import Path

from virtnet.ids import is_canonical_uuid, network_file
from virtnet.spec.model import Network
from virtnet.store.store import list_dir

PORTS_DIR_SUFFIX = ".ports"
RECORD_SUFFIX = ".json"


def ports_dir(status_dir: Path, network: str) -> Path:
    return network_file(status_dir, network, PORTS_DIR_SUFFIX)


def record_uuid(entry: str, suffix: str) -> str | None:
    """The port uuid a ports directory's entry ENTRY (UUID + SUFFIX) is named after; None
    for any other file (temp files, a name that is no canonical uuid: never ours)."""
    if not entry.endswith(suffix) or entry.startswith("."):
        return None
    stem = entry[: -len(suffix)]
    return stem if is_canonical_uuid(stem) else None


def connection_counts(status_dir: Path, network: str, *,
                      per_device: bool = True) -> tuple[int, dict[str, int]]:
    """(connections, connections per pool interface or VF) of NETWORK, from its records
    (their JSON only: cheap enough for every net-list). Without ``per_device`` only the
    records are counted, none is read: a network without a pool has a thousand ports as
    cheaply as one."""
    directory = ports_dir(status_dir, network)
    entries = list_dir(directory)
    if not per_device:
        return sum(1 for e in entries if record_uuid(e, RECORD_SUFFIX)), {}
    total = 0
    devices: dict[str, int] = {}
    for entry in entries:
        if not record_uuid(entry, RECORD_SUFFIX):
            continue
        try:
            data = json.loads((directory / entry).read_text())
        except (OSError, ValueError):
            continue
        total += 1
        key = data.get("uplink") or data.get("pci_address")
        if key:
            devices[key] = devices.get(key, 0) + 1
    return total, devices


def apply_connection_counts(status_dir: Path, net: Network) -> int:
    """Set NET's live connection counts (network and pool interfaces) from its port records;
    returns the network's count."""
    pool = net.forward is not None and bool(net.forward.interfaces)
    total, per_device = connection_counts(status_dir, net.name, per_device=pool)
    net.connections = total
    if net.forward is not None:
        for interface in net.forward.interfaces:
            interface.connections = per_device.get(interface.dev, 0)
        for pf in net.forward.pfs:
            pf.connections = total
    return total


__all__ = ["PORTS_DIR_SUFFIX", "RECORD_SUFFIX", "apply_connection_counts", "connection_counts",
           "ports_dir", "record_uuid"]
